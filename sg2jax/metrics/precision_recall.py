"""Improved precision and recall (Kynkäänniemi et al. 2019), k = 3 (REFERENCE.md §5.5).

On the 4096-d VGG16 fc2 features of real and generated images:
1. For a reference set, the radius of sample j is its distance to its k-th nearest neighbour in
   the set **excluding itself** (the (k+1)-th smallest distance counting the zero to itself).
2. A sample is covered by the reference set if it lies within the radius of at least one
   reference sample (`distance <= radius`).
3. Precision = fraction of generated samples covered by the reals; recall = fraction of real
   samples covered by the generated ones.

`pr50k3` (TF, the paper): 50,000 generated against the first 50,000 dataset images (x-flipped at
random when the run trained with mirroring); `pr50k3_full` (ADA): reals capped at 200,000, no
flips. Results `<metric>_precision` and `<metric>_recall`.

The distances are computed on the devices in blocks (rows split over the mesh's 'data' axis,
columns replicated; 10,000 x 10,000 as the official code), as squared distances
`|a|^2 - 2 a.b + |b|^2` (TF also compares squared distances). Differs from official: float32
instead of float16, which can only change comparisons within float16 rounding of a tie.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sg2jax.metrics.context import put
from sg2jax.sharding import batch_sharded, replicated

K = 3
ROW_BATCH = 10_000
COL_BATCH = 10_000
MAX_REAL_FULL = 200_000


def squared_distances(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """`[R, d]`, `[C, d]` -> `[R, C]` squared Euclidean distances (clamped at 0), float32."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)  # [R, C]
  d = jnp.sum(a * a, axis=1)[:, None] - 2 * ab + jnp.sum(b * b, axis=1)[None, :]
  return jnp.maximum(d, 0.0)


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """`x [n, ...]` with zero rows appended up to `rows`."""
  if len(x) >= rows:
    return x
  return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)])


class NeighbourhoodBlocks:
  """k-NN radii and coverage of feature sets, in blocks on the mesh (one compile per shape).

  Args:
    mesh: the device mesh (rows of each block are split over its 'data' axis).
    k: neighbours (3).
    row_batch: rows per block (rounded up to a multiple of the device count).
    col_batch: columns per block.
  """

  def __init__(self, mesh: Mesh, k: int = K, row_batch: int = ROW_BATCH,
               col_batch: int = COL_BATCH):
    self.mesh, self.k = mesh, k
    self.row_batch, self.col_batch = row_batch, col_batch
    rows, cols = batch_sharded(mesh), replicated(mesh)
    self._rows, self._cols = rows, cols
    self._knn_step = jax.jit(self._knn, in_shardings=(rows, rows, cols, cols), out_shardings=rows)
    self._cover_step = jax.jit(self._cover, in_shardings=(rows, rows, cols, cols, cols),
                               out_shardings=rows)

  def _knn(self, smallest, rows, cols, col_valid):
    """Merges a column block into the running k+1 smallest squared distances `[R, k+1]`."""
    d = jnp.where(col_valid[None, :], squared_distances(rows, cols), jnp.inf)  # [R, C]
    candidates = jnp.concatenate([smallest, d], axis=1)  # [R, k+1+C]
    return -jax.lax.top_k(-candidates, self.k + 1)[0]  # ascending

  @staticmethod
  def _cover(covered, query, ref, ref_radii, ref_valid):
    """`covered |= any_j (d(query, ref_j) <= radius_j)` over one reference block."""
    within = (squared_distances(query, ref) <= ref_radii[None, :]) & ref_valid[None, :]
    return covered | jnp.any(within, axis=1)

  def _row_block(self, n: int) -> int:
    devices = self.mesh.devices.size
    return -(-min(self.row_batch, n) // devices) * devices

  def _col_blocks(self, x: np.ndarray, extra: Optional[np.ndarray] = None):
    """Yields replicated `(cols, valid[, extra])` blocks of `col_batch` (the last one padded)."""
    size = min(self.col_batch, len(x))
    for start in range(0, len(x), size):
      block = x[start:start + size]
      valid = np.arange(size) < len(block)
      arrays = [_pad_rows(block, size), valid]
      if extra is not None:
        arrays.append(_pad_rows(extra[start:start + size], size))
      yield [put(a, self._cols) for a in arrays]

  def radii(self, features: np.ndarray) -> np.ndarray:
    """Squared distance of every feature `[n, d]` to its k-th nearest neighbour, self excluded."""
    n = len(features)
    if n <= self.k:
      raise ValueError(f'precision/recall with k={self.k} needs more than {self.k} images per '
                       f'set, got {n}; use more samples (--num-samples)')
    block = self._row_block(n)
    out = []
    for start in range(0, n, block):
      rows = put(_pad_rows(features[start:start + block], block), self._rows)
      smallest = put(np.full((block, self.k + 1), np.inf, np.float32), self._rows)
      for cols, valid in self._col_blocks(features):
        smallest = self._knn_step(smallest, rows, cols, valid)
      out.append(np.asarray(jax.device_get(smallest))[:min(block, n - start), self.k])
    return np.concatenate(out)

  def covered(self, query: np.ndarray, ref: np.ndarray, ref_radii: np.ndarray) -> np.ndarray:
    """bool `[n_query]`: within the radius of at least one reference feature."""
    n = len(query)
    block = self._row_block(n)
    out = []
    for start in range(0, n, block):
      rows = put(_pad_rows(query[start:start + block], block), self._rows)
      covered = put(np.zeros((block,), bool), self._rows)
      for cols, valid, radii in self._col_blocks(ref, ref_radii.astype(np.float32)):
        covered = self._cover_step(covered, rows, cols, radii, valid)
      out.append(np.asarray(jax.device_get(covered))[:min(block, n - start)])
    return np.concatenate(out)


def precision_recall(real: np.ndarray, generated: np.ndarray,
                     blocks: NeighbourhoodBlocks) -> tuple[float, float]:
  """(precision, recall) of two feature sets `[n, d]` (see the module docstring)."""
  real, generated = np.asarray(real, np.float32), np.asarray(generated, np.float32)
  if real.shape[1:] != generated.shape[1:]:
    raise ValueError(f'feature sets of different widths: {real.shape} vs {generated.shape}')
  precision = blocks.covered(generated, real, blocks.radii(real)).mean()
  recall = blocks.covered(real, generated, blocks.radii(generated)).mean()
  return float(precision), float(recall)


def compute_pr(ctx, num_samples: int, seed: int, *, metric: str,
               all_reals: bool) -> dict[str, float]:
  """Precision and recall of the context's generator against its dataset (VGG16 fc2 features).

  Args:
    all_reals: every dataset image up to 200,000, no flips (`pr50k3_full`); else the first
      `num_samples` (an error if fewer), x-flipped if the run mirrored (`pr50k3`).
  """
  if all_reals:
    real = ctx.real_features('vgg16', 'fc2', None, False, metric, max_real=MAX_REAL_FULL)
  else:
    real = ctx.real_features('vgg16', 'fc2', num_samples, ctx.mirror, metric)
  gen = ctx.generated_features('vgg16', num_samples, seed)['fc2']
  blocks = ctx.memo('precision_recall_blocks', lambda: NeighbourhoodBlocks(ctx.mesh))
  precision, recall = precision_recall(real, gen, blocks)
  return {f'{metric}_precision': precision, f'{metric}_recall': recall}
