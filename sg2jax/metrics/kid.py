"""Kernel Inception Distance (Bińkowski et al. 2018) with ADA's subsets (REFERENCE.md §5.3).

`kid50k_full`: 50,000 generated images against every dataset image (at most 1,000,000), the
2048-d Inception pool3 features. With `m = min(n_real, n_gen, 1000)`, for each of 100 subsets
draw m generated (x) and m real (y) features without replacement and add the unbiased squared
MMD with the kernel `k(a, b) = (a . b / d + 1)^3`:

  t += (sum(K_xx + K_yy) - trace(K_xx + K_yy)) / (m - 1) - 2 sum(K_xy) / m

and report `KID = t / 100 / m` (raw; papers often print it x 10^3). Each subset's term divided by
m is `mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)`.
Computed in float64 on the host (ADA multiplies its float32 features in float32), subsets drawn
from `numpy.random.default_rng(seed)`.
"""

import numpy as np

NUM_SUBSETS = 100
MAX_SUBSET_SIZE = 1000
MAX_REAL = 1_000_000


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """`(a b^T / d + 1)^3` for `a [n, d]`, `b [m, d]` -> `[n, m]`."""
  return (a @ b.T / a.shape[1] + 1) ** 3


def kernel_inception_distance(real: np.ndarray, generated: np.ndarray, seed: int,
                              num_subsets: int = NUM_SUBSETS,
                              max_subset_size: int = MAX_SUBSET_SIZE) -> float:
  """KID of two feature sets `[n, d]` (see the module docstring).

  Raises:
    ValueError: fewer than 2 features in a set, or sets of different widths.
  """
  if real.shape[1:] != generated.shape[1:]:
    raise ValueError(f'feature sets of different widths: {real.shape} vs {generated.shape}')
  m = min(len(real), len(generated), max_subset_size)
  if m < 2:
    raise ValueError(f'KID needs at least 2 real and 2 generated features, got {len(real)} and '
                     f'{len(generated)}; use more samples (--num-samples)')
  rng = np.random.default_rng(seed)
  t = 0.0
  for _ in range(num_subsets):
    x = np.asarray(generated[rng.choice(len(generated), m, replace=False)], np.float64)
    y = np.asarray(real[rng.choice(len(real), m, replace=False)], np.float64)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = k_xx.sum() + k_yy.sum() - np.trace(k_xx) - np.trace(k_yy)
    t += within / (m - 1) - 2 * k_xy.sum() / m
  return float(t / num_subsets / m)


def compute_kid(ctx, num_samples: int, seed: int, *, metric: str) -> dict[str, float]:
  """KID of the context's generator against up to 1,000,000 dataset images (no flips)."""
  real = ctx.real_features('inception', 'pool3', None, False, metric, max_real=MAX_REAL)
  gen = ctx.generated_features('inception', num_samples, seed)['pool3']
  return {metric: kernel_inception_distance(real, gen, seed)}
