"""Effectively unbiased FID-infinity and IS-infinity (Chong & Forsyth, CVPR 2020).

FID and IS computed from N samples are biased, with a bias that is (to first order) linear in
1/N: `FID_N = FID_inf + k / N`. The estimate:
1. Generate `N_max` images (50,000) from **scrambled Sobol** latents mapped through the inverse
   normal CDF (quasi-Monte Carlo: less variance than i.i.d. normal draws).
2. For 15 sizes `N` evenly spaced from `N_max / 10` (5,000) to `N_max`: shuffle the features,
   compute FID (resp. IS, one split) of the first N.
3. Fit `value = a + b / N` by least squares; report the intercept `a` (`1/N -> 0`).

FID uses every dataset image as the reference (as `fid50k_full`, no flips) with `np.cov`
statistics (N - 1) for both sets, as the authors' code (pytorch-fid's FID).
"""

import warnings
from typing import Sequence

import numpy as np
import scipy.special
import scipy.stats.qmc

from sg2jax.metrics.fid import feature_statistics, frechet_distance
from sg2jax.metrics.inception_score import split_scores

NUM_POINTS = 15
MIN_FRACTION = 0.1  # smallest size: 5,000 of 50,000


def sample_sizes(num_max: int, num_points: int = NUM_POINTS,
                 min_fraction: float = MIN_FRACTION) -> np.ndarray:
  """`linspace(num_max * min_fraction, num_max, num_points)` as distinct integers (>= 2)."""
  sizes = np.linspace(max(2, int(num_max * min_fraction)), num_max, num_points).astype(np.int64)
  sizes = np.unique(sizes)
  if len(sizes) < 2:
    raise ValueError(f'extrapolating to infinity needs at least 2 distinct sample sizes; '
                     f'{num_max} samples give {len(sizes)}; use more (--num-samples)')
  return sizes


def extrapolate_to_infinity(sizes: Sequence[int], values: Sequence[float]) -> tuple[float, float]:
  """Least-squares fit of `values = a + b / sizes`; returns `(a, b)` (a: the value at N = inf)."""
  x = 1.0 / np.asarray(sizes, np.float64)
  design = np.stack([np.ones_like(x), x], axis=1)  # [P, 2]
  (intercept, slope), *_ = np.linalg.lstsq(design, np.asarray(values, np.float64), rcond=None)
  return float(intercept), float(slope)


def fid_infinity(real_mu: np.ndarray, real_sigma: np.ndarray, generated: np.ndarray,
                 sizes: Sequence[int], seed: int) -> tuple[float, np.ndarray]:
  """FID-infinity and the FIDs at `sizes` (each on a fresh shuffle of `generated [n, d]`)."""
  rng = np.random.default_rng(seed)
  fids = []
  for size in sizes:
    subset = generated[rng.permutation(len(generated))[:size]]
    fids.append(frechet_distance(real_mu, real_sigma, *feature_statistics(subset, ddof=1)))
  fids = np.asarray(fids)
  return extrapolate_to_infinity(sizes, fids)[0], fids


def is_infinity(logits: np.ndarray, sizes: Sequence[int], seed: int) -> tuple[float, np.ndarray]:
  """IS-infinity and the Inception Scores (one split) at `sizes` of `logits [n, classes]`."""
  rng = np.random.default_rng(seed)
  scores = np.asarray([split_scores(logits[rng.permutation(len(logits))[:size]], 1)[0]
                       for size in sizes])
  return extrapolate_to_infinity(sizes, scores)[0], scores


def sobol_normal_latents(seed: int, batch_size: int, z_dim: int):
  """`batch_index -> z [batch_size, z_dim]`: points `b * batch_size ...` of one scrambled Sobol
  sequence (seeded) through the inverse normal CDF. Stateless: any batch, in any order."""

  def latents(index: int) -> np.ndarray:
    engine = scipy.stats.qmc.Sobol(d=z_dim, scramble=True, seed=seed)
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', UserWarning)  # "balance properties" of non-2^m counts
      if index:  # scipy's fast_forward(0) fails
        engine.fast_forward(index * batch_size)
      points = engine.random(batch_size)
    eps = np.finfo(np.float64).eps
    return scipy.special.ndtri(np.clip(points, eps, 1 - eps)).astype(np.float32)

  return latents


def compute_fid_inf(ctx, num_samples: int, seed: int, *, metric: str) -> dict[str, float]:
  """FID-infinity of the context's generator (Inception pool3) against every dataset image."""
  real_mu, real_sigma = ctx.real_statistics('inception', 'pool3', None, False, 1, metric)
  latents = sobol_normal_latents(seed, ctx.batch_size, ctx.generator.z_dim)
  gen = ctx.generated_features('inception', num_samples, seed, latents, 'sobol')['pool3']
  value, _ = fid_infinity(real_mu, real_sigma, gen, sample_sizes(num_samples), seed)
  return {metric: value}


def compute_is_inf(ctx, num_samples: int, seed: int, *, metric: str) -> dict[str, float]:
  """IS-infinity of the context's generator (Inception logits without the output bias)."""
  latents = sobol_normal_latents(seed, ctx.batch_size, ctx.generator.z_dim)
  logits = ctx.generated_features('inception', num_samples, seed, latents, 'sobol')['logits']
  value, _ = is_infinity(logits, sample_sizes(num_samples), seed)
  return {metric: value}
