"""Linear separability: the attribute-classifier loader (TF pickles written here in the released
format), the protocol's pieces against hand-computed values, and `ls` end to end on a toy
generator whose attributes are linear in z by construction.

The classifiers here are tiny (16x16, 8-16 feature maps) with the real classifiers' variable names
and layout (TF StyleGAN D_basic without minibatch stddev, see
`sg2jax/feature_nets/attribute_classifier.py`); their reference is a float64 numpy
re-implementation of TF's layers in NCHW (SAME convolutions, the [1,2,1] blur, 2x2 means or the
fused 4x4 stride-2 kernel). Tolerance `rtol = atol = 1e-4`: float32 against float64 over seven
layers of at most 144 taps (measured differences ~1e-6).
"""

import dataclasses
import json
import pickle
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sg2jax.feature_nets.attribute_classifier import (CLASSIFIER_FILES, AttributeClassifier,
                                                      load_attribute_classifier,
                                                      load_attribute_classifiers)
from sg2jax.metrics import linear_separability as ls
from sg2jax.metrics.context import MetricContext
from sg2jax.metrics.evaluate import check_requirements
from sg2jax.metrics.registry import CLASSIFIERS, parse_metrics
from sg2jax.sharding import make_mesh

RES = 16
KWARGS = {'num_channels': 3, 'resolution': RES, 'label_size': 0, 'fmap_base': 64, 'fmap_max': 16,
          'mbstd_group_size': 0, 'structure': 'linear', 'fused_scale': 'auto'}
TOL = dict(rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Writing classifier pickles in the released format.

def nf(stage, fmap_base=64, fmap_max=16):
  return min(int(fmap_base / 2.0 ** stage), fmap_max)


def classifier_tf_vars(seed, res=RES, channels=3, mbstd_features=0):
  """TF D_basic variables (names and HWIO / [in, out] shapes as the released classifiers), with
  the lower levels' FromRGB and `lod` of a network built for progressive growing."""
  rng = np.random.default_rng(seed)
  k = int(np.log2(res))
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  tf_vars = {'lod': np.float32(0.0)}
  for lod in range(0, k - 1):
    c = nf(k - lod - 1)
    tf_vars[f'FromRGB_lod{lod}/weight'] = normal(1, 1, channels, c)
    tf_vars[f'FromRGB_lod{lod}/bias'] = normal(c) * 0.1
  for s in range(k, 2, -1):
    r = 2 ** s
    tf_vars[f'{r}x{r}/Conv0/weight'] = normal(3, 3, nf(s - 1), nf(s - 1))
    tf_vars[f'{r}x{r}/Conv0/bias'] = normal(nf(s - 1)) * 0.1
    tf_vars[f'{r}x{r}/Conv1_down/weight'] = normal(3, 3, nf(s - 1), nf(s - 2))
    tf_vars[f'{r}x{r}/Conv1_down/bias'] = normal(nf(s - 2)) * 0.1
  tf_vars['4x4/Conv/weight'] = normal(3, 3, nf(1) + mbstd_features, nf(1))
  tf_vars['4x4/Conv/bias'] = normal(nf(1)) * 0.1
  tf_vars['4x4/Dense0/weight'] = normal(16 * nf(1), nf(0))
  tf_vars['4x4/Dense0/bias'] = normal(nf(0)) * 0.1
  tf_vars['4x4/Dense1/weight'] = normal(nf(0), 1)
  tf_vars['4x4/Dense1/bias'] = normal(1)
  return tf_vars


def write_classifier(path, cls, tf_vars, kwargs=KWARGS, func='D_basic', version=3):
  state = {'version': version, 'name': 'D', 'static_kwargs': dict(kwargs), 'components': {},
           'build_module_src': '# source not stored', 'build_func_name': func,
           'variables': list(tf_vars.items())}
  path.write_bytes(pickle.dumps(cls(state), protocol=2))
  return path


# ----------------------------------------------------------------------------------------------
# Numpy reference of TF D_basic (NCHW, TF layouts).

def np_conv(x, w, pad):
  """Cross-correlation of `x [N, I, H, W]` with `w [k, k, I, O]`, zero padding `pad` each side."""
  k = w.shape[0]
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  patches = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # [N, I, H, W, k, k]
  n, i, h, wd = patches.shape[:4]
  patches = patches.transpose(0, 2, 3, 4, 5, 1).reshape(n * h * wd, k * k * i)  # (dy, dx, i)
  out = patches @ w.reshape(k * k * i, -1)  # [N H W, O]
  return out.reshape(n, h, wd, -1).transpose(0, 3, 1, 2)


def np_wscale(w, gain=np.sqrt(2)):
  return w.astype(np.float64) * gain / np.sqrt(np.prod(w.shape[:-1]))


def np_blur(x):
  f = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
  c = x.shape[1]
  return np_conv(x, f[:, :, None, None] * np.eye(c)[None, None], 1)  # depthwise


def np_lrelu(x):
  return np.maximum(x, 0.2 * x)


def np_d_basic(images, tf_vars, fused):
  """TF D_basic at lod 0, label_size 0, no minibatch stddev; `fused`: Conv1_down as TF's padded,
  averaged 4x4 kernel with stride 2 (else conv 3x3 then 2x2 mean)."""
  v = {k: np.asarray(x, np.float64) for k, x in tf_vars.items()}
  x = np_lrelu(np_conv(images, np_wscale(v['FromRGB_lod0/weight']), 0)
               + v['FromRGB_lod0/bias'][None, :, None, None])
  for s in range(int(np.log2(images.shape[2])), 2, -1):
    r = 2 ** s
    x = np_lrelu(np_conv(x, np_wscale(v[f'{r}x{r}/Conv0/weight']), 1)
                 + v[f'{r}x{r}/Conv0/bias'][None, :, None, None])
    x = np_blur(x)
    w = np_wscale(v[f'{r}x{r}/Conv1_down/weight'])
    if fused:
      w = np.pad(w, ((1, 1), (1, 1), (0, 0), (0, 0)))
      w = (w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]) * 0.25  # [4, 4, I, O]
      x = np_conv(x, w, 1)[:, :, ::2, ::2]  # SAME for k=4, stride 2: one pixel each side
    else:
      x = np_conv(x, w, 1)
      x = x.reshape(x.shape[0], x.shape[1], x.shape[2] // 2, 2, x.shape[3] // 2, 2).mean((3, 5))
    x = np_lrelu(x + v[f'{r}x{r}/Conv1_down/bias'][None, :, None, None])
  x = np_lrelu(np_conv(x, np_wscale(v['4x4/Conv/weight']), 1)
               + v['4x4/Conv/bias'][None, :, None, None])
  x = x.reshape(x.shape[0], -1)  # NCHW flatten, as TF's dense
  x = np_lrelu(x @ np_wscale(v['4x4/Dense0/weight']) + v['4x4/Dense0/bias'])
  return x @ np_wscale(v['4x4/Dense1/weight'], 1.0) + v['4x4/Dense1/bias']  # [N, 1]


# ----------------------------------------------------------------------------------------------
# The loader.

def test_classifier_pickle_loads_and_matches_numpy_tf_layers(tmp_path, fake_tf_network):
  tf_vars = classifier_tf_vars(0)
  module, variables = load_attribute_classifier(
      write_classifier(tmp_path / 'c.pkl', fake_tf_network, tf_vars))
  assert (module.resolution, module.num_channels, module.fmap_base, module.fmap_max,
          module.mbstd_group_size) == (RES, 3, 64, 16, 0)
  images = np.random.default_rng(1).uniform(-1, 1, (2, 3, RES, RES))
  logits = np.asarray(module.apply(variables, jnp.asarray(images.transpose(0, 2, 3, 1),
                                                          jnp.float32)))
  assert logits.shape == (2, 1)
  for fused in (False, True):  # TF's two Conv1_down forms, one computation
    np.testing.assert_allclose(logits, np_d_basic(images, tf_vars, fused), **TOL)


def test_missing_kwargs_are_read_from_the_variables(tmp_path, fake_tf_network):
  """Without resolution / channels / mbstd kwargs: 16, 3 and no stddev layer (4x4/Conv has nf(1)
  inputs); with one extra input channel: TF's default group of 4."""
  kwargs = {'fmap_base': 64, 'fmap_max': 16}
  module, _ = load_attribute_classifier(
      write_classifier(tmp_path / 'a.pkl', fake_tf_network, classifier_tf_vars(0), kwargs))
  assert (module.resolution, module.num_channels, module.mbstd_group_size) == (RES, 3, 0)
  module, variables = load_attribute_classifier(write_classifier(
      tmp_path / 'b.pkl', fake_tf_network, classifier_tf_vars(0, mbstd_features=1), kwargs))
  assert (module.mbstd_group_size, module.mbstd_num_features) == (4, 1)
  assert variables['params']['b4']['conv']['weight'].shape == (3, 3, 17, 16)


@pytest.mark.parametrize('edit, message', [
    (lambda v: v.pop('4x4/Dense0/weight'), r'missing variable\(s\) 4x4/Dense0/weight$'),
    (lambda v: v.update({'4x4/Conv/weight': np.zeros((3, 3, 17, 16), np.float32)}),
     r'wrong shape\(s\) 4x4/Conv/weight \(3, 3, 17, 16\) \(expected \(3, 3, 16, 16\)\)'),
    (lambda v: v.update({'Output/weight': np.zeros((16, 1), np.float32)}),
     r'unknown variable\(s\) Output/weight'),
    (lambda v: v.update({'lod': np.float32(1.5)}), r'lod = \[1.5\]: a snapshot taken while'),
])
def test_bad_variables_give_one_line_errors(edit, message, tmp_path, fake_tf_network):
  tf_vars = classifier_tf_vars(0)
  edit(tf_vars)
  path = write_classifier(tmp_path / 'celebahq-classifier-00-male.pkl', fake_tf_network, tf_vars)
  with pytest.raises(ValueError, match=r'^celebahq-classifier-00-male.pkl: .*' + message) as e:
    load_attribute_classifier(path)
  assert '\n' not in str(e.value)


def test_other_pickles_are_not_classifiers(tmp_path, fake_tf_network):
  state = lambda func, kwargs=KWARGS: fake_tf_network({
      'version': 4, 'name': 'N', 'static_kwargs': kwargs, 'components': {},
      'build_module_src': '', 'build_func_name': func, 'variables': []})
  (tmp_path / 'gdgs.pkl').write_bytes(pickle.dumps(
      (state('G_main'), state('D_stylegan2'), state('G_main')), protocol=4))
  with pytest.raises(ValueError, match=r'holds 3 TF networks .* not an attribute classifier'):
    load_attribute_classifier(tmp_path / 'gdgs.pkl')
  (tmp_path / 'g.pkl').write_bytes(pickle.dumps(state('G_main'), protocol=4))
  with pytest.raises(ValueError, match=r'g.pkl is a generator \(G_main\), not an attribute'):
    load_attribute_classifier(tmp_path / 'g.pkl')
  (tmp_path / 'd2.pkl').write_bytes(pickle.dumps(state('D_stylegan2'), protocol=4))
  with pytest.raises(ValueError, match=r'is a StyleGAN2 discriminator \(D_stylegan2\)'):
    load_attribute_classifier(tmp_path / 'd2.pkl')
  write_classifier(tmp_path / 'cond.pkl', fake_tf_network, classifier_tf_vars(0),
                   {**KWARGS, 'label_size': 2})
  with pytest.raises(ValueError, match=r'conditional network \(label_size 2\)'):
    load_attribute_classifier(tmp_path / 'cond.pkl')
  (tmp_path / 'dict.pkl').write_bytes(pickle.dumps({'G': None}, protocol=4))
  with pytest.raises(ValueError, match=r'dict.pkl is not a TF network pickle \(got dict\)'):
    load_attribute_classifier(tmp_path / 'dict.pkl')


def test_missing_classifier_files_are_named(tmp_path, fake_tf_network):
  write_classifier(tmp_path / CLASSIFIER_FILES[0], fake_tf_network, classifier_tf_vars(0))
  with pytest.raises(FileNotFoundError, match=(
      r'39 of 40 attribute classifiers missing in .*: celebahq-classifier-01-smiling.pkl, '
      r'celebahq-classifier-02-attractive.pkl, celebahq-classifier-03-wavy-hair.pkl and 36 '
      r'more; download them from https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/metrics/')):
    load_attribute_classifiers(tmp_path)
  with pytest.raises(FileNotFoundError, match=r'pass --classifiers DIR \(training: '
                                              r'config.metrics_classifiers\)$'):
    ls.load_classifier_bank(None)


# ----------------------------------------------------------------------------------------------
# The protocol's pieces.

def test_entropy_and_score_by_hand():
  perfect = ls.conditional_entropy([[0.5, 0.0], [0.0, 0.5]])
  assert 0.0 <= perfect < 1e-12
  assert ls.separability_score([perfect] * 40) == pytest.approx(1.0, abs=1e-9)
  # Independent: H(Y|X) = H(Y) = -(0.2 log2 0.2 + 0.8 log2 0.8).
  independent = np.outer([0.3, 0.7], [0.2, 0.8])
  assert ls.conditional_entropy(independent) == pytest.approx(0.7219280948873623, abs=1e-6)
  # X = 0: Y ~ (0.6, 0.4) -> 0.9709505944546686 bits; X = 1: Y certain; each X half the time.
  assert ls.conditional_entropy([[0.3, 0.2], [0.0, 0.5]]) == pytest.approx(0.4854752972, abs=1e-6)
  # Counts are normalized: the same table as counts.
  assert ls.conditional_entropy([[30, 20], [0, 50]]) == pytest.approx(0.4854752972, abs=1e-6)
  assert ls.separability_score([0.5, 0.25, 0.25]) == pytest.approx(2.0)
  table = ls.joint_table(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
  np.testing.assert_array_equal(table, [[0.25, 0.25], [0.0, 0.5]])
  # Against H(Y|X) = -sum p_xy log2(p_xy / p_x) on random tables.
  for t in np.random.default_rng(0).dirichlet(np.ones(4), size=5).reshape(5, 2, 2):
    direct = -sum(t[x, y] * np.log2(t[x, y] / t[x].sum()) for x in (0, 1) for y in (0, 1))
    assert ls.conditional_entropy(t) == pytest.approx(direct, abs=1e-6)


def test_single_class_means_perfect_prediction():
  """All kept samples of one class: LinearSVC refuses to fit, and the only class is predicted
  (H(Y) = 0, so H(Y|X) = 0 whatever the predictions)."""
  z = np.random.default_rng(0).normal(size=(10, 4))
  for label in (0, 1):
    targets = np.full(10, label, np.int64)
    predictions = ls.fit_and_predict(z, targets)
    np.testing.assert_array_equal(predictions, targets)
    assert ls.conditional_entropy(ls.joint_table(predictions, targets)) == 0.0


def test_an_svm_error_is_no_longer_a_perfect_prediction():
  """Non-finite inputs, or anything else LinearSVC refuses: an error, never the targets as
  predictions (which scored as perfectly separable)."""
  z = np.random.default_rng(0).normal(size=(10, 4))
  z[3, 1] = np.nan
  targets = np.arange(10) % 2
  with pytest.raises(ValueError, match='NaN'):
    ls.fit_and_predict(z, targets)
  with pytest.raises(ValueError, match='feature'):  # any other error of LinearSVC propagates
    ls.fit_and_predict(np.zeros((10, 0)), targets)
  probabilities = ls.attribute_probabilities(np.random.default_rng(1).normal(size=(10, 2)))
  with pytest.raises(ValueError, match='NaN'):
    ls.attribute_entropies({'z': z}, probabilities, 6)


def test_confident_half_is_a_stable_descending_sort():
  logits = np.array([[0.5], [-3.0], [3.0], [0.5], [20.0], [25.0], [-0.1], [0.0]], np.float32)
  p = ls.attribute_probabilities(logits)  # [8, 1, 2]
  np.testing.assert_allclose(p[:, 0, 0], 1 / (1 + np.exp(-2 * logits[:, 0])), rtol=1e-6)
  assert p[4, 0, 0] == p[5, 0, 0] == 1.0  # saturated in float32: a tie
  np.testing.assert_array_equal(ls.most_confident(p[:, 0], 8), [4, 5, 1, 2, 0, 3, 6, 7])
  np.testing.assert_array_equal(ls.most_confident(p[:, 0], 8 // 2), [4, 5, 1, 2])
  np.testing.assert_array_equal(np.argmax(p[:, 0], axis=1), [0, 1, 0, 0, 0, 0, 1, 0])


def test_box_downsample_to_the_classifier_size():
  x = np.random.default_rng(0).normal(size=(2, 512, 512, 3)).astype(np.float32)
  out = np.asarray(ls.downsample_to(jnp.asarray(x)))
  assert out.shape == (2, 256, 256, 3)
  np.testing.assert_allclose(out[1, 7, 9], x[1, 14:16, 18:20].mean((0, 1)), rtol=1e-6)
  small = x[:, :16, :16]
  np.testing.assert_allclose(np.asarray(ls.downsample_to(jnp.asarray(small), 4)),
                             small.reshape(2, 4, 4, 4, 4, 3).mean((2, 4)), rtol=1e-6)
  assert ls.downsample_to(jnp.asarray(small)).shape == small.shape  # smaller: unchanged
  assert [ls.classifier_input_size(r) for r in (128, 256, 512, 1024)] == [128, 256, 256, 256]


# ----------------------------------------------------------------------------------------------
# End to end on a toy generator.

class ToyGenerator(nn.Module):
  """w = z @ mix (all ws rows equal); the image holds w (8 pixels) and 8 pixels of the 'noise'
  stream (times `noise_scale`) on a 4x4 grid, nearest-upsampled to `img_resolution`, grey."""
  img_resolution: int = 8
  noise_scale: float = 1.0
  z_dim = 8
  w_dim = 8
  num_ws = 3

  def setup(self):
    self.mix = self.param('mix', nn.initializers.normal(1.0), (self.z_dim, self.w_dim))

  def map(self, z, c=None):
    w = z @ self.mix
    return jnp.broadcast_to(w[:, None], (w.shape[0], self.num_ws, self.w_dim))

  def synthesize(self, ws, noise_mode='random'):
    n = ws.shape[0]
    noise = jax.random.normal(self.make_rng('noise'), (n, 8)) * self.noise_scale
    grid = jnp.concatenate([ws[:, -1], noise], axis=1).reshape(n, 4, 4, 1)
    f = self.img_resolution // 4
    return jnp.repeat(jnp.repeat(grid, f, axis=1), f, axis=2)  # [N, R, R, 1]


def toy_variables():
  return {'params': {'mix': np.random.default_rng(3).normal(size=(8, 8)).astype(np.float32)}}


def toy_images(w, res):
  grid = np.concatenate([w, np.zeros_like(w)], axis=1).reshape(-1, 4, 4, 1)
  return np.repeat(np.repeat(np.repeat(grid, res // 4, 1), res // 4, 2), 3, 3)


def toy_bank(pixels, num_attributes=3):
  """Logits = pixels of the 4x4 grid (first 8: w; last 8: noise) times fixed directions."""
  def forward(params, images):  # [N, 4, 4, 3] -> [N, A]
    return images[..., 0].reshape(images.shape[0], 16)[:, pixels] @ params['directions']
  directions = np.random.default_rng(5).normal(size=(8, num_attributes)).astype(np.float32)
  return ls.ClassifierBank(forward, {'directions': directions}, 4, num_attributes)


@pytest.fixture(scope='module')
def toy_context():
  return MetricContext(ToyGenerator(), toy_variables(), make_mesh(), 8)


def test_ls_is_one_when_attributes_are_linear_in_z(toy_context):
  """Labels are signs of linear functions of w = z @ mix: both spaces separate them; the SVM may
  err on a few kept samples near its margin, hence `<= 1.05` (0.07 bits over 3 attributes)."""
  scores = ls.compute_ls(toy_context, 512, seed=0, bank=toy_bank(slice(0, 8)))
  assert set(scores) == {'ls_z', 'ls_w'}
  assert 1.0 <= scores['ls_z'] <= 1.05 and 1.0 <= scores['ls_w'] <= 1.05
  # Labels from the noise pixels: independent of z; about 1 bit each, 2^3 = 8 at most.
  scrambled = ls.compute_ls(toy_context, 512, seed=0, bank=toy_bank(slice(8, 16)))
  assert 4.0 < scrambled['ls_z'] <= 8.0 and 4.0 < scrambled['ls_w'] <= 8.0


def nan_variables():
  return {'params': {'mix': np.full((8, 8), np.nan, np.float32)}}


@pytest.mark.parametrize('case, message', [
    ('generator', r"^ls: diverged.pkl gives non-finite w latents \(NaN or infinity\) for all 64 "
                  r"samples, so it cannot be scored; its weights are broken \(diverged training "
                  r"or a damaged file\): evaluate an earlier snapshot$"),
    ('classifiers', r"^ls: the attribute classifiers give non-finite logits \(NaN or infinity\) "
                    r"for all 64 images of diverged.pkl, so it cannot be scored; check the "
                    r"classifier files \(--classifiers\)$"),
])
def test_non_finite_outputs_are_a_one_line_error_naming_the_network(case, message):
  """A NaN generator (weights NaN: w, images and logits NaN) or NaN classifiers: one line that
  names the network and what to do, never a score (the unchecked protocol scored the generator
  as perfectly separable, ls = 1)."""
  if case == 'generator':
    variables, bank = nan_variables(), toy_bank(slice(0, 8))
  else:
    variables, bank = toy_variables(), toy_bank(slice(0, 8))
    bank = dataclasses.replace(bank, params={'directions': bank.params['directions'] * np.nan})
  ctx = MetricContext(ToyGenerator(), variables, make_mesh(), 8, network='diverged.pkl')
  with pytest.raises(ValueError, match=message):
    ls.compute_ls(ctx, 64, seed=0, bank=bank)


def test_non_finite_images_are_named_and_the_network_follows_the_snapshot():
  """Finite latents but NaN images (noise NaN): the images are named; `set_variables` with a
  network name (the training hook's snapshots) renames the network in the errors."""
  ctx = MetricContext(ToyGenerator(noise_scale=np.nan), toy_variables(), make_mesh(), 8)
  with pytest.raises(ValueError, match=r'^ls: the generator gives non-finite images \(NaN or '
                                       r'infinity\) for all 16 samples, so it cannot be scored'):
    ls.compute_ls(ctx, 16, seed=0, bank=toy_bank(slice(0, 8)))
  ctx.set_variables(nan_variables(), network='run step 10')
  with pytest.raises(ValueError, match=r'^ls: run step 10 gives non-finite w latents'):
    ls.compute_ls(ctx, 16, seed=0, bank=toy_bank(slice(0, 8)))


def test_ls_refuses_images_smaller_than_the_classifiers(toy_context):
  bank = dataclasses.replace(toy_bank(slice(0, 8)), resolution=16)
  with pytest.raises(ValueError, match=r'ls classifies 16x16 images; the generator\'s 8x8'):
    ls.compute_ls(toy_context, 16, seed=0, bank=bank)
  with pytest.raises(ValueError, match=r'num_keep 20 must be within 1..16'):
    ls.compute_ls(toy_context, 16, seed=0, bank=toy_bank(slice(0, 8)), num_keep=20)


def test_step_runs_the_40_loaded_classifiers(tmp_path, fake_tf_network):
  """The official bank (40 pickles, one architecture, `lax.map`) inside the sharded step: the
  toy's 32x32 images box-downsampled to 16x16, every column the numpy D_basic of its file."""
  all_vars = [classifier_tf_vars(seed) for seed in range(len(CLASSIFIER_FILES))]
  for name, tf_vars in zip(CLASSIFIER_FILES, all_vars):
    write_classifier(tmp_path / name, fake_tf_network, tf_vars)
  bank = ls.stack_classifiers(load_attribute_classifiers(tmp_path))
  assert (bank.resolution, bank.num_attributes) == (RES, 40)
  g = ToyGenerator(img_resolution=32, noise_scale=0.0)
  variables = toy_variables()
  mesh = make_mesh()
  step = ls.make_ls_step(g, mesh, 4, bank.forward, bank.resolution)
  key_data = jax.random.key_data(jax.random.key(7))
  out = jax.device_get(step(variables, bank.params, key_data, None))
  assert out['logits'].shape == (4, 40) and out['z'].shape == (4, 8)
  np.testing.assert_allclose(out['w'], out['z'] @ variables['params']['mix'], rtol=1e-5,
                             atol=1e-5)
  images = toy_images(out['w'].astype(np.float64), 32)
  images = images.reshape(4, 16, 2, 16, 2, 3).mean((2, 4)).transpose(0, 3, 1, 2)  # NCHW 16x16
  expected = np.concatenate([np_d_basic(images, v, fused=False) for v in all_vars], axis=1)
  np.testing.assert_allclose(out['logits'], expected, **TOL)


def test_stacking_refuses_mixed_architectures():
  a = AttributeClassifier(resolution=16, fmap_base=64, fmap_max=16)
  b = AttributeClassifier(resolution=16, fmap_base=64, fmap_max=8)
  with pytest.raises(ValueError, match='attribute classifier 1 .* differs from classifier 0'):
    ls.stack_classifiers([(a, {'params': {}}), (b, {'params': {}})])


# ----------------------------------------------------------------------------------------------
# In the registry and the training hook.

def test_requirements_are_checked_before_any_work():
  """`ls` in the registry needs the classifiers: no folder, too few samples, images smaller than
  the classifiers' input fail in `check_requirements`; a bank given to the context
  (`use_classifier_bank`, as the training hook does) is the one `compute_ls` then uses."""
  spec, = parse_metrics('ls')
  assert (spec.needs, spec.num_samples, spec.reals) == ((CLASSIFIERS,), 200_000, 'none')
  context = lambda: MetricContext(ToyGenerator(), toy_variables(), make_mesh(), 8)
  with pytest.raises(FileNotFoundError, match=r'ls needs NVIDIA\'s 40 CelebA-HQ attribute'):
    check_requirements(context(), [spec], 64)
  with pytest.raises(ValueError, match=r'^ls keeps the most confident half of its samples: it '
                                       r'needs at least 2, got --num-samples 1$'):
    check_requirements(context(), [spec], 1)
  small = context()
  ls.use_classifier_bank(small, dataclasses.replace(toy_bank(slice(0, 8)), resolution=16))
  with pytest.raises(ValueError, match=r"^ls classifies 16x16 images; the generator's 8x8"):
    check_requirements(small, [spec], None)
  ctx = context()
  ls.use_classifier_bank(ctx, toy_bank(slice(0, 8)))
  check_requirements(ctx, [spec], 64)
  assert spec.compute(ctx, 512, 0) == ls.compute_ls(ctx, 512, 0, bank=toy_bank(slice(0, 8)))


def test_training_hook_runs_ls(tmp_path, fake_tf_network, random_variables):
  """`config.metrics = ('ls',)` with `config.metrics_classifiers`: `sg2jax.main.metric_hooks`
  reads the folder before training (a missing one fails there), and the hook records `ls_z` and
  `ls_w` of the snapshot, equal to `compute_ls` with the same classifiers, samples and seed."""
  from sg2jax.main import metric_hooks
  from sg2jax.train.build import build
  from tiny_experiment import get_config
  config = get_config()  # 8x8 images: classifiers of input size 8
  config.metrics = ('ls',)
  config.metrics_num_samples = 64
  config.metrics_classifiers = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='attribute classifier directory .*nowhere not found'):
    metric_hooks(config, tmp_path / 'run')
  folder = tmp_path / 'classifiers'
  folder.mkdir()
  for seed, name in enumerate(CLASSIFIER_FILES):
    write_classifier(folder / name, fake_tf_network, classifier_tf_vars(seed, res=8),
                     {**KWARGS, 'resolution': 8})
  config.metrics_classifiers = str(folder)
  hook, = metric_hooks(config, tmp_path / 'run')
  exp = build(config)
  variables = random_variables(exp.generator, seed=1)
  out = hook(exp, types.SimpleNamespace(g_ema=variables), 10, 0.08)
  assert list(out) == ['Metrics/ls_z', 'Metrics/ls_w']
  direct = ls.compute_ls(MetricContext(exp.generator, variables, exp.mesh, config.batch_size), 64,
                         config.seed, bank=ls.stack_classifiers(load_attribute_classifiers(folder)))
  print(out, direct)
  assert out == {f'Metrics/{k}': pytest.approx(v, rel=1e-6) for k, v in direct.items()}
  results = (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
  lines = [json.loads(line) for line in results]
  assert [(r['metric'], r['step'], r['samples']) for r in lines] == [('ls_z', 10, 64),
                                                                      ('ls_w', 10, 64)]
  # A diverged snapshot: the error names the run and the step, and nothing is recorded.
  diverged = jax.tree.map(lambda x: np.full_like(x, np.nan), variables)
  with pytest.raises(ValueError, match=rf'^ls: {tmp_path / "run"} step 12 gives non-finite w '):
    hook(exp, types.SimpleNamespace(g_ema=diverged), 12, 0.096)
  assert (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines() == results
