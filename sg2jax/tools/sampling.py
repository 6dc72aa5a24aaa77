"""Latents from seeds exactly as the official tools draw them, and batched generation."""

import functools
import re
from typing import Optional, Sequence

import flax.linen as nn
import jax
import numpy as np

from sg2jax.networks.generator import fused_modconv, modconv_form
from sg2jax.networks.synthesis import check_choice, NOISE_MODES


def parse_range(text: str) -> list[int]:
  """`'0-3,7,10-11'` -> `[0, 1, 2, 3, 7, 10, 11]` (as the official `num_range`)."""
  values: list[int] = []
  for part in str(text).split(','):
    part = part.strip()
    match = re.fullmatch(r'(\d+)-(\d+)', part)
    if match:
      lo, hi = int(match.group(1)), int(match.group(2))
      if hi < lo:
        raise ValueError(f'range {part!r} is empty; write low-high, e.g. 0-7')
      values.extend(range(lo, hi + 1))
    elif re.fullmatch(r'\d+', part):
      values.append(int(part))
    else:
      raise ValueError(f'{part!r} is not a number or a range; use e.g. 0-7 or 1,5,9')
  return values


def z_from_seed(seed: int, z_dim: int) -> np.ndarray:
  """`np.random.RandomState(seed).randn(1, z_dim)` as float32 `[1, z_dim]` (official generate.py;
  the official mapping casts its float64 z to float32 first)."""
  if not 0 <= seed < 2 ** 32:
    raise ValueError(f'seed {seed} is outside [0, 2**32 - 1] (numpy RandomState seeds)')
  return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


MODCONV_FORMS = ('auto', 'fused', 'unfused')


def with_modconv(generator: nn.Module, form: str = 'auto') -> nn.Module:
  """`generator` with its modulated convolutions in `form` (same values up to float rounding):
  - 'fused': a per-sample modulated kernel, one grouped convolution (the official default);
  - 'unfused': the shared kernel between per-sample scalings of the input and output channels;
  - 'auto': as `sg2jax.networks.generator.fused_modconv` decides for generating on this
    process's first device (the one a jitted call runs on): unfused on the CPU backend, where
    grouped convolutions are slow, fused on a GPU or TPU (`benchmarks/accelerator.py` reports
    the generation speed of both on a chip).
  Networks without modulated convolutions (StyleGAN, config A) are returned as they are."""
  check_choice(form, MODCONV_FORMS, 'modconv form')
  if form == 'auto':
    return modconv_form(generator, fused_modconv(training=False, devices=jax.local_devices()[:1]))
  return modconv_form(generator, form == 'fused')


def class_labels(c_dim: int, class_idx: Optional[int], count: int) -> Optional[np.ndarray]:
  """One-hot labels `[count, c_dim]` for a conditional network, None for an unconditional one."""
  if c_dim == 0:
    if class_idx is not None:
      raise ValueError('--class is only for conditional networks; this one has c_dim = 0')
    return None
  if class_idx is None:
    raise ValueError(f'this network is conditional ({c_dim} classes): pass --class N')
  if not 0 <= class_idx < c_dim:
    raise ValueError(f'--class {class_idx} is out of range; this network has classes 0-{c_dim - 1}')
  labels = np.zeros((count, c_dim), np.float32)
  labels[:, class_idx] = 1
  return labels


def noise_from_seeds(seeds: Sequence[int], layer_resolutions: Sequence[int]) -> list[np.ndarray]:
  """Per-layer unit noise `[N, res, res, 1]` drawn from each seed, for `noise_mode='random'`.

  One key per seed, so an image does not depend on what else is in its batch. (The official
  tools draw torch noise; random-noise images are not expected to match them.)
  """
  maps = [[] for _ in layer_resolutions]
  for seed in seeds:
    keys = jax.random.split(jax.random.key(seed), len(layer_resolutions))
    for i, (key, res) in enumerate(zip(keys, layer_resolutions)):
      maps[i].append(np.asarray(jax.random.normal(key, (res, res, 1))))
  return [np.stack(m) for m in maps]


def layer_resolutions(img_resolution: int) -> list[int]:
  """Output resolution of each synthesis conv layer (layer order = TF `noise0..`)."""
  k = int(img_resolution).bit_length() - 1
  return [4] + [2 ** r for r in range(3, k + 1) for _ in range(2)]


# ----------------------------------------------------------------------------------------------
# Mapping and synthesis in padded batches.

def map_latents(generator: nn.Module, variables: dict, z: np.ndarray,
                truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                class_idx: Optional[int] = None) -> np.ndarray:
  """ws `[N, num_ws, w_dim]` of latents `z [N, z_dim]` (truncation towards the stored w_avg)."""
  z = np.asarray(z, np.float32)
  c = class_labels(generator.c_dim, class_idx, len(z))
  ws = _map_batch(generator, variables, z, c, float(truncation_psi), truncation_cutoff)
  return np.asarray(ws)


def map_seeds(generator: nn.Module, variables: dict, seeds: Sequence[int],
              truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
              class_idx: Optional[int] = None) -> np.ndarray:
  """ws `[len(seeds), num_ws, w_dim]`; z of seed s is `RandomState(s).randn(1, z_dim)`."""
  if not seeds:
    raise ValueError('no seeds given; pass e.g. --seeds 0-7')
  z = np.concatenate([z_from_seed(s, generator.z_dim) for s in seeds])
  return map_latents(generator, variables, z, truncation_psi, truncation_cutoff, class_idx)


# psi is static: psi = 1 then skips the truncation exactly.
@functools.partial(jax.jit, static_argnames=('generator', 'truncation_psi', 'truncation_cutoff'))
def _map_batch(generator, variables, z, c, truncation_psi, truncation_cutoff):
  return generator.apply(variables, z, c, truncation_psi, truncation_cutoff, method='map')


@functools.partial(jax.jit, static_argnames=('generator', 'noise_mode'))
def _synthesize_batch(generator, variables, ws, noise, noise_mode):
  return generator.apply(variables, ws, noise_mode, noise, method='synthesize')


def synthesize(generator: nn.Module, variables: dict, ws: np.ndarray, noise_mode: str = 'const',
               noise_seeds: Optional[Sequence[int]] = None, batch_size: int = 8) -> np.ndarray:
  """Images `[N, R, R, C]` (float, [-1, 1]) of ws `[N, num_ws, w_dim]`.

  Args:
    generator: a Generator.
    variables: its variables.
    ws: `[N, num_ws, w_dim]`.
    noise_mode: 'const' (the stored maps, as the official figures), 'random' or 'none'.
    noise_seeds: with 'random', the seed of each image's noise maps (`noise_from_seeds`), so an
      image does not depend on its batch; default 0..N-1.
    batch_size: images per compiled call (the last batch is padded).
  """
  check_choice(noise_mode, NOISE_MODES, 'noise_mode')
  ws = np.asarray(ws, np.float32)
  if ws.ndim != 3 or ws.shape[1:] != (generator.num_ws, generator.w_dim):
    raise ValueError(f'ws must be [N, {generator.num_ws}, {generator.w_dim}] for this network, '
                     f'got {list(ws.shape)}')
  if noise_mode == 'random':
    noise_seeds = list(range(len(ws))) if noise_seeds is None else list(noise_seeds)
    resolutions = layer_resolutions(generator.img_resolution)
  out = []
  for start in range(0, len(ws), batch_size):
    batch = ws[start:start + batch_size]
    count = len(batch)
    batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, axis=0)])
    noise = None
    if noise_mode == 'random':
      seeds = noise_seeds[start:start + count]
      noise = noise_from_seeds(seeds + [seeds[-1]] * (batch_size - count), resolutions)
    images = _synthesize_batch(generator, variables, batch, noise,
                             'const' if noise is not None else noise_mode)
    out.append(np.asarray(images)[:count])
  return np.concatenate(out)


def generate_images(generator: nn.Module, variables: dict, seeds: Sequence[int],
                    truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                    noise_mode: str = 'const', class_idx: Optional[int] = None,
                    batch_size: int = 8) -> np.ndarray:
  """Images `[len(seeds), R, R, C]` (float32, [-1, 1]) for the given seeds: z of seed s is
  `z_from_seed(s)`, random noise (if asked) drawn from s too (`synthesize`)."""
  ws = map_seeds(generator, variables, seeds, truncation_psi, truncation_cutoff, class_idx)
  return synthesize(generator, variables, ws, noise_mode, noise_seeds=seeds,
                    batch_size=batch_size)
