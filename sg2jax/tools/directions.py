"""Semantic directions in W: SeFa (closed form) and GANSpace (PCA of mapped latents), applied to a
range of ws layers (REFERENCE.md §11.2, §11.3).

A direction is named `METHOD:K` (`sefa:0`, `ganspace:3`): component K, counted from 0, by
decreasing eigenvalue (SeFa) or variance (GANSpace). Editing adds `strength * direction` to the
rows of ws in the chosen layer range and leaves the other rows as they are. SeFa directions are
unit vectors and `strength` is a distance in W, as in the SeFa paper; a GANSpace component is
scaled by its standard deviation in the sampled ws, so `strength` counts standard deviations.

The sign of an eigenvector is arbitrary (every solver may return `-v`); both methods flip each
vector so that its entry of largest magnitude is positive, so that a command line reproduces the
same edit on any machine.
"""

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import numpy as np

from sg2jax.tools.sampling import map_latents

METHODS = ('sefa', 'ganspace')
MAX_DIRECTIONS = 16
DEFAULT_GANSPACE_SAMPLES = 100_000
MAX_GANSPACE_SAMPLES = 10_000_000  # 10M mapped ws: minutes on a CPU
GANSPACE_SEED = 0
GANSPACE_CHUNK = 10_000  # latents mapped per compiled call (one shape, the last chunk padded)
_AFFINE_PATH = re.compile(r'b(\d+)/conv([01])/affine$')


class Direction(NamedTuple):
  method: str  # 'sefa' or 'ganspace'
  index: int   # component, from 0


def parse_direction(text: str) -> Direction:
  """`'sefa:3'` -> `Direction('sefa', 3)`.

  Raises:
    ValueError: not `METHOD:K` with a known method and K >= 0.
  """
  match = re.fullmatch(r'\s*([a-z]+):(\d{1,6})\s*', str(text))
  if not match or match.group(1) not in METHODS:
    raise ValueError(f'direction {text!r} is not METHOD:K with METHOD one of '
                     f'{", ".join(METHODS)} (e.g. sefa:0 or ganspace:3)')
  return Direction(match.group(1), int(match.group(2)))


def format_direction(direction: Direction) -> str:
  return f'{direction.method}:{direction.index}'


def canonical_signs(vectors: np.ndarray) -> np.ndarray:
  """Rows of `vectors` [K, D], each flipped so that its entry of largest magnitude is positive."""
  rows = np.arange(len(vectors))
  signs = np.sign(vectors[rows, np.argmax(np.abs(vectors), axis=1)])
  return vectors * np.where(signs == 0, 1, signs)[:, None]


# ----------------------------------------------------------------------------------------------
# SeFa: eigenvectors of the style affines' weights.

def style_affine_weights(variables: dict) -> list[np.ndarray]:
  """The style affine weights `[w_dim, C_l]` SeFa factorizes, indexed by the ws row they read
  (REFERENCE.md §11.2): row l < num_ws - 1 is read by the synthesis convolution l (REFERENCE.md
  §1.6), the last row by the last block's ToRGB alone. (The other ToRGBs read the row of the next
  block's conv0 and are left out, as SeFa's code leaves them out.)

  Raises:
    ValueError: the network has no StyleGAN2 synthesis affines (configs A-D).
  """
  synthesis = variables.get('params', {}).get('synthesis', {})
  found = []
  for block, layers in synthesis.items():
    for layer, leaves in (layers.items() if isinstance(layers, dict) else ()):
      match = _AFFINE_PATH.fullmatch(f'{block}/{layer}/affine')
      if match and isinstance(leaves, dict) and 'affine' in leaves:
        found.append(((int(match.group(1)), int(match.group(2))), leaves['affine']['weight']))
  if not found:
    raise ValueError('SeFa needs the style affines of a StyleGAN2 synthesis network '
                     '(synthesis/b*/conv*/affine); this network has none')
  last = f'b{max(res for (res, _), _ in found)}'
  weights = [weight for _, weight in sorted(found, key=lambda f: f[0])]
  weights.append(synthesis[last]['torgb']['affine']['weight'])
  return [np.asarray(weight, np.float64) for weight in weights]


def sefa(variables: dict, layers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """SeFa's directions for the ws rows `layers`.

  1. Take the style affine weight that reads each chosen row (`style_affine_weights`) as
     `[w_dim, C_l]` (sg2jax stores dense kernels `[in, out]`: no transpose) and concatenate them
     into `A [w_dim, sum C_l]`.
  2. Divide every column by its norm (each style channel's weight vector gets unit length; this
     also removes the equalized-lr gain, a constant).
  3. Eigen-decompose `A A^T [w_dim, w_dim]` and sort by decreasing eigenvalue.

  Returns:
    (directions `[w_dim, w_dim]`, row k the k-th unit direction; eigenvalues `[w_dim]`).

  Raises:
    ValueError: `layers` holds no row of this network.
  """
  weights = style_affine_weights(variables)
  chosen = sorted({int(l) for l in layers if 0 <= int(l) < len(weights)})
  if not chosen:
    raise ValueError(f'ws layers {list(layers)} do not exist; SeFa takes layers '
                     f'0-{len(weights) - 1} of this network')
  a = np.concatenate([weights[l] for l in chosen], axis=1)  # [w_dim, sum C]
  a = a / np.linalg.norm(a, axis=0, keepdims=True)
  eigenvalues, eigenvectors = np.linalg.eigh(a @ a.T)  # ascending
  order = np.argsort(eigenvalues)[::-1]
  return canonical_signs(eigenvectors[:, order].T), eigenvalues[order]


# ----------------------------------------------------------------------------------------------
# GANSpace: PCA of mapped latents.

class GanSpace(NamedTuple):
  components: np.ndarray  # [w_dim, w_dim]: row k the k-th principal direction (unit)
  stds: np.ndarray        # [w_dim]: the sampled ws' standard deviation along each
  mean: np.ndarray        # [w_dim]: their mean
  num_samples: int


def ganspace(generator: nn.Module, variables: dict, num_samples: int = DEFAULT_GANSPACE_SAMPLES,
             class_idx: Optional[int] = None, seed: int = GANSPACE_SEED,
             chunk: int = GANSPACE_CHUNK) -> GanSpace:
  """PCA of `num_samples` ws: z drawn with `RandomState(seed)` (`[num_samples, z_dim]` in one
  stream, drawn chunk by chunk), mapped without truncation (with the label `class_idx` for a
  conditional network), mean-centred; the components are the covariance's eigenvectors by
  decreasing variance. The covariance is summed in float64 chunk by chunk, so memory does not grow
  with `num_samples`."""
  if not 2 <= num_samples <= MAX_GANSPACE_SAMPLES:
    raise ValueError(f'GANSpace samples {num_samples} must be in [2, {MAX_GANSPACE_SAMPLES}]')
  rng = np.random.RandomState(seed)
  total, outer = np.zeros(generator.w_dim), np.zeros((generator.w_dim, generator.w_dim))
  for start in range(0, num_samples, chunk):
    count = min(chunk, num_samples - start)
    z = np.zeros((chunk, generator.z_dim), np.float32)
    z[:count] = rng.randn(count, generator.z_dim)
    w = map_latents(generator, variables, z, class_idx=class_idx)[:count, 0].astype(np.float64)
    total += w.sum(axis=0)
    outer += w.T @ w
  mean = total / num_samples
  covariance = (outer - num_samples * np.outer(mean, mean)) / (num_samples - 1)
  variances, vectors = np.linalg.eigh(covariance)
  order = np.argsort(variances)[::-1]
  stds = np.sqrt(np.maximum(variances[order], 0))
  return GanSpace(canonical_signs(vectors[:, order].T), stds, mean, num_samples)


def variables_fingerprint(variables: dict, collection: str = 'params') -> str:
  """sha256 of a variables collection's leaves (path, shape, bytes): names a GANSpace cache, so a
  retrained network never reads another network's components."""
  digest = hashlib.sha256()

  def visit(prefix: str, tree) -> None:
    if isinstance(tree, dict) or hasattr(tree, 'items'):
      for key in sorted(tree):
        visit(f'{prefix}/{key}', tree[key])
    else:
      array = np.ascontiguousarray(np.asarray(tree, np.float32))
      digest.update(f'{prefix}{array.shape}'.encode())
      digest.update(array.tobytes())

  visit('', variables.get(collection, {}))
  return digest.hexdigest()


def user_cache_dir() -> Path:
  """`$XDG_CACHE_HOME/sg2jax/ganspace` (`~/.cache/sg2jax/ganspace`)."""
  root = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
  return Path(root) / 'sg2jax' / 'ganspace'


def _writable_dir(directory: Path) -> bool:
  """Whether a file can be created in `directory` (tried, not guessed: permission bits say
  nothing for root or on read-only mounts)."""
  try:
    with tempfile.NamedTemporaryFile(dir=directory, prefix='.sg2jax-probe-'):
      return True
  except OSError:
    return False


def ganspace_cache_path(network: str | Path, fingerprint: str, num_samples: int,
                        class_idx: Optional[int] = None) -> Path:
  """Where GANSpace components of a network are cached: beside the network
  (`<network>.ganspace-<fingerprint>-n<N>[-c<class>].npz` in the folder that holds the pickle,
  checkpoint or workdir) when that folder is writable, else in `user_cache_dir()`. A user's
  network folder is never written into when it is not writable."""
  network = Path(network).absolute()
  name = f'ganspace-{fingerprint[:16]}-n{num_samples}'
  if class_idx is not None:
    name += f'-c{class_idx}'
  if _writable_dir(network.parent):
    return network.parent / f'{network.name}.{name}.npz'
  return user_cache_dir() / f'{name}.npz'


def cached_ganspace(generator: nn.Module, variables: dict, network: str | Path,
                    num_samples: int = DEFAULT_GANSPACE_SAMPLES,
                    class_idx: Optional[int] = None) -> tuple[GanSpace, Path]:
  """`ganspace(...)` read from its cache file (`ganspace_cache_path`) or computed and written
  there (atomically: a file appears whole or not at all). A damaged cache file is computed
  again. Returns the components and the cache path."""
  path = ganspace_cache_path(network, variables_fingerprint(variables), num_samples, class_idx)
  try:
    with np.load(path) as data:
      result = GanSpace(data['components'], data['stds'], data['mean'], int(data['num_samples']))
    if result.components.shape == (generator.w_dim, generator.w_dim):
      return result, path
  except (OSError, KeyError, ValueError, EOFError):
    pass
  result = ganspace(generator, variables, num_samples, class_idx)
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=path.parent, prefix='.ganspace-', suffix='.npz',
                                   delete=False) as f:
    np.savez(f, components=result.components, stds=result.stds, mean=result.mean,
             num_samples=result.num_samples)
  os.replace(f.name, path)
  return result, path


# ----------------------------------------------------------------------------------------------
# Edits.

def check_directions(directions: Sequence[Direction], strengths: Sequence[float]) -> None:
  """Raises ValueError unless there is one strength per direction, and at most
  `MAX_DIRECTIONS`."""
  if len(directions) > MAX_DIRECTIONS:
    raise ValueError(f'{len(directions)} directions; at most {MAX_DIRECTIONS} at once')
  if len(directions) != len(strengths):
    raise ValueError(f'{len(directions)} directions but {len(strengths)} strengths; give one '
                     f'strength per direction')


def layer_offsets(vectors: np.ndarray, strengths: Sequence[float], layers: Sequence[int],
                  num_ws: int) -> np.ndarray:
  """`[num_ws, w_dim]` to add to ws: `sum_k strengths[k] * vectors[k]` (vectors `[K, w_dim]`) on
  the rows in `layers`, zero on the others."""
  vectors = np.asarray(vectors, np.float64).reshape(len(vectors), -1)
  check_directions(vectors, strengths)
  bad = [l for l in layers if not 0 <= l < num_ws]
  if bad:
    raise ValueError(f'direction layers {bad} do not exist: this network has ws layers '
                     f'0-{num_ws - 1}')
  out = np.zeros((num_ws, vectors.shape[1]), np.float64)
  out[list(layers)] = np.asarray(strengths, np.float64) @ vectors
  return out.astype(np.float32)


class Directions:
  """The directions of one network, each basis computed when first asked for and kept: SeFa's
  per layer range, GANSpace's per class (read from or written to its cache file,
  `cached_ganspace`).

  Args:
    generator, variables: the network.
    network: its path (where the GANSpace cache goes, `ganspace_cache_path`).
    ganspace_samples: N, the ws GANSpace samples.
  """

  def __init__(self, generator: nn.Module, variables: dict, network: str | Path,
               ganspace_samples: int = DEFAULT_GANSPACE_SAMPLES):
    self.generator, self.variables, self.network = generator, variables, network
    self.ganspace_samples = ganspace_samples
    self._sefa: dict[tuple[int, ...], np.ndarray] = {}
    self._ganspace: dict[Optional[int], GanSpace] = {}

  def sefa_basis(self, layers: Sequence[int]) -> np.ndarray:
    key = tuple(sorted(set(layers)))
    if key not in self._sefa:
      self._sefa[key] = sefa(self.variables, key)[0]
    return self._sefa[key]

  def ganspace_basis(self, class_idx: Optional[int] = None) -> GanSpace:
    if class_idx not in self._ganspace:
      self._ganspace[class_idx] = cached_ganspace(self.generator, self.variables, self.network,
                                                  self.ganspace_samples, class_idx)[0]
    return self._ganspace[class_idx]

  def vectors(self, directions: Sequence[Direction], layers: Sequence[int],
              class_idx: Optional[int] = None) -> np.ndarray:
    """`[len(directions), w_dim]`: SeFa's unit vectors (of the convolutions reading `layers`),
    GANSpace's components times their standard deviations."""
    rows = []
    for direction in directions:
      if direction.method == 'sefa':
        basis = self.sefa_basis(layers)
      else:
        space = self.ganspace_basis(class_idx)
        basis = space.components * space.stds[:, None]
      if direction.index >= len(basis):
        raise ValueError(f'direction {format_direction(direction)} does not exist: '
                         f'{direction.method} has components 0-{len(basis) - 1} here')
      rows.append(basis[direction.index])
    return np.asarray(rows, np.float64).reshape(len(rows), self.generator.w_dim)

  def offsets(self, directions: Sequence[Direction], strengths: Sequence[float],
              layers: Sequence[int], class_idx: Optional[int] = None) -> np.ndarray:
    """`[num_ws, w_dim]` to add to ws (`layer_offsets`)."""
    check_directions(directions, strengths)
    if not directions:
      return np.zeros((self.generator.num_ws, self.generator.w_dim), np.float32)
    return layer_offsets(self.vectors(directions, layers, class_idx), strengths, layers,
                         self.generator.num_ws)
