"""Latents from seeds exactly as the official tools draw them, and batched generation."""

import functools
import re
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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


@functools.partial(jax.jit, static_argnames=('generator', 'truncation_psi', 'truncation_cutoff', 'noise_mode'))
def _generate_batch(generator: nn.Module, variables, z, c, truncation_psi, noise, noise_mode,
                    truncation_cutoff):
  return generator.apply(variables, z, c, truncation_psi, truncation_cutoff, noise_mode, noise)


def generate_images(generator: nn.Module, variables: dict, seeds: Sequence[int],
                    truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                    noise_mode: str = 'const', class_idx: Optional[int] = None,
                    batch_size: int = 8) -> np.ndarray:
  """Images `[len(seeds), R, R, C]` (float32, [-1, 1]) for the given seeds.

  z for seed s is `z_from_seed(s)`; batches are padded to `batch_size` so one compiled
  function serves every batch.
  """
  check_choice(noise_mode, NOISE_MODES, 'noise_mode')
  if not seeds:
    raise ValueError('no seeds given; pass e.g. --seeds 0-7')
  resolutions = layer_resolutions(generator.img_resolution)
  out = []
  for start in range(0, len(seeds), batch_size):
    batch = list(seeds[start:start + batch_size])
    padded = batch + [batch[-1]] * (batch_size - len(batch))
    z = np.concatenate([z_from_seed(s, generator.z_dim) for s in padded])
    c = class_labels(generator.c_dim, class_idx, batch_size)
    noise = noise_from_seeds(padded, resolutions) if noise_mode == 'random' else None
    images = _generate_batch(generator, variables, z, c, float(truncation_psi), noise,
                             'const' if noise is not None else noise_mode, truncation_cutoff)
    out.append(np.asarray(images)[:len(batch)])
  return np.concatenate(out)
