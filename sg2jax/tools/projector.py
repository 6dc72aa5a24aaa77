"""The paper's projector (Karras et al. 2020, Sec. 5; REFERENCE.md §6): find the `w` and the noise
maps for which G draws a given image.

For each target, independently (a batch of targets is one batch of independent problems):
1. W statistics: `w` of 10,000 `z` from `RandomState(123)`; `w_avg = mean(w)`,
   `w_std = sqrt(sum_{n,d} (w_nd - w_avg_d)^2 / 10000)`.
2. Start from `w = w_avg` and every noise map `~ N(0, 1)`; fresh Adam (0.9, 0.999, 1e-8) over `w`
   and the maps.
3. Step `i` of `T`, `t = i / T`: `lr = 0.1 * ramp(t)` (cosine ramp-down over the last 25%,
   linear ramp-up over the first 5%, so 0 at step 0); `ws = broadcast(w + sigma_i * N(0, I))` with
   `sigma_i = w_std * 0.05 * max(0, 1 - t / 0.75)^2`; synthesize with the optimized noise maps;
   box-downsample to 256x256 when larger; loss `LPIPS(image, target) + 1e5 * noise_reg`;
   one Adam step; renormalize every noise map to zero mean and unit (biased) std.
4. Result: the final `w` without the added noise, broadcast to `[num_ws, w_dim]`, and the maps.

W+ (`space='w_plus'`, Abdal et al. 2019, "Image2StyleGAN"): one `w` per layer, `[num_ws, w_dim]`,
each starting at `w_avg`; the same schedule, noise maps, losses and renormalization; the w-noise
of step 3 is drawn for every layer independently (`N(0, I)` of shape `[num_ws, w_dim]`, the same
`sigma_i`). The result is the optimized `[num_ws, w_dim]` itself, in the same `projected_w.npz`
layout. Differs from official: the official projectors optimize W only (REFERENCE.md §6).

The whole optimization is one jitted `lax.scan` over the steps (or scans over chunks of steps, with
the state kept on the devices in between, when the caller wants progress reports or video frames).
The targets are split over the devices of a 1-D mesh.

Differs from official (REFERENCE.md §6): the distance is LPIPS v0.1 VGG16 with the `lpips` package's
weights (`sg2jax.feature_nets.lpips`; TF used `vgg16_zhang_perceptual.pkl`, ADA `vgg16.pt`). It
takes images in `[-1, 1]`, so the mapping to `[0, 255]` is folded into it. Networks below 32x32
(where VGG16's fifth block would see less than 2x2 pixels, and nothing at 8x8) have their images
and targets repeated to 32x32 (nearest) before LPIPS; the official projector never sees such
networks.
"""

import dataclasses
import functools
import io
import math
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from sg2jax import storage
from sg2jax.feature_nets.lpips import features_distance, lpips_features, load_lpips_weights
from sg2jax.images import to_uint8
from sg2jax.networks.generator import fused_modconv, modconv_form
from sg2jax.ops.pyramid import downsample_box
from sg2jax.sharding import DATA_AXIS, batch_sharded, make_mesh, replicated
from sg2jax.tools.sampling import class_labels, layer_resolutions

LPIPS_MAX_RESOLUTION = 256  # larger images are box-downsampled to this (REFERENCE.md §6)
LPIPS_MIN_RESOLUTION = 32  # smaller ones are repeated up to it (sg2jax only, see above)
W_AVG_SEED = 123  # RandomState seed of the w-statistics latents (official projector)
NOISE_REG_MIN_SIZE = 8  # the noise pyramid stops at this size
SPACES = ('w', 'w_plus')  # one w for all layers (the paper's), or one per layer


@dataclasses.dataclass(frozen=True)
class ProjectionSettings:
  """The official projector's hyperparameters (names as ADA `projector.project`)."""
  num_steps: int = 1000
  w_avg_samples: int = 10000
  initial_learning_rate: float = 0.1
  initial_noise_factor: float = 0.05
  lr_rampdown_length: float = 0.25
  lr_rampup_length: float = 0.05
  noise_ramp_length: float = 0.75
  regularize_noise_weight: float = 1e5

  def __post_init__(self):
    if self.num_steps < 1:
      raise ValueError(f'num_steps {self.num_steps} must be at least 1 (the paper uses 1000)')
    if self.w_avg_samples < 1:
      raise ValueError(f'w_avg_samples {self.w_avg_samples} must be at least 1')


# ----------------------------------------------------------------------------------------------
# Schedules and the noise terms (pure functions of arrays).

def learning_rate(step, settings: ProjectionSettings) -> jnp.ndarray:
  """Learning rate of step `step` (0-based; traced or Python).

  `t = step / T`; `ramp = min(1, (1 - t) / 0.25)`; `ramp = 0.5 - 0.5 cos(pi ramp)`;
  `ramp *= min(1, t / 0.05)`; `lr = 0.1 ramp`.
  """
  t = jnp.asarray(step, jnp.float32) / settings.num_steps
  ramp = jnp.minimum(1.0, (1.0 - t) / settings.lr_rampdown_length)
  ramp = 0.5 - 0.5 * jnp.cos(jnp.pi * ramp)
  ramp = ramp * jnp.minimum(1.0, t / settings.lr_rampup_length)
  return settings.initial_learning_rate * ramp


def w_noise_scale(step, w_std, settings: ProjectionSettings) -> jnp.ndarray:
  """Std of the noise added to `w` at step `step`: `w_std * 0.05 * max(0, 1 - t / 0.75)^2`."""
  t = jnp.asarray(step, jnp.float32) / settings.num_steps
  return w_std * settings.initial_noise_factor * jnp.square(
      jnp.maximum(0.0, 1.0 - t / settings.noise_ramp_length))


def _halve(x: jnp.ndarray) -> jnp.ndarray:
  """2x2 average pooling of `[N, H, W]`."""
  n, h, w = x.shape
  return x.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))  # [N, H/2, W/2]


def noise_regularization(noise_maps: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """Per-sample autocorrelation penalty of the noise maps (REFERENCE.md §6), `[N]`.

  For every map `n` `[N, H, W]` and its 2x2-average-pooled copies while the size is above 8
  (the map itself, then down to 8x8): `mean(n * roll_x(n, 1))^2 + mean(n * roll_y(n, 1))^2`,
  means over the pixels of each sample; summed over maps and levels.
  """
  total = 0.0
  for n in noise_maps:
    while True:
      total = total + (jnp.square(jnp.mean(n * jnp.roll(n, 1, axis=2), axis=(1, 2)))
                       + jnp.square(jnp.mean(n * jnp.roll(n, 1, axis=1), axis=(1, 2))))
      if n.shape[1] <= NOISE_REG_MIN_SIZE:
        break
      n = _halve(n)
  return total


def normalize_noise(noise_maps: Sequence[jnp.ndarray]) -> tuple[jnp.ndarray, ...]:
  """Each `[N, H, W]` map to zero mean and unit (biased) std per sample."""
  out = []
  for n in noise_maps:
    n = n - jnp.mean(n, axis=(1, 2), keepdims=True)
    out.append(n * jax.lax.rsqrt(jnp.mean(jnp.square(n), axis=(1, 2), keepdims=True)))
  return tuple(out)


# ----------------------------------------------------------------------------------------------
# LPIPS split into target features (computed once) and the per-step distance.

def lpips_input(images: jnp.ndarray) -> jnp.ndarray:
  """Generator images `[N, R, R, C]` in `[-1, 1]` -> what LPIPS sees: RGB (grey repeated),
  box-downsampled to 256x256 above 256 (REFERENCE.md §6), repeated (nearest) to 32x32 below 32."""
  images = images.astype(jnp.float32)
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  r = images.shape[1]
  if r > LPIPS_MAX_RESOLUTION:
    images = downsample_box(images, r // LPIPS_MAX_RESOLUTION)  # [N, 256, 256, C]
  elif r < LPIPS_MIN_RESOLUTION:
    f = LPIPS_MIN_RESOLUTION // r
    images = jnp.repeat(jnp.repeat(images, f, axis=1), f, axis=2)  # [N, 32, 32, C]
  return images


# ----------------------------------------------------------------------------------------------
# Targets and W statistics.

def load_target(path: str | Path, resolution: int, channels: int = 3) -> np.ndarray:
  """A target image file as uint8 `[resolution, resolution, channels]`.

  Like the official `run_projector`: a non-square image is center-cropped to a square, and an
  image of another size is resized (Lanczos). Either one warns (`UserWarning`). `channels` is the
  network's (`generator.img_channels`): colour images become grey for a grey network and grey
  ones RGB for a colour network; 16-bit grey images are scaled to 8 bits (not clipped).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a readable image.
  """
  path = storage.as_path(path)
  if not path.is_file():
    raise FileNotFoundError(f'target image {path} not found')
  try:
    with Image.open(io.BytesIO(path.read_bytes())) as opened:
      image = opened
      if opened.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):  # 16-bit grey: scale to 8
        levels = np.asarray(opened, np.float64) / 257
        image = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8))
      image = image.convert('RGB' if channels == 3 else 'L')
  except (OSError, ValueError) as e:
    raise ValueError(f'target {path} is not a readable image ({e}); pass a PNG or JPEG '
                     f'file') from None
  w, h = image.size
  if (w, h) != (resolution, resolution):
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    image = image.resize((resolution, resolution), Image.LANCZOS)
    what = f'center-cropped to {s}x{s} and resized' if w != h else 'resized'
    warnings.warn(f'target {path.name} is {w}x{h}, the network draws {resolution}x{resolution}: '
                  f'{what} to {resolution}x{resolution}', stacklevel=2)
  array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


@functools.partial(jax.jit, static_argnums=0)
def _map_to_w(generator, variables, z, c):
  return generator.apply(variables, z, c, method='map')[:, 0]


def w_statistics(generator: nn.Module, variables: dict, c: Optional[np.ndarray] = None,
                 num_samples: int = 10000, seed: int = W_AVG_SEED) -> tuple[np.ndarray, float]:
  """`(w_avg [w_dim], w_std)` of the mapping on `RandomState(seed).randn(num_samples, z_dim)`.

  Args:
    generator: a Generator.
    variables: its variables.
    c: one label `[c_dim]` used for every sample (conditional networks), else None.
    num_samples: number of latents (10,000 in the paper).
    seed: numpy RandomState seed (123 in the official projectors).
  """
  # The official projector's latents: numpy's legacy generator, float64 cast to float32.
  z = np.random.RandomState(seed).randn(num_samples, generator.z_dim).astype(np.float32)
  labels = None if c is None else np.repeat(np.asarray(c, np.float32)[None], num_samples, 0)
  w = _map_to_w(generator, variables, z, labels)  # [num_samples, w_dim]
  w = np.asarray(w, np.float64)
  w_avg = w.mean(axis=0)
  w_std = float(np.sqrt(np.sum(np.square(w - w_avg)) / num_samples))
  return w_avg.astype(np.float32), w_std


# ----------------------------------------------------------------------------------------------
# The optimization.

class ProjectionState(flax.struct.PyTreeNode):
  """What the optimization carries: `params` (`w [N, w_dim]`, or `[N, num_ws, w_dim]` in W+;
  `noise` maps `[N, H, W]`) and the Adam state. Every leaf except Adam's step count has the
  targets on its first axis."""
  params: dict
  opt_state: optax.OptState


class StepOutputs(NamedTuple):
  """Per step (stacked over the steps of a scan): values after that step's update."""
  w: jnp.ndarray           # [steps, N, w_dim] (W+: [steps, N, num_ws, w_dim])
  lpips: jnp.ndarray       # [steps, N]: LPIPS of the step's (w-noised) image
  noise_reg: jnp.ndarray   # [steps, N]: noise regularization before the renormalization


def make_optimizer(settings: ProjectionSettings) -> optax.GradientTransformation:
  """Adam (0.9, 0.999, 1e-8) with the ramped learning rate (optax's count = the step index)."""
  return optax.adam(lambda count: learning_rate(count, settings), b1=0.9, b2=0.999, eps=1e-8)


def check_space(space: str) -> None:
  """Raises ValueError unless `space` is one of `SPACES`."""
  if space not in SPACES:
    raise ValueError(f'projection space {space!r} is not one of {", ".join(SPACES)}')


def init_projection(generator: nn.Module, settings: ProjectionSettings, w_avg: np.ndarray,
                    keys_init: jax.Array, space: str = 'w') -> ProjectionState:
  """The start: `w = w_avg` (W: `[N, w_dim]`; W+: every layer's, `[N, num_ws, w_dim]`) and
  unit-normal noise maps (one key per target, `keys_init [N]`)."""
  check_space(space)
  n = keys_init.shape[0]
  shape = (n, generator.w_dim) if space == 'w' else (n, generator.num_ws, generator.w_dim)
  w = jnp.broadcast_to(jnp.asarray(w_avg, jnp.float32), shape)
  noise: tuple = ()
  if generator.use_noise:
    resolutions = layer_resolutions(generator.img_resolution)

    def draw(key):
      keys = jax.random.split(key, len(resolutions))
      return tuple(jax.random.normal(k, (r, r)) for k, r in zip(keys, resolutions))

    noise = jax.vmap(draw)(keys_init)  # per layer [N, res, res]
  params = {'w': w, 'noise': noise}
  return ProjectionState(params, make_optimizer(settings).init(params))


def synthesize_projection(generator: nn.Module, variables: dict, w: jnp.ndarray,
                          noise: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """Image of `w [N, w_dim]` (broadcast to all layers) or of W+ `ws [N, num_ws, w_dim]`, with the
  noise maps `[N, H, W]`."""
  ws = w if w.ndim == 3 else jnp.broadcast_to(w[:, None], (w.shape[0], generator.num_ws,
                                                           w.shape[1]))
  if not noise:
    return generator.apply(variables, ws, noise_mode='none', method='synthesize')
  return generator.apply(variables, ws, noise=[n[..., None] for n in noise], method='synthesize')


def make_projection_steps(generator: nn.Module, settings: ProjectionSettings, chunk_steps: int
                          ) -> Callable:
  """`run(state, first_step, variables, lpips_params, target_features, keys_steps, w_std)`:
  steps `first_step .. first_step + chunk_steps - 1` as one `lax.scan` (not jitted here).

  Steps at or beyond `settings.num_steps` leave the state unchanged (`lax.cond`), so the chunk
  length need not divide `num_steps`. Returns `(state, StepOutputs)`.
  """
  optimizer = make_optimizer(settings)
  ragged = settings.num_steps % chunk_steps != 0

  def loss_fn(params, step, variables, lpips_params, target_features, keys_steps, w_std):
    keys = jax.vmap(jax.random.fold_in, (0, None))(keys_steps, step)
    shape = params['w'].shape[1:]  # W: [w_dim]; W+: [num_ws, w_dim], every layer its own noise
    w_noise = jax.vmap(lambda k: jax.random.normal(k, shape))(keys)  # [N, *shape]
    w = params['w'] + w_noise * w_noise_scale(step, w_std, settings)
    images = synthesize_projection(generator, variables, w, params['noise'])
    distance = features_distance(lpips_params, lpips_features(lpips_params, lpips_input(images)),
                              target_features)  # [N]
    reg = noise_regularization(params['noise']) if params['noise'] else jnp.zeros_like(distance)
    # Targets are independent: the sum's gradient w.r.t. one target's w and maps is its own.
    return jnp.sum(distance + settings.regularize_noise_weight * reg), (distance, reg)

  def step_fn(state, step, variables, lpips_params, target_features, keys_steps, w_std):
    grads, (distance, reg) = jax.grad(loss_fn, has_aux=True)(
        state.params, step, variables, lpips_params, target_features, keys_steps, w_std)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = {'w': params['w'], 'noise': normalize_noise(params['noise'])}
    return ProjectionState(params, opt_state), StepOutputs(params['w'], distance, reg)

  def run(state, first_step, variables, lpips_params, target_features, keys_steps, w_std):
    def body(state, step):
      args = (variables, lpips_params, target_features, keys_steps, w_std)
      if not ragged:
        return step_fn(state, step, *args)
      skipped = StepOutputs(state.params['w'], jnp.zeros(keys_steps.shape),
                            jnp.zeros(keys_steps.shape))
      return jax.lax.cond(step < settings.num_steps, lambda s: step_fn(s, step, *args),
                          lambda s: (s, skipped), state)

    return jax.lax.scan(body, state, first_step + jnp.arange(chunk_steps))

  return run


class ProjectionResult(NamedTuple):
  """What `project` returns (numpy, one row per target)."""
  ws: np.ndarray                 # [N, num_ws, w_dim]: the final w broadcast, or W+'s own
                                 # (projected_w.npz)
  noise: tuple[np.ndarray, ...]  # per layer [N, H, W]: the optimized noise maps
  images: np.ndarray             # [N, R, R, C] float in [-1, 1]: G(ws, noise)
  lpips: np.ndarray              # [N]: LPIPS(images, targets)
  w_steps: np.ndarray            # [num_steps, N, w_dim] (W+: [.., num_ws, w_dim]) after each step
  lpips_steps: np.ndarray        # [num_steps, N]
  noise_reg_steps: np.ndarray    # [num_steps, N]
  frames: Optional[np.ndarray]   # [F, N, R, R, C] uint8 after every chunk, if recorded


def _state_sharding(state, mesh: Mesh):
  """Targets on the first axis split over the mesh; scalars (Adam's count) replicated."""
  return jax.tree.map(lambda x: batch_sharded(mesh) if x.ndim else replicated(mesh), state)


class _Programs(NamedTuple):
  """The jitted functions of one projection setup (see `_programs`)."""
  init: Callable          # (w_avg, keys_init) -> ProjectionState
  run: Callable           # make_projection_steps' run, state donated
  render: Callable        # (variables, w, noise) -> images
  features: Callable      # (lpips_params, images) -> LPIPS features
  distance: Callable      # (lpips_params, images, target_features) -> [N]


@functools.lru_cache(maxsize=8)
def _programs(generator: nn.Module, settings: ProjectionSettings, chunk: int,
              mesh: Mesh, space: str = 'w') -> _Programs:
  """Jitted once per (network, settings, chunk length, mesh, space): projecting again (another
  call of `project`, other targets of the same count) reuses the compiled programs."""
  rows = batch_sharded(mesh)
  init = lambda w_avg, keys: init_projection(generator, settings, w_avg, keys, space)
  abstract = jax.eval_shape(init, jax.ShapeDtypeStruct((generator.w_dim,), jnp.float32),
                            jax.random.split(jax.random.key(0), 1))
  state_sharding = _state_sharding(abstract, mesh)
  features = lambda p, x: lpips_features(p, lpips_input(x))
  return _Programs(
      init=jax.jit(init, out_shardings=state_sharding),
      run=jax.jit(make_projection_steps(generator, settings, chunk), donate_argnums=0,
                  out_shardings=(state_sharding, NamedSharding(mesh, P(None, DATA_AXIS)))),
      render=jax.jit(lambda v, w, noise: synthesize_projection(generator, v, w, noise),
                     out_shardings=rows),
      features=jax.jit(features),
      distance=jax.jit(lambda p, x, f: features_distance(p, features(p, x), f)))


def project(generator: nn.Module, variables: dict, targets: np.ndarray, *,
            settings: ProjectionSettings = ProjectionSettings(), seed: int = 0,
            class_idx: Optional[int] = None, lpips_params: Optional[dict] = None,
            chunk_steps: Optional[int] = None,
            on_chunk: Optional[Callable[[int, np.ndarray], None]] = None,
            record_frames: bool = False,
            devices: Optional[Sequence[jax.Device]] = None,
            space: str = 'w') -> ProjectionResult:
  """Projects target images into the generator's W (REFERENCE.md §6) or W+ space, all targets as one
  batch.

  Args:
    generator: a Generator.
    variables: its variables.
    targets: uint8 `[N, R, R, C]` (R, C = the generator's resolution and channels); see
      `load_target`.
    settings: hyperparameters (the paper's by default).
    seed: target `i` draws its start noise and its w-noise from `fold_in(key(seed), i)`, so a
      target's result does not depend on the rest of the batch.
    class_idx: the label of a conditional generator (used for all targets and the W statistics).
    lpips_params: LPIPS params; None loads `load_lpips_weights()`.
    chunk_steps: None: the whole optimization is one compiled scan. k: scans of k steps, with
      `on_chunk(steps_done, lpips [N])` and (with `record_frames`) a frame after each.
    on_chunk: progress callback (needs `chunk_steps`).
    record_frames: keep the image after every chunk (`ProjectionResult.frames`).
    devices: the devices to split the targets over (default: this process's). At most N are
      used; the batch is padded with copies of the last target to a multiple of their number.
    space: 'w' (one w for all layers, the paper's) or 'w_plus' (one w per layer; see the module
      docstring).

  Returns:
    A `ProjectionResult`.

  Raises:
    ValueError: targets of the wrong shape or dtype; labels missing for a conditional network;
      an unknown space.
  """
  check_space(space)
  targets = np.asarray(targets)
  r, channels = generator.img_resolution, generator.img_channels
  if targets.ndim != 4 or targets.shape[1:] != (r, r, channels) or targets.dtype != np.uint8:
    raise ValueError(f'targets must be uint8 [N, {r}, {r}, {channels}] for this network, got '
                     f'{targets.dtype} {targets.shape}; load each with load_target(path, {r}, '
                     f'channels={channels})')
  if channels not in (1, 3):
    raise ValueError(f'projection compares RGB or grey images with LPIPS; this network draws '
                     f'{channels} channels')
  if (on_chunk is not None or record_frames) and chunk_steps is None:
    raise ValueError('on_chunk and record_frames need chunk_steps (the steps between reports)')
  num_targets = len(targets)
  labels = class_labels(generator.c_dim, class_idx, 1)
  chunk = settings.num_steps if chunk_steps is None else min(int(chunk_steps), settings.num_steps)
  if chunk < 1:
    raise ValueError(f'chunk_steps {chunk_steps} must be at least 1')

  devices = list(jax.local_devices() if devices is None else devices)[:num_targets]
  generator = modconv_form(generator, fused_modconv(training=False, devices=devices))
  mesh = make_mesh(devices)
  batch = math.ceil(num_targets / len(devices)) * len(devices)
  padded = np.concatenate([targets, np.repeat(targets[-1:], batch - num_targets, axis=0)])
  rows = batch_sharded(mesh)
  programs = _programs(generator, settings, chunk, mesh, space)

  w_avg, w_std = w_statistics(generator, variables, None if labels is None else labels[0],
                              settings.w_avg_samples)
  variables = jax.device_put(variables, replicated(mesh))
  lpips_params = jax.device_put(load_lpips_weights() if lpips_params is None else lpips_params,
                                replicated(mesh))
  target_images = jax.device_put(padded.astype(np.float32) / 127.5 - 1, rows)  # [B, R, R, C]
  target_features = programs.features(lpips_params, target_images)

  keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(seed),
                                                 jnp.minimum(jnp.arange(batch), num_targets - 1))
  keys_init, keys_steps = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)  # 2 x [B]
  keys_init, keys_steps = jax.device_put((keys_init, keys_steps), rows)
  state = programs.init(jnp.asarray(w_avg), keys_init)
  run, render = programs.run, programs.render
  w_std = jnp.float32(w_std)
  outputs, frames = [], []
  for first_step in range(0, settings.num_steps, chunk):
    state, chunk_outputs = run(state, jnp.int32(first_step), variables, lpips_params,
                               target_features, keys_steps, w_std)
    outputs.append(jax.device_get(chunk_outputs))
    done = min(first_step + chunk, settings.num_steps)
    if record_frames:
      frames.append(to_uint8(render(variables, state.params['w'], state.params['noise'])
                             )[:num_targets])
    if on_chunk is not None:
      on_chunk(done, np.asarray(outputs[-1].lpips[done - first_step - 1, :num_targets]))

  steps = StepOutputs(*(np.concatenate(x)[:settings.num_steps, :num_targets]
                        for x in zip(*outputs)))
  images = render(variables, state.params['w'], state.params['noise'])
  final_lpips = programs.distance(lpips_params, images, target_features)
  w = np.asarray(state.params['w'])[:num_targets]
  return ProjectionResult(
      ws=w if space == 'w_plus' else np.repeat(w[:, None], generator.num_ws, axis=1),
      noise=tuple(np.asarray(n)[:num_targets] for n in state.params['noise']),
      images=np.asarray(images)[:num_targets],
      lpips=np.asarray(final_lpips)[:num_targets],
      w_steps=steps.w, lpips_steps=steps.lpips, noise_reg_steps=steps.noise_reg,
      frames=np.stack(frames) if record_frames else None)
