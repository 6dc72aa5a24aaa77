"""Perceptual path length (Karras et al. 2019), TF's protocol (REFERENCE.md §5.6).

Per sample, with eps = 1e-4:
1. `z0, z1 ~ N(0, I)`; `t ~ U(0, 1)` (`full` sampling) or `t = 0` (`end`, path endpoints).
2. Space `w`: `w0 = map(z0)`, `w1 = map(z1)` (all `num_ws` rows), endpoints `lerp(w0, w1, t)`
   and `lerp(w0, w1, t + eps)`. Space `z`: `slerp_directions(z0, z1, t)` and `slerp_directions(z0, z1, t + eps)`, then
   the mapping. Never truncated.
3. Both images of a pair are synthesized with the **same** random noise maps (drawn per pair;
   TF shares one draw per minibatch, ADA per pair: the expectation is the same).
4. With `crop` (faces): `c = H // 8`, keep rows `[3c, 7c)` and columns `[2c, 6c)`.
5. Box-downsample by `f = H' // 256` when `f > 1`, with `H'` the **cropped** height (TF; ADA uses
   the full height, which differs at R >= 512).
6. `distance = LPIPS(img0, img1) / eps^2`. The official code maps the images to `[0, 255]` by
   `(x + 1) 127.5` (no clipping, no rounding) for NVIDIA's VGG16 LPIPS, which takes that range;
   sg2jax's LPIPS (the lpips package's v0.1 model, `feature_nets/lpips.py`) takes the same images in
   `[-1, 1]`, so they are passed unchanged.
7. Over all samples: drop values below the 1st percentile (`method='lower'`) and above the 99th
   (`method='higher'`), report the mean.
All in float32 (TF `dtype='float32'`, ADA `force_fp32`): `MetricContext` runs a float32
generator.

Official names (`sg2jax.metrics.registry`): `ppl_zfull`, `ppl_wfull`, `ppl_zend`, `ppl_wend`
(cropped), `ppl2_wend` (W, endpoints, full image: the paper's LSUN path length) and `ppl_w`, the
short name of `ppl_wend`.
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sg2jax.feature_nets.lpips import lpips_distance
from sg2jax.ops.pyramid import downsample_box, lerp
from sg2jax.sharding import batch_sharded, replicated

EPSILON = 1e-4
SPACES = ('z', 'w')
SAMPLINGS = ('full', 'end')
DOWNSAMPLE_TO = 256
MIN_LPIPS_SIZE = 16  # five VGG16 stages, each halving the size

# (params, images0, images1) -> distances [N]; images [N, H, W, 3] in [-1, 1].
DistanceFn = Callable[[dict, jnp.ndarray, jnp.ndarray], jnp.ndarray]


def normalize(x: jnp.ndarray) -> jnp.ndarray:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def slerp_directions(a: jnp.ndarray, b: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """Spherical interpolation of the directions of `a`, `b` `[N, D]` at `t [N]` (REFERENCE.md §5.6).

  1. `a, b` normalized; `d = a . b`; `p = t acos(d)`.
  2. `c = normalize(b - d a)` (the unit direction from a towards b).
  3. `normalize(a cos p + c sin p)` (unit length, as the official code).
  """
  a, b = normalize(a), normalize(b)
  d = jnp.clip(jnp.sum(a * b, axis=-1, keepdims=True), -1.0, 1.0)  # [N, 1]
  p = t[:, None] * jnp.arccos(d)
  c = normalize(b - d * a)
  return normalize(a * jnp.cos(p) + c * jnp.sin(p))


def crop_and_downsample(images: jnp.ndarray, crop: bool) -> jnp.ndarray:
  """`[N, H, W, C]` -> the face crop (optional), box-downsampled towards 256 by the cropped size.

  Crop: `c = H // 8`, rows `[3c, 7c)`, columns `[2c, 6c)` (1024: rows 384-895, columns 256-767).
  Downsample: `f = H' // 256` of the (cropped) height `H'`; when `f > 1`, average f x f boxes.
  """
  if crop:
    c = images.shape[1] // 8
    images = images[:, 3 * c:7 * c, 2 * c:6 * c]  # [N, 4c, 4c, C]
  factor = images.shape[1] // DOWNSAMPLE_TO
  return downsample_box(images, factor) if factor > 1 else images


def lpips_input_size(img_resolution: int, crop: bool) -> int:
  """Height of the images LPIPS compares (`crop_and_downsample` of a square output)."""
  size = 4 * (img_resolution // 8) if crop else img_resolution
  return size // (size // DOWNSAMPLE_TO) if size // DOWNSAMPLE_TO > 1 else size


def filtered_mean(distances: np.ndarray, low: float = 1, high: float = 99) -> float:
  """Mean of the distances within `[percentile(low, 'lower'), percentile(high, 'higher')]`."""
  distances = np.asarray(distances, np.float64)
  lo = np.percentile(distances, low, method='lower')
  hi = np.percentile(distances, high, method='higher')
  return float(distances[(distances >= lo) & (distances <= hi)].mean())


def make_ppl_step(generator: nn.Module, mesh: Mesh, batch_size: int, space: str, sampling: str,
                  crop: bool, epsilon: float = EPSILON,
                  distance_fn: DistanceFn = lpips_distance) -> Callable:
  """A jitted `(g_variables, distance_params, key_data, labels) -> dict` for one batch of pairs.

  Args:
    generator: a module with `map(z, c)` -> ws `[N, num_ws, w_dim]` and `synthesize(ws,
      noise_mode)` -> images `[N, H, W, C]` (random noise from the `'noise'` rng stream).
    mesh: pairs are split over its 'data' axis (`batch_size` must divide over the devices).
    batch_size: pairs per call.
    space: 'z' (slerp in Z) or 'w' (lerp in W).
    sampling: 'full' (t ~ U(0, 1)) or 'end' (t = 0).
    crop: the face crop.
    epsilon: the path step.
    distance_fn: the image distance (LPIPS; tests pass analytic ones).

  Returns:
    `step(g_variables, distance_params, key_data, labels)`: `key_data` is
    `jax.random.key_data` of the batch's key (replicated), `labels [L, c_dim]` the dataset's
    labels for conditional generators (None otherwise). Returns replicated
    `{'distance': [B], 'z0': [B, z_dim], 'z1': [B, z_dim], 't': [B]}`.
  """
  if space not in SPACES:
    raise ValueError(f'PPL space {space!r} is not one of {SPACES}')
  if sampling not in SAMPLINGS:
    raise ValueError(f'PPL sampling {sampling!r} is not one of {SAMPLINGS}')
  rows = batch_sharded(mesh)

  def step(g_variables, distance_params, key_data, labels):
    key = jax.random.wrap_key_data(key_data)
    key_z0, key_z1, key_t, key_c, key_noise = jax.random.split(key, 5)
    z0, z1 = (jax.lax.with_sharding_constraint(
        jax.random.normal(k, (batch_size, generator.z_dim)), rows) for k in (key_z0, key_z1))
    t = jax.random.uniform(key_t, (batch_size,)) if sampling == 'full' else jnp.zeros(batch_size)
    t = jax.lax.with_sharding_constraint(t, rows)
    c = None
    if labels is not None:
      c = labels[jax.random.randint(key_c, (batch_size,), 0, labels.shape[0])]  # [B, c_dim]
    map_ws = lambda z: generator.apply(g_variables, z, c, method='map')  # [B, num_ws, w_dim]
    if space == 'w':
      ws0, ws1 = map_ws(z0), map_ws(z1)
      ws_t0 = lerp(ws0, ws1, t[:, None, None])  # t per sample, broadcast over [num_ws, w_dim]
      ws_t1 = lerp(ws0, ws1, (t + epsilon)[:, None, None])
    else:
      ws_t0 = map_ws(slerp_directions(z0, z1, t))
      ws_t1 = map_ws(slerp_directions(z0, z1, t + epsilon))
    # The same key for both images: the same noise maps within each pair.
    synthesize = lambda ws: generator.apply(g_variables, ws, 'random', method='synthesize',
                                            rngs={'noise': key_noise})
    images0 = crop_and_downsample(synthesize(ws_t0), crop)
    images1 = crop_and_downsample(synthesize(ws_t1), crop)
    distance = distance_fn(distance_params, images0, images1) / (epsilon ** 2)
    return {'distance': distance, 'z0': z0, 'z1': z1, 't': t}

  return jax.jit(step, out_shardings=replicated(mesh))


def compute_ppl(ctx, num_samples: int, seed: int, *, metric: str, space: str, sampling: str,
                crop: bool) -> dict[str, float]:
  """PPL of the context's generator over `num_samples` pairs (see the module docstring).

  Raises:
    ValueError: images (after the crop) smaller than LPIPS's 16x16 (its five VGG16 stages).
  """
  size = lpips_input_size(ctx.generator.img_resolution, crop)
  if size < MIN_LPIPS_SIZE:
    res = ctx.generator.img_resolution
    what = f'the face crop of the {res}x{res} output' if crop else f'the {res}x{res} output'
    raise ValueError(f'{metric} compares {size}x{size} images ({what}), smaller than the '
                     f'{MIN_LPIPS_SIZE}x{MIN_LPIPS_SIZE} LPIPS needs'
                     + ('; use ppl2_wend (no crop)' if crop else ''))
  step = ctx.memo(('ppl', space, sampling, crop), lambda: make_ppl_step(
      ctx.generator, ctx.mesh, ctx.batch_size, space, sampling, crop))
  distances = ctx.run_batches(
      lambda key_data: step(ctx.g_variables, ctx.lpips_params(), key_data, ctx.labels)['distance'],
      num_samples, seed, f'{metric} pairs')
  return {metric: filtered_mean(distances)}

