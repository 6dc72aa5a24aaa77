"""Fréchet Inception Distance (Heusel et al. 2017) as in the paper and in ADA (REFERENCE.md §5.2).

`FID = ||mu_r - mu_g||^2 + Tr(Sigma_r + Sigma_g - 2 sqrtm(Sigma_g Sigma_r))` (real part) on the
2048-d Inception-v3 pool3 features of uint8 images at full resolution (`context.py`).

- `fid50k` (TF, the paper): 50,000 generated images against the **first** 50,000 dataset images
  (unshuffled), x-flipped at random when the run trained with mirror augmentation; covariance
  with `N - 1` (`np.cov`).
- `fid50k_full` (ADA): 50,000 generated against every dataset image, no flips; covariance with
  `N` (ADA's `FeatureStats`).

Statistics are accumulated in float64 on the host (`feature_moments`) and the matrix square root
is `scipy.linalg.sqrtm`, both in float64.
"""

import numpy as np
import scipy.linalg

# Rows of a feature matrix converted to float64 at a time (bounds host memory).
_CHUNK = 4096


def feature_moments(features: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
  """`(n, sum_i x_i, sum_i x_i x_i^T)` of `features [n, d]`, in float64, chunk by chunk."""
  n, d = features.shape
  total, outer = np.zeros(d), np.zeros((d, d))
  for start in range(0, n, _CHUNK):
    x = np.asarray(features[start:start + _CHUNK], np.float64)
    total += x.sum(axis=0)
    outer += x.T @ x
  return n, total, outer


def statistics_from_moments(n: int, total: np.ndarray, outer: np.ndarray,
                            ddof: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance `(sum x x^T - n mu mu^T) / (n - ddof)` from `feature_moments`.

  Args:
    ddof: 1 for `np.cov` (TF `fid50k`, the paper), 0 for ADA's `fid50k_full`.
  """
  if n - ddof <= 0:
    raise ValueError(f'a covariance needs more than {ddof} feature vector(s), got {n}; '
                     f'use more samples (--num-samples)')
  mu = total / n
  sigma = (outer - n * np.outer(mu, mu)) / (n - ddof)
  return mu, sigma


def feature_statistics(features: np.ndarray, ddof: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean `[d]` and covariance `[d, d]` (float64) of `features [n, d]`."""
  return statistics_from_moments(*feature_moments(features), ddof=ddof)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """`||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))`, real part
  (REFERENCE.md §5.2).

  `Tr sqrtm(sigma1 sigma2) = Tr sqrtm(sigma2 sigma1)`, so the order of the sets does not matter.
  `sqrtm` of a singular product (fewer samples than dimensions) may carry small imaginary parts
  from rounding; as the official code, only the real part is used.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f'feature statistics of different sizes: {mu1.shape} vs {mu2.shape}')
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  mean_term = float(np.sum(np.square(mu1 - mu2)))
  return float(np.real(mean_term + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)))


def fid_from_features(real: np.ndarray, generated: np.ndarray, ddof: int) -> float:
  """FID of two feature sets `[n, d]` with covariance normalization `n - ddof`."""
  return frechet_distance(*feature_statistics(real, ddof), *feature_statistics(generated, ddof))


def compute_fid(ctx, num_samples: int, seed: int, *, metric: str, all_reals: bool,
                ddof: int) -> dict[str, float]:
  """FID of the context's generator against its dataset.

  Args:
    ctx: `sg2jax.metrics.context.MetricContext`.
    num_samples: generated images.
    seed: latents and noise.
    metric: the metric's name (result key, error messages).
    all_reals: every dataset image, no flips (`fid50k_full`); else the first `num_samples`
      (an error if the dataset holds fewer), x-flipped if the run mirrored (`fid50k`).
    ddof: covariance normalization `n - ddof`.
  """
  num_real, mirror = (None, False) if all_reals else (num_samples, ctx.mirror)
  real_mu, real_sigma = ctx.real_statistics('inception', 'pool3', num_real, mirror, ddof, metric)
  gen = ctx.generated_features('inception', num_samples, seed)['pool3']
  return {metric: frechet_distance(real_mu, real_sigma, *feature_statistics(gen, ddof))}
