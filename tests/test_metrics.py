"""The metrics of REFERENCE.md §5: every formula on synthetic features with known answers, and the
sharded extraction (`MetricContext`) against a direct computation of the documented protocol.

Feature networks here are small stand-ins (`fake_detector`): the real Inception/VGG16/LPIPS are
golden-tested in test_feature_nets.py and run end to end in test_eval_cli.py.
"""

import dataclasses
import json
import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sg2jax.data.sources import FolderSource, ShapesSource
from sg2jax.images import to_uint8
from sg2jax.metrics import fid, fid_inf, inception_score, kid, ppl, precision_recall, registry
from sg2jax.metrics.context import (Detector, MetricContext, batch_key_data, put, uint8_values,
                                    weights_fingerprint)
from sg2jax.metrics.evaluate import check_requirements, make_training_hook, run_metrics
from sg2jax.networks import Generator
from sg2jax.sharding import make_mesh, replicated


# ----------------------------------------------------------------------------------------------
# Direct (numpy) references.

def direct_fid(real: np.ndarray, gen: np.ndarray, ddof: int) -> float:
  """FID with np.mean / np.cov and the trace of the square root from eigenvalues:
  `Tr sqrtm(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2))`, S1^1/2 from `eigh`."""
  mu1, mu2 = real.mean(0), gen.mean(0)
  s1, s2 = np.cov(real, rowvar=False, ddof=ddof), np.cov(gen, rowvar=False, ddof=ddof)
  vals, vecs = np.linalg.eigh(s1)
  root = vecs @ np.diag(np.sqrt(np.clip(vals, 0, None))) @ vecs.T
  inner = np.linalg.eigvalsh(root @ s2 @ root)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def direct_kid_one_subset(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 by explicit loops."""
  m, d = len(x), x.shape[1]
  k = lambda a, b: (a @ b / d + 1) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
  return xx + yy - 2 * xy


def direct_precision_recall(real: np.ndarray, gen: np.ndarray, k: int = 3):
  """Kynkäänniemi et al. with every pairwise distance in float64."""
  dist = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
  radii_real = np.sort(dist(real, real), axis=1)[:, k]
  radii_gen = np.sort(dist(gen, gen), axis=1)[:, k]
  precision = (dist(gen, real) <= radii_real[None]).any(1).mean()
  recall = (dist(real, gen) <= radii_gen[None]).any(1).mean()
  return precision, recall


# ----------------------------------------------------------------------------------------------
# FID.

def gaussian_features(rng, n, mean, cov):
  return rng.multivariate_normal(mean, cov, size=n)


def test_fid_of_identical_sets_is_zero():
  x = np.random.default_rng(0).normal(size=(300, 16)) @ np.diag(np.linspace(0.1, 3, 16))
  for ddof in (0, 1):
    assert abs(fid.fid_from_features(x, x, ddof)) < 1e-9


def test_frechet_distance_gaussian_closed_forms():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  a, b = rng.uniform(0.2, 3, 8), rng.uniform(0.2, 3, 8)
  # Commuting covariances Q diag(a) Q^T, Q diag(b) Q^T: ||mu1 - mu2||^2 + sum (sqrt a - sqrt b)^2.
  q = np.linalg.qr(rng.normal(size=(8, 8)))[0]
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = fid.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
  np.testing.assert_allclose(got, want, rtol=1e-10)
  # Scalar case: N(m1, s1^2) vs N(m2, s2^2) -> (m1 - m2)^2 + (s1 - s2)^2.
  np.testing.assert_allclose(fid.frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]), 9 + 1,
                             rtol=1e-12)


def test_fid_matches_a_direct_numpy_computation():
  """General (non-commuting) covariances, more rows than one float64 chunk (4096)."""
  rng = np.random.default_rng(2)
  real = gaussian_features(rng, 5000, rng.normal(size=12), np.cov(rng.normal(size=(12, 40))))
  gen = gaussian_features(rng, 700, rng.normal(size=12), np.cov(rng.normal(size=(12, 30))))
  for ddof in (0, 1):
    mu, sigma = fid.feature_statistics(real.astype(np.float32), ddof)
    np.testing.assert_allclose(sigma, np.cov(real.astype(np.float32), rowvar=False, ddof=ddof),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fid.fid_from_features(real, gen, ddof), direct_fid(real, gen, ddof),
                               rtol=1e-8)


def test_fid_covariance_normalization_differs():
  """fid50k (np.cov, N - 1) and fid50k_full (N) differ on small sets as the definitions say."""
  rng = np.random.default_rng(3)
  real, gen = rng.normal(size=(20, 3)), rng.normal(size=(20, 3)) + 1
  assert abs(fid.fid_from_features(real, gen, 1) - fid.fid_from_features(real, gen, 0)) > 1e-3
  with pytest.raises(ValueError, match='a covariance needs more than 1 feature vector'):
    fid.feature_statistics(real[:1], ddof=1)


# ----------------------------------------------------------------------------------------------
# KID.

def test_kid_subset_term_is_the_unbiased_mmd():
  """With m = n every subset is a permutation of the whole set, so KID is exactly MMD^2_u."""
  rng = np.random.default_rng(4)
  real, gen = rng.normal(size=(25, 6)), rng.normal(size=(25, 6)) * 1.5 + 0.3
  got = kid.kernel_inception_distance(real, gen, seed=0, num_subsets=3)
  np.testing.assert_allclose(got, direct_kid_one_subset(gen, real), rtol=1e-10)


def test_kid_is_the_mean_over_random_subsets():
  """m = min(60, 50, 20) = 20; each of the subsets draws m generated, then m real features
  without replacement from `default_rng(seed)`."""
  rng = np.random.default_rng(5)
  real, gen = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
  got = kid.kernel_inception_distance(real, gen, seed=1, num_subsets=4, max_subset_size=20)
  draws = np.random.default_rng(1)
  terms = []
  for _ in range(4):
    x = gen[draws.choice(50, 20, replace=False)]
    terms.append(direct_kid_one_subset(x, real[draws.choice(60, 20, replace=False)]))
  np.testing.assert_allclose(got, np.mean(terms), rtol=1e-10)
  shifted = kid.kernel_inception_distance(real, gen + 2, seed=1, max_subset_size=20)
  assert shifted > 10 * abs(kid.kernel_inception_distance(real, gen, seed=1, max_subset_size=20))
  with pytest.raises(ValueError, match='KID needs at least 2 real and 2 generated'):
    kid.kernel_inception_distance(real[:1], gen, seed=0)


# ----------------------------------------------------------------------------------------------
# Inception Score.

def test_inception_score_known_answers():
  k, n = 8, 80
  # Identical p(y|x): every KL is 0 -> IS = 1.
  same = np.tile(np.random.default_rng(6).normal(size=(1, k)), (n, 1))
  np.testing.assert_allclose(inception_score.inception_score(same), (1.0, 0.0), atol=1e-12)
  # Logits c * onehot(i mod K): uniform marginal, p = (e^c, 1, ..., 1) / Z for every image,
  # so IS = K exp(-H(p)) in every split (each split holds every class equally often).
  c = 3.0
  logits = c * np.eye(k)[np.arange(n) % k]
  p = np.array([math.exp(c)] + [1.0] * (k - 1)) / (math.exp(c) + k - 1)
  want = k * math.exp(np.sum(p * np.log(p)))
  mean, std = inception_score.inception_score(logits, num_splits=10)
  np.testing.assert_allclose([mean, std], [want, 0.0], atol=1e-12)
  # Large logits: p underflows to 0 for other classes; no NaN, IS -> K.
  np.testing.assert_allclose(inception_score.inception_score(1e4 * np.eye(k)[np.arange(n) % k],
                                                             num_splits=10)[0], k, rtol=1e-12)


def test_inception_score_splits():
  """Split i holds classes {0..2^i - 1} one-hot: split IS = 2^i; mean/std (ddof 0) over splits."""
  blocks = [1e4 * np.eye(16)[np.arange(16) % (2 ** i)] for i in range(4)]  # 4 splits of 16
  mean, std = inception_score.inception_score(np.concatenate(blocks), num_splits=4)
  np.testing.assert_allclose([mean, std], [np.mean([1, 2, 4, 8]), np.std([1, 2, 4, 8])],
                             rtol=1e-12)
  with pytest.raises(ValueError, match='needs at least 10 images, got 9'):
    inception_score.inception_score(np.zeros((9, 4)))


# ----------------------------------------------------------------------------------------------
# Precision and recall.

@pytest.fixture(scope='module')
def blocks4():
  """Small blocks so that rows and columns are padded and split over 4 devices."""
  return precision_recall.NeighbourhoodBlocks(make_mesh(), row_batch=6, col_batch=7)


def test_precision_recall_of_identical_sets_is_one(blocks4):
  x = np.random.default_rng(7).normal(size=(23, 10)).astype(np.float32)
  assert precision_recall.precision_recall(x, x, blocks4) == (1.0, 1.0)


def test_precision_recall_by_hand(blocks4):
  """1-D: reals 0..4 have 3rd-neighbour radii (3, 2, 2, 2, 3); fakes 0.5, 6.9, 7.5, 20 have
  radii (19.5, 13.1, 12.5, 19.5). Covered fakes: 0.5, 6.9 (|6.9 - 4| = 2.9 <= 3) -> P = 1/2;
  every real lies within 19.5 of 0.5 -> R = 1."""
  real = np.arange(5, dtype=np.float32)[:, None]
  gen = np.array([[0.5], [6.9], [7.5], [20.0]], np.float32)
  np.testing.assert_allclose(blocks4.radii(real), np.square([3, 2, 2, 2, 3]), rtol=1e-6)
  assert precision_recall.precision_recall(real, gen, blocks4) == (0.5, 1.0)


@pytest.mark.parametrize('devices', [1, 4])
def test_precision_recall_matches_brute_force(devices, blocks4):
  rng = np.random.default_rng(8)
  real = rng.normal(size=(37, 6)).astype(np.float32)
  gen = (rng.normal(size=(41, 6)) * 1.3 + 0.4).astype(np.float32)
  blocks = blocks4 if devices == 4 else precision_recall.NeighbourhoodBlocks(
      make_mesh(jax.devices()[:1]), row_batch=10, col_batch=9)
  got = precision_recall.precision_recall(real, gen, blocks)
  want = direct_precision_recall(real.astype(np.float64), gen.astype(np.float64))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
  assert 0 < got[0] < 1 and 0 < got[1] < 1
  with pytest.raises(ValueError, match='needs more than 3 images per set, got 3'):
    blocks.radii(real[:3])


# ----------------------------------------------------------------------------------------------
# Perceptual path length.

def test_slerp():
  rng = np.random.default_rng(9)
  a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  theta = np.arccos(np.sum(unit(a) * unit(b), axis=1))
  t = np.array([0.0, 0.25, 0.5, 0.9, 1.0], np.float32)
  out = np.asarray(ppl.slerp_directions(jnp.asarray(a, jnp.float32),
                                        jnp.asarray(b, jnp.float32), jnp.asarray(t)))
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
  np.testing.assert_allclose(out[0], unit(a)[0], atol=1e-6)
  np.testing.assert_allclose(out[4], unit(b)[4], atol=1e-5)
  # On the great circle: angle t * theta from a, (1 - t) * theta from b.
  np.testing.assert_allclose(np.arccos(np.clip(np.sum(out * unit(a), 1), -1, 1)), t * theta,
                             atol=1e-3)
  np.testing.assert_allclose(np.arccos(np.clip(np.sum(out * unit(b), 1), -1, 1)),
                             (1 - t) * theta, atol=1e-3)


def test_ppl_crop_and_downsample():
  # 1024: crop rows 384-895, cols 256-767 (512) -> f = 512 // 256 = 2 -> 256 (TF; REFERENCE.md §5.6)
  shape = jax.eval_shape(lambda x: ppl.crop_and_downsample(x, True),
                         jax.ShapeDtypeStruct((1, 1024, 1024, 3), jnp.float32)).shape
  assert shape == (1, 256, 256, 3)
  shape = jax.eval_shape(lambda x: ppl.crop_and_downsample(x, False),
                         jax.ShapeDtypeStruct((1, 1024, 1024, 3), jnp.float32)).shape
  assert shape == (1, 256, 256, 3)
  # 32x32: c = 4, rows 12..27, cols 8..23, no downsampling.
  rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing='ij')
  coded = np.stack([rows, cols, rows * 0], axis=-1)[None].astype(np.float32)
  out = np.asarray(ppl.crop_and_downsample(jnp.asarray(coded), True))
  assert out.shape == (1, 16, 16, 3)
  assert out[0, 0, 0, 0] == 12 and out[0, -1, 0, 0] == 27
  assert out[0, 0, 0, 1] == 8 and out[0, 0, -1, 1] == 23
  # 512 without crop: 2x2 box means.
  x = np.random.default_rng(10).normal(size=(1, 512, 512, 3)).astype(np.float32)
  want = x.reshape(1, 256, 2, 256, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(ppl.crop_and_downsample(jnp.asarray(x), False), want, atol=1e-6)


def test_ppl_percentile_filter():
  """201 values: the 1st percentile ('lower') is the 3rd smallest, the 99th ('higher') the 3rd
  largest, so the two smallest and two largest go; the kept 2..198 average to 100."""
  values = np.arange(201, dtype=np.float64)
  values[:2], values[-2:] = -1000, 1e6
  np.random.default_rng(11).shuffle(values)
  assert ppl.filtered_mean(values) == 100.0


class LinearToy(nn.Module):
  """`w = z a` (broadcast to num_ws rows), image = `w b` + noise: PPL has a closed form.

  With `a = I` and `b = s Q` (`Q` with orthonormal rows), and the squared L2 distance:
  - W (lerp): `|(w1 - w0) b|^2 = s^2 |z1 - z0|^2` for every t;
  - Z (slerp of unit vectors, speed theta): `s^2 theta^2`, theta = angle(z0, z1).
  The noise (large) cancels only if both images of a pair get the same noise.
  """
  z_dim: int = 6
  c_dim: int = 0
  num_ws: int = 3
  img_resolution: int = 8
  img_channels: int = 3

  def setup(self):
    self.a = self.param('a', nn.initializers.zeros, (self.z_dim, self.z_dim))
    self.b = self.param('b', nn.initializers.zeros, (self.z_dim, 8 * 8 * 3))

  def map(self, z, c=None):
    w = z @ self.a
    return jnp.broadcast_to(w[:, None], (w.shape[0], self.num_ws, w.shape[1]))

  def synthesize(self, ws, noise_mode='random', noise=None):
    images = (ws.mean(axis=1) @ self.b).reshape(-1, 8, 8, 3)
    return images + 5.0 * jax.random.normal(self.make_rng('noise'), images.shape)


def squared_l2(params, x0, x1):
  del params
  return jnp.sum(jnp.square(x0 - x1), axis=(1, 2, 3))


@pytest.mark.parametrize('space,sampling', [('w', 'end'), ('w', 'full'), ('z', 'end'),
                                            ('z', 'full')])
def test_ppl_of_a_linear_generator(space, sampling):
  scale = 3.0
  q = np.linalg.qr(np.random.default_rng(12).normal(size=(192, 6)))[0].T  # [6, 192]
  variables = {'params': {'a': np.eye(6, dtype=np.float32), 'b': (scale * q).astype(np.float32)}}
  mesh = make_mesh()
  step = ppl.make_ppl_step(LinearToy(), mesh, 8, space, sampling, crop=False,
                           distance_fn=squared_l2)
  out = jax.device_get(step(variables, None, put(batch_key_data(3, 0), replicated(mesh)), None))
  z0, z1, t = (np.asarray(out[k], np.float64) for k in ('z0', 'z1', 't'))
  if sampling == 'end':
    assert np.all(t == 0)
  else:
    assert np.all((t > 0) & (t < 1)) and len(np.unique(t)) == 8
  if space == 'w':
    want = scale ** 2 * np.sum((z1 - z0) ** 2, axis=1)
  else:
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    want = scale ** 2 * np.arccos(np.sum(unit(z0) * unit(z1), axis=1)) ** 2
  # float32 finite differences with eps = 1e-4: ~1e-3 relative.
  np.testing.assert_allclose(out['distance'], want, rtol=5e-3)


# ----------------------------------------------------------------------------------------------
# FID-infinity and IS-infinity.

def test_extrapolation_recovers_the_limit_of_a_known_bias_model():
  sizes = fid_inf.sample_sizes(50_000)
  assert sizes[0] == 5000 and sizes[-1] == 50_000 and len(sizes) == 15
  intercept, slope = fid_inf.extrapolate_to_infinity(sizes, 2.5 + 1234.0 / sizes)
  np.testing.assert_allclose([intercept, slope], [2.5, 1234.0], rtol=1e-9)
  assert len(fid_inf.sample_sizes(12)) == 11  # 2, 3, ..., 12
  with pytest.raises(ValueError, match='at least 2 distinct sample sizes'):
    fid_inf.sample_sizes(2)


def test_fid_infinity_removes_the_finite_sample_bias():
  """Reals N(0, I) (exact statistics), fakes N(m, diag(v)) in 32-d: FID_N is biased upward by
  about tr(...)/N; the extrapolation lands much closer to the closed form than FID at the
  smallest size does."""
  d = 32
  rng = np.random.default_rng(13)
  m, v = np.full(d, 0.1), rng.uniform(0.5, 2.0, d)
  true_fid = np.sum(m ** 2) + np.sum(1 + v - 2 * np.sqrt(v))
  gen = m + rng.normal(size=(8000, d)) * np.sqrt(v)
  sizes = fid_inf.sample_sizes(8000)
  value, fids = fid_inf.fid_infinity(np.zeros(d), np.eye(d), gen, sizes, seed=0)
  assert fids[0] - true_fid > 0.02  # the bias at N = 800
  assert abs(value - true_fid) < 0.25 * (fids[0] - true_fid)


def test_is_infinity_on_a_known_bias_model():
  """IS of one split is biased by finite N; here the logits are one-hot over K classes, so IS_N
  depends only on the class counts. Check the fit machinery on IS_N values directly."""
  sizes = fid_inf.sample_sizes(1000)
  np.testing.assert_allclose(fid_inf.extrapolate_to_infinity(sizes, 7.0 - 30.0 / sizes)[0], 7.0,
                             rtol=1e-9)
  logits = 1e4 * np.eye(5)[np.arange(1000) % 5]
  value, scores = fid_inf.is_infinity(logits, sizes, seed=0)
  np.testing.assert_allclose(value, 5.0, rtol=2e-2)  # balanced one-hot: IS_N ~ 5 for all N


def test_sobol_latents_are_stateless_and_normal():
  latents = fid_inf.sobol_normal_latents(seed=1, batch_size=256, z_dim=4)
  z = np.concatenate([latents(i) for i in range(4)])
  np.testing.assert_array_equal(latents(2), z[512:768])
  assert z.dtype == np.float32 and abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


# ----------------------------------------------------------------------------------------------
# Extraction: MetricContext with a small generator and a stand-in feature network.

def test_uint8_values_is_the_official_conversion():
  x = np.concatenate([np.linspace(-1.2, 1.2, 20001, dtype=np.float32),
                      (np.arange(-130, 130, dtype=np.float32) - 0.5) / 127.5])
  np.testing.assert_array_equal(jax.jit(uint8_values)(x), to_uint8(x).astype(np.float32))


def fake_detector(name: str = 'inception', seed: int = 0) -> Detector:
  """A stand-in feature network: 4x4 mean pool of `images / 255` -> 48-d -> tanh(x P) (8-d)
  as `pool3` / `fc2`, and `logits = pool3 F`."""
  rng = np.random.default_rng(seed)
  params = {'proj': rng.normal(size=(48, 8)).astype(np.float32),
            'fc': rng.normal(size=(8, 10)).astype(np.float32)}

  def forward(p, images):
    n, h, w, c = images.shape
    x = (images / 255.0).reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, 48)
    feats = jnp.tanh((x - 0.5) @ p['proj'])
    return {'pool3': feats, 'fc2': feats, 'logits': feats @ p['fc']}

  outputs = ('fc2',) if name == 'vgg16' else ('pool3',)
  return Detector(name, forward, params, weights_fingerprint(params, 'fake'), outputs)


@pytest.fixture(scope='module')
def tiny_generator(random_variables):
  g = Generator(z_dim=16, w_dim=16, img_resolution=16, mapping_layers=2, channel_base=64,
                channel_max=16)
  variables = random_variables(g, seed=1)
  variables['params'] = jax.tree.map(lambda x: x * np.float32(0.5), variables['params'])
  return g, variables


@pytest.fixture(scope='module')
def shapes16():
  return ShapesSource(40, 16, seed=2)


@pytest.fixture(scope='module')
def ctx4(tiny_generator, shapes16, tmp_path_factory):
  g, variables = tiny_generator
  return MetricContext(g, variables, make_mesh(), 8, source=shapes16,
                       cache_dir=tmp_path_factory.mktemp('cache'),
                       detectors={'inception': fake_detector(), 'vgg16': fake_detector('vgg16')})


def direct_generated(g, variables, detector, num, seed, batch_size):
  """The documented protocol without the context: batch key `fold_in(key(seed), b)` split into
  (z, labels, noise); G without truncation, random noise; the official uint8 conversion on the
  host; the feature network on uint8 values."""
  feats = []
  synthesize = jax.jit(lambda v, z, key: g.apply(v, z, noise_mode='random', rngs={'noise': key}))
  for b in range(math.ceil(num / batch_size)):
    key_z, _, key_noise = jax.random.split(jax.random.fold_in(jax.random.key(seed), b), 3)
    z = jax.random.normal(key_z, (batch_size, g.z_dim))
    images = synthesize(variables, z, key_noise)
    u8 = to_uint8(images).astype(np.float32)
    feats.append(jax.device_get(detector.forward(detector.params, u8)))
  return {k: np.concatenate([f[k] for f in feats])[:num] for k in feats[0]}


def test_generated_features_follow_the_protocol(ctx4, tiny_generator):
  g, variables = tiny_generator
  got = ctx4.generated_features('inception', 13, seed=5)
  want = direct_generated(g, variables, fake_detector(), 13, 5, 8)
  assert got['pool3'].shape == (13, 8)
  np.testing.assert_allclose(got['pool3'], want['pool3'], atol=1e-5)
  np.testing.assert_allclose(got['logits'], want['logits'], atol=1e-4)
  assert ctx4.generated_features('inception', 13, seed=5) is got  # shared by FID, KID, IS
  assert not np.allclose(ctx4.generated_features('inception', 13, seed=6)['pool3'], got['pool3'])


def test_generated_features_do_not_depend_on_the_device_count(ctx4, tiny_generator):
  g, variables = tiny_generator
  one = MetricContext(g, variables, make_mesh(jax.devices()[:1]), 8,
                      detectors={'inception': fake_detector()})
  np.testing.assert_allclose(one.generated_features('inception', 13, seed=5)['pool3'],
                             ctx4.generated_features('inception', 13, seed=5)['pool3'], atol=1e-5)


def test_real_features_cache_and_mirror(ctx4, tiny_generator, shapes16, tmp_path):
  images = np.stack([shapes16[i]['image'] for i in range(12)]).astype(np.float32)
  detector = fake_detector()
  want = np.asarray(detector.forward(detector.params, images)['pool3'])
  got = ctx4.real_features('inception', 'pool3', 12, False, 'fid50k')
  np.testing.assert_allclose(got, want, atol=1e-5)
  files = sorted(ctx4.cache_dir.glob('reals-inception-12-*.npz'))
  assert len(files) == 1
  with np.load(files[0]) as stored:
    np.testing.assert_array_equal(stored['pool3'], got)
    n, total, outer = fid.feature_moments(got)
    np.testing.assert_allclose(stored['pool3_outer'], outer, rtol=1e-12)
  # Mirrored reals: the flips of a seeded draw, the same every time.
  flips = np.random.default_rng(0x6D69).random(12) < 0.5
  flipped = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
  mirrored = ctx4.real_features('inception', 'pool3', 12, True, 'fid50k')
  np.testing.assert_allclose(mirrored, detector.forward(detector.params, flipped)['pool3'],
                             atol=1e-5)
  assert 0 < flips.sum() < 12
  # A new context on the same data reads the file: no image is decoded.
  g, variables = tiny_generator

  counting, reads = ShapesSource(40, 16, seed=2), []
  read_image = counting._read
  counting._read = lambda index: reads.append(index) or read_image(index)
  again = MetricContext(g, variables, make_mesh(), 8, source=counting, cache_dir=ctx4.cache_dir,
                        detectors={'inception': fake_detector()})
  np.testing.assert_array_equal(again.real_features('inception', 'pool3', 12, False, 'fid50k'),
                                got)
  assert reads == []
  assert len(again.real_features('inception', 'pool3', 13, False, 'fid50k')) == 13
  assert len(reads) == 13 + 1  # the first image's shape, then 13 images
  # Another feature network or another dataset: another key.
  other = MetricContext(g, variables, make_mesh(), 8, source=ShapesSource(40, 16, seed=3),
                        cache_dir=ctx4.cache_dir, detectors={'inception': fake_detector(seed=1)})
  assert other.real_cache_key('inception', 12, False) != ctx4.real_cache_key('inception', 12,
                                                                             False)


def test_dataset_fingerprint_follows_the_files(tmp_path, tiny_generator):
  g, variables = tiny_generator
  for i in range(5):
    Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / f'{i}.png')
  make = lambda: MetricContext(g, variables, make_mesh(), 8, source=FolderSource(tmp_path),
                               detectors={'inception': fake_detector()})
  before = make().real_cache_key('inception', 5, False)
  assert make().real_cache_key('inception', 5, False) == before
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / '0.png')
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / '9.png')
  assert make().real_cache_key('inception', 5, False) != before


def test_metrics_through_the_registry_match_direct_computations(ctx4, tiny_generator, shapes16):
  """fid50k_full, fid50k, kid50k_full, is50k, pr50k3_full on the context equal the formulas on
  features computed directly from the protocol."""
  g, variables = tiny_generator
  n, seed = 16, 4
  gen = direct_generated(g, variables, fake_detector(), n, seed, 8)
  detector = fake_detector()
  reals = np.stack([shapes16[i]['image'] for i in range(40)]).astype(np.float32)
  real = np.asarray(detector.forward(detector.params, reals)['pool3'])
  results = {}
  for name in ('fid50k_full', 'fid50k', 'kid50k_full', 'is50k', 'pr50k3_full'):
    results.update(registry.get_metric(name).compute(ctx4, n, seed))
  np.testing.assert_allclose(results['fid50k_full'], direct_fid(real, gen['pool3'], 0), rtol=1e-4)
  np.testing.assert_allclose(results['fid50k'], direct_fid(real[:n], gen['pool3'], 1), rtol=1e-4)
  np.testing.assert_allclose(results['kid50k_full'], kid.kernel_inception_distance(
      real, gen['pool3'], seed), rtol=1e-3, atol=1e-7)
  np.testing.assert_allclose(results['is50k'], inception_score.inception_score(gen['logits'])[0],
                             rtol=1e-4)
  want_pr = direct_precision_recall(real.astype(np.float64), gen['fc2'].astype(np.float64))
  np.testing.assert_allclose([results['pr50k3_full_precision'], results['pr50k3_full_recall']],
                             want_pr, atol=1e-12)
  assert results['fid50k_full'] > 0.01 and set(results) == {
      'fid50k_full', 'fid50k', 'kid50k_full', 'is50k', 'is50k_std', 'pr50k3_full_precision',
      'pr50k3_full_recall'}


def test_fid_inf_and_is_inf_on_the_context(ctx4):
  out = registry.get_metric('fid_inf').compute(ctx4, 24, 0)
  out.update(registry.get_metric('is_inf').compute(ctx4, 24, 0))
  gen = ctx4.generated_features('inception', 24, 0, None, 'sobol')  # memoized Sobol features
  real = ctx4.real_features('inception', 'pool3', None, False, 'fid_inf')
  mu, sigma = fid.feature_statistics(real, ddof=1)
  want, _ = fid_inf.fid_infinity(mu, sigma, gen['pool3'], fid_inf.sample_sizes(24), 0)
  np.testing.assert_allclose(out['fid_inf'], want, rtol=1e-5)  # sqrtm of singular products
  assert np.isfinite(out['is_inf'])


def test_repeats_report_mean_and_std(ctx4):
  specs = registry.parse_metrics('is50k,fid50k_full')
  records = run_metrics(ctx4, specs, num_samples=16, seed=10, repeats=3)
  by_name = {r['metric']: r for r in records}
  assert list(by_name) == ['is50k', 'is50k_std', 'fid50k_full']
  singles = [registry.get_metric('fid50k_full').compute(ctx4, 16, s)['fid50k_full']
             for s in (10, 11, 12)]
  record = by_name['fid50k_full']
  np.testing.assert_allclose(record['values'], singles, rtol=1e-9)
  np.testing.assert_allclose([record['value'], record['std']],
                             [np.mean(singles), np.std(singles, ddof=1)], rtol=1e-9)
  assert record['repeats'] == 3 and record['samples'] == 16 and record['seconds'] > 0


@pytest.mark.parametrize('shape', [(3, 1, 1, 16), (3, 2, 2, 16), (2, 3, 2, 8)])
def test_vgg16_small_maps_are_the_same_convolution(shape):
  """VGG16's 3x3 convolutions of maps <= 3x3 (LPIPS of small images) run as 9 matrix products."""
  from sg2jax.feature_nets.vgg16 import conv3x3_taps
  from sg2jax.ops.conv2d import conv2d
  rng = np.random.default_rng(14)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, shape[-1], 5)), jnp.float32)
  np.testing.assert_allclose(conv3x3_taps(x, w), conv2d(x, w, 1, ((1, 1), (1, 1))), rtol=1e-5,
                             atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Clear errors.

def test_unknown_metric_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"^unknown metric 'fid'; known metrics: fid50k, "
                                       r'fid50k_full, fd_vgg2k, fd_vgg50k_full, kid50k_full, '
                                       r'is50k, pr50k3, pr50k3_full, ppl_zfull, ppl_zend, '
                                       r'ppl_wfull, ppl_wend, ppl2_wend, ppl_w, ls, fid_inf, '
                                       r'is_inf$'):
    registry.parse_metrics('ppl_w,fid')
  assert [s.name for s in registry.parse_metrics(['ppl_w', 'ppl_w'])] == ['ppl_w']


def test_context_errors(tiny_generator, shapes16, ctx4):
  g, variables = tiny_generator
  with pytest.raises(ValueError, match=r'^--batch-size 6 is not a positive multiple of the 4 '
                                       r'devices; use e.g. --batch-size 4$'):
    MetricContext(g, variables, make_mesh(), 6)
  with pytest.raises(ValueError, match=r'^the dataset holds 40 images, fewer than the 64 real '
                                       r'images fid50k needs; pass --num-samples 40 or use '
                                       r'fid50k_full, which uses every image$'):
    check_requirements(ctx4, registry.parse_metrics('fid50k'), 64)
  check_requirements(ctx4, registry.parse_metrics('fid50k_full,pr50k3'), 40)
  no_data = MetricContext(g, variables, make_mesh(), 8, detectors={'inception': fake_detector()})
  with pytest.raises(ValueError, match='^fid50k_full compares with real images: pass --data'):
    check_requirements(no_data, registry.parse_metrics('fid50k_full'), 8)
  with pytest.raises(FileNotFoundError, match=r"^this metric needs torchvision-layout VGG16 "
                                              r'weights, .*: download it and pass --vgg16 PATH$'):
    check_requirements(no_data, registry.parse_metrics('pr50k3_full'), 8)
  with pytest.raises(ValueError, match=r'^ppl_w compares 8x8 images \(the face crop of the 16x16 '
                                       r'output\), smaller than the 16x16 LPIPS needs; use '
                                       r'ppl2_wend \(no crop\)$'):
    registry.get_metric('ppl_w').compute(ctx4, 8, 0)
  conditional = Generator(z_dim=16, c_dim=3, w_dim=16, img_resolution=16, mapping_layers=2,
                          channel_base=64, channel_max=16)
  with pytest.raises(ValueError, match=r'^this network is conditional \(3 classes\): the metrics '
                                       r'draw labels from the dataset; pass --data with'):
    MetricContext(conditional, {}, make_mesh(), 8, source=shapes16)


# ----------------------------------------------------------------------------------------------
# The training hook.

def test_training_hook(tmp_path, tiny_generator, shapes16):
  from sg2jax.train.build import build
  from tiny_experiment import get_config
  config = get_config()
  config.resolution = 16
  config.G.z_dim = config.G.w_dim = 16
  g, variables = tiny_generator
  exp = dataclasses.replace(build(config), generator=g)
  state = types.SimpleNamespace(g_ema=put_tree(variables, exp.mesh))
  with pytest.raises(FileNotFoundError, match='pass --inception PATH'):
    make_training_hook(['fid50k_full'], workdir=tmp_path)
  hook = make_training_hook('ppl2_wend', workdir=tmp_path, num_samples=8, batch_size=8)
  out = hook(exp, state, 50, 0.4)
  assert list(out) == ['Metrics/ppl2_wend'] and out['Metrics/ppl2_wend'] > 0
  step_fn = hook.ctx.memo(('ppl', 'w', 'end', False), lambda: None)
  again = hook(exp, state, 100, 0.8)
  assert hook.ctx.memo(('ppl', 'w', 'end', False), lambda: None) is step_fn  # compiled once
  np.testing.assert_allclose(again['Metrics/ppl2_wend'], out['Metrics/ppl2_wend'], rtol=1e-6)
  lines = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['metric'], r['step'], r['kimg'], r['samples']) for r in lines] == [
      ('ppl2_wend', 50, 0.4, 8), ('ppl2_wend', 100, 0.8, 8)]
  assert lines[0]['network'] == str(tmp_path)


def put_tree(tree, mesh):
  return jax.tree.map(lambda x: put(np.asarray(x), replicated(mesh)), tree)
