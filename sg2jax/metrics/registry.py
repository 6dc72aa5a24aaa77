"""Metric names -> how to compute them (REFERENCE.md §5.10).

Every metric is `compute(ctx, num_samples, seed) -> {result name: value}` on a
`sg2jax.metrics.context.MetricContext`. The names are the official ones (TF `metric_defaults.py`,
ADA `metric_main.py`), plus `ppl_w` (the short name of `ppl_wend`: PPL in W at path endpoints,
with the FFHQ crop; the paper's "path length" column for FFHQ) and `fid_inf` / `is_inf`
(Chong & Forsyth 2020). `ls` (linear separability, StyleGAN paper) is TF's, not in ADA.
"""

import dataclasses
import functools
from typing import Callable

from sg2jax.metrics import (fd_vgg, fid, fid_inf, inception_score, kid, linear_separability,
                            ppl, precision_recall)

# What a metric needs: the dataset, and which weight files.
DATA, INCEPTION, VGG16, LPIPS = 'data', 'inception', 'vgg16', 'lpips'
# ... or the folder of the 40 CelebA-HQ attribute classifiers (linear separability).
CLASSIFIERS = linear_separability.WEIGHTS_KEY


@dataclasses.dataclass(frozen=True)
class MetricSpec:
  """One named metric.

  Attributes:
    name: the official name (results are `name` or `name_<part>`).
    compute: `(ctx, num_samples, seed) -> {result name: value}`.
    num_samples: generated images (PPL: pairs) by default; `--num-samples` overrides it.
    needs: of DATA, INCEPTION, VGG16, LPIPS, CLASSIFIERS.
    reals: 'none', 'same' (the first `num_samples` dataset images; fewer is an error) or 'all'.
    description: one line for `--list` and the README.
  """
  name: str
  compute: Callable[..., dict[str, float]]
  num_samples: int
  needs: tuple[str, ...]
  reals: str
  description: str


def _specs() -> dict[str, MetricSpec]:
  n = 50_000
  partial = functools.partial
  specs = [
      MetricSpec('fid50k', partial(fid.compute_fid, metric='fid50k', all_reals=False, ddof=1), n,
                 (DATA, INCEPTION), 'same',
                 'FID, 50k generated vs the first 50k reals (x-flipped if the run mirrored), '
                 "covariance N-1: the paper's FID (TF)"),
      MetricSpec('fid50k_full', partial(fid.compute_fid, metric='fid50k_full', all_reals=True,
                                        ddof=0), n, (DATA, INCEPTION), 'all',
                 'FID, 50k generated vs every real image, no flips, covariance N (ADA)'),
      MetricSpec('fd_vgg2k', partial(fd_vgg.compute_fd_vgg, metric='fd_vgg2k', all_reals=False,
                                     ddof=1), 2_000, (DATA, LPIPS), 'same',
                 "Frechet distance of LPIPS's ImageNet VGG16 features (relu5_3 at 64x64, mean "
                 "over positions), 2k generated vs the first 2k reals: not the paper's FID; "
                 'compares runs of one setup, needs no weights file'),
      MetricSpec('fd_vgg50k_full', partial(fd_vgg.compute_fd_vgg, metric='fd_vgg50k_full',
                                           all_reals=True, ddof=0), n, (DATA, LPIPS), 'all',
                 'fd_vgg2k with 50k generated vs every real image, no flips, covariance N'),
      MetricSpec('kid50k_full', partial(kid.compute_kid, metric='kid50k_full'), n,
                 (DATA, INCEPTION), 'all',
                 'KID, 50k generated vs all reals (<= 1M), 100 subsets of 1000 (ADA; raw, '
                 'not x 10^3)'),
      MetricSpec('is50k', partial(inception_score.compute_is, metric='is50k'), n, (INCEPTION,),
                 'none', 'Inception Score, 50k generated, 10 splits: is50k (mean), is50k_std'),
      MetricSpec('pr50k3', partial(precision_recall.compute_pr, metric='pr50k3', all_reals=False),
                 n, (DATA, VGG16), 'same',
                 'precision/recall, k=3, 50k generated vs the first 50k reals (x-flipped if the '
                 "run mirrored): the paper's P/R (TF)"),
      MetricSpec('pr50k3_full', partial(precision_recall.compute_pr, metric='pr50k3_full',
                                        all_reals=True), n, (DATA, VGG16), 'all',
                 'precision/recall, k=3, 50k generated vs all reals (<= 200k), no flips (ADA)'),
  ]
  for space in ppl.SPACES:
    for sampling in ppl.SAMPLINGS:
      name = f'ppl_{space}{sampling}'
      where = 't ~ U(0, 1)' if sampling == 'full' else 'path endpoints'
      specs.append(MetricSpec(
          name, partial(ppl.compute_ppl, metric=name, space=space, sampling=sampling, crop=True),
          n, (LPIPS,), 'none', f'PPL in {space.upper()}, {where}, FFHQ face crop, 50k pairs'))
  specs += [
      MetricSpec('ppl2_wend', partial(ppl.compute_ppl, metric='ppl2_wend', space='w',
                                      sampling='end', crop=False), n, (LPIPS,), 'none',
                 "PPL in W, path endpoints, full image (no crop): the paper's LSUN path length"),
      MetricSpec('ppl_w', partial(ppl.compute_ppl, metric='ppl_w', space='w', sampling='end',
                                  crop=True), n, (LPIPS,), 'none',
                 "short name of ppl_wend: PPL in W at path endpoints, FFHQ crop (the paper's "
                 'FFHQ path length)'),
      MetricSpec('ls', partial(linear_separability.compute_ls, metric='ls'),
                 linear_separability.NUM_SAMPLES, (CLASSIFIERS,), 'none',
                 'linear separability in Z and W (ls_z, ls_w), 200k generated, 40 CelebA-HQ '
                 'attribute classifiers (faces >= 256x256; StyleGAN paper, TF)'),
      MetricSpec('fid_inf', partial(fid_inf.compute_fid_inf, metric='fid_inf'), n,
                 (DATA, INCEPTION), 'all',
                 'FID-infinity (Chong & Forsyth): FID at 15 sizes 5k..50k (Sobol latents) vs '
                 'all reals, extrapolated to 1/N = 0'),
      MetricSpec('is_inf', partial(fid_inf.compute_is_inf, metric='is_inf'), n, (INCEPTION,),
                 'none', 'IS-infinity (Chong & Forsyth): IS at 15 sizes 5k..50k (Sobol latents), '
                 'extrapolated to 1/N = 0'),
  ]
  return {spec.name: spec for spec in specs}


METRICS = _specs()


def known_metrics() -> list[str]:
  """Every metric name, in the registry's order."""
  return list(METRICS)


def get_metric(name: str) -> MetricSpec:
  """The metric `name`.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  if name not in METRICS:
    raise ValueError(f'unknown metric {name!r}; known metrics: {", ".join(known_metrics())}')
  return METRICS[name]


def parse_metrics(text: str | list[str] | tuple[str, ...]) -> list[MetricSpec]:
  """`'fid50k_full,ppl_w'` (or a list of names) -> specs, each checked, duplicates dropped."""
  names = text.split(',') if isinstance(text, str) else list(text)
  names = [n.strip() for n in names if n.strip()]
  if not names:
    raise ValueError(f'no metric given; known metrics: {", ".join(known_metrics())}')
  return [get_metric(n) for n in dict.fromkeys(names)]
