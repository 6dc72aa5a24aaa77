"""Inception Score (Salimans et al. 2016) as TF and ADA's `is50k` (REFERENCE.md §5.4).

50,000 generated images; `p(y|x)` is the softmax of the 1008 Inception logits computed **without
the output bias** (ADA `no_output_bias=True`, TF `inception_v3_softmax.pkl`). The images are split
into 10 consecutive parts (`[i n / 10, (i + 1) n / 10)`); per part

  IS = exp( mean_i KL( p(y|x_i) || mean_j p(y|x_j) ) )

and the metric reports the mean and the standard deviation over the parts (`is50k`,
`is50k_std`). Computed in float64 on the host from the logits (log-softmax, so classes with a
probability that underflows contribute 0, not NaN).
"""

import numpy as np
import scipy.special

NUM_SPLITS = 10


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """`log p(y|x)` `[n, classes]` in float64."""
  logits = np.asarray(logits, np.float64)
  return logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)


def split_scores(logits: np.ndarray, num_splits: int = NUM_SPLITS) -> np.ndarray:
  """The Inception Score of each of `num_splits` consecutive parts of `logits [n, classes]`."""
  n = len(logits)
  if n < num_splits:
    raise ValueError(f'the Inception Score with {num_splits} splits needs at least {num_splits} '
                     f'images, got {n}; use more samples (--num-samples)')
  scores = []
  for i in range(num_splits):
    log_p = log_softmax(logits[i * n // num_splits:(i + 1) * n // num_splits])  # [n_i, K]
    p = np.exp(log_p)
    log_marginal = scipy.special.logsumexp(log_p, axis=0) - np.log(len(log_p))  # [K]
    kl = np.sum(p * (log_p - log_marginal), axis=1)  # [n_i]
    scores.append(np.exp(kl.mean()))
  return np.asarray(scores)


def inception_score(logits: np.ndarray, num_splits: int = NUM_SPLITS) -> tuple[float, float]:
  """Mean and standard deviation (numpy's, ddof 0, as the official code) over the splits."""
  scores = split_scores(logits, num_splits)
  return float(scores.mean()), float(scores.std())


def compute_is(ctx, num_samples: int, seed: int, *, metric: str) -> dict[str, float]:
  """`{metric: mean, metric_std: std}` over 10 splits of the generator's images."""
  logits = ctx.generated_features('inception', num_samples, seed)['logits']
  mean, std = inception_score(logits)
  return {metric: mean, f'{metric}_std': std}
