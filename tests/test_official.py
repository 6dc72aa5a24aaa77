"""Official weight files read with numpy only: ADA snapshots, TF pickles, torch .pth formats."""

import io
import os
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from goldens import DATA, assert_matches_golden, load, nchw, nhwc
from sg2jax.formats import official
from sg2jax.formats.official import (ada_to_variables, load_official_pickle, read_network_pickle,
                                     tf_to_ada_state_dict)
from sg2jax.formats.torch_pickle import RestrictedUnpickler, TorchReader, UnsafePickleError
from sg2jax.networks.weights import build_network, flatten_variables


@pytest.fixture(scope='module')
def ada_snapshot():
  return load_official_pickle(DATA / 'ada_snapshot_tiny.pkl'), load('ada_snapshot_tiny_expected.npz')


@pytest.fixture(scope='module')
def tf_snapshot():
  return load_official_pickle(DATA / 'tf_snapshot_tiny.pkl'), load('tf_snapshot_tiny_expected.npz')


def state_dict_of(expected: dict, prefix: str) -> dict:
  """`G/<ADA name>` entries of an expected-output npz (ADA names contain dots)."""
  return {k[len(prefix) + 1:]: v for k, v in expected.items()
          if k.startswith(prefix + '/') and '.' in k.split('/', 1)[1]
          and not k.endswith(('img_const', '_const')) or k.endswith('noise_const')
          and k.startswith(prefix + '/')}


@pytest.mark.parametrize('name', ['G', 'D', 'G_ema'])
def test_ada_snapshot_weights_are_exact(ada_snapshot, name):
  networks, expected = ada_snapshot
  ref = ada_to_variables(state_dict_of(expected, name), name[0])
  got, want = flatten_variables(networks[name].variables), flatten_variables(ref)
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_ada_snapshot_config(ada_snapshot):
  networks, _ = ada_snapshot
  g = networks['G_ema'].config
  assert (g['class'], g['architecture'], g['img_resolution'], g['z_dim'], g['conv_clamp']) == (
      'Generator', 'skip', 32, 32, 256)
  d = networks['D'].config
  assert (d['class'], d['architecture'], d['mbstd_group_size']) == ('Discriminator', 'resnet', 4)


def test_ada_snapshot_outputs(ada_snapshot):
  networks, e = ada_snapshot
  z = jnp.asarray(e['z'])
  g_ema = build_network(networks['G_ema'].config)
  v = networks['G_ema'].variables
  assert_matches_golden(g_ema.apply(v, z, method='map'), e['ws_G_ema'], 'ws')
  assert_matches_golden(nchw(g_ema.apply(v, z, noise_mode='const')), e['img_G_ema_const'], 'G_ema')
  assert_matches_golden(nchw(g_ema.apply(v, z, truncation_psi=0.7, noise_mode='const')),
                        e['img_G_ema_psi0.7_const'], 'G_ema psi 0.7')
  g = build_network(networks['G'].config)
  assert_matches_golden(nchw(g.apply(networks['G'].variables, z, noise_mode='const')),
                        e['img_G_const'], 'G')
  d = build_network(networks['D'].config)
  assert_matches_golden(d.apply(networks['D'].variables, nhwc(e['img'])), e['D_logits'], 'D')


def test_tf_variables_rename_to_ada_exactly(tf_snapshot):
  _, e = tf_snapshot
  for net, ada_net in (('G', 'G'), ('Gs', 'G'), ('D', 'D')):
    raw = {k[len(f'tf/{net}/'):]: v for k, v in e.items() if k.startswith(f'tf/{net}/')}
    converted = tf_to_ada_state_dict(raw, ada_net)
    want = state_dict_of(e, net)
    assert set(converted) == set(want) - {k for k in want if k.endswith('resample_filter')}
    for key, value in converted.items():
      np.testing.assert_array_equal(value, want[key], err_msg=f'{net} {key}')


def test_tf_snapshot_outputs(tf_snapshot):
  networks, e = tf_snapshot
  z = jnp.asarray(e['z'])
  for name, prefix in (('G', 'G'), ('G_ema', 'Gs')):
    g = build_network(networks[name].config)
    v = networks[name].variables
    assert_matches_golden(g.apply(v, z, method='map'), e[f'{prefix}/ws'], f'{prefix} ws')
    assert_matches_golden(nchw(g.apply(v, z, noise_mode='const')), e[f'{prefix}/img_const'], prefix)
  assert_matches_golden(nchw(g.apply(v, z, truncation_psi=0.7, noise_mode='const')),
                        e['Gs/img_psi0.7_const'], 'Gs psi 0.7')
  d = build_network(networks['D'].config)
  assert_matches_golden(d.apply(networks['D'].variables, nhwc(e['img'])), e['D/logits'], 'D')


def test_pickle_that_runs_code_is_refused(tmp_path):
  marker = tmp_path / 'pwned'

  class Exploit:
    def __reduce__(self):
      return (os.makedirs, (str(marker),))

  path = tmp_path / 'evil.pkl'
  path.write_bytes(pickle.dumps({'G': Exploit()}))
  with pytest.raises(UnsafePickleError, match=r'refusing to load global (posix|os)\.makedirs'):
    load_official_pickle(path)
  assert not marker.exists()


@pytest.mark.parametrize('protocol', [2, 3, 4])
def test_globals_of_older_pickles_resolve(protocol):
  """Python 3.7 / numpy 1.x snapshots (protocol 3) name `builtins set` and
  `numpy.core.multiarray scalar`; protocol 2 says `__builtin__` and encodes bytes via _codecs."""
  data = pickle.dumps({'s': {1, 2}, 'x': np.float64(1.5), 'b': b'\x00\xff'}, protocol=protocol)
  if protocol < 4:
    data = data.replace(b'numpy._core.multiarray\nscalar', b'numpy.core.multiarray\nscalar')
    assert b'numpy.core.multiarray\nscalar' in data
  out = RestrictedUnpickler(io.BytesIO(data)).load()
  assert out == {'s': {1, 2}, 'x': 1.5, 'b': b'\x00\xff'}


def test_stylegan3_pickle_is_refused_with_a_clear_message(tmp_path, fake_persistence):
  synthesis = fake_persistence('SynthesisNetwork', {'_modules': {
      'input': fake_persistence('SynthesisInput', {}), 'L0_36_512': None}})
  g = fake_persistence('Generator', {'_modules': {'synthesis': synthesis},
                                     '_init_kwargs': {'z_dim': 512}})
  path = tmp_path / 'stylegan3-t-ffhq.pkl'
  path.write_bytes(pickle.dumps({'G': g, 'D': None, 'G_ema': g}))
  with pytest.raises(ValueError, match='G is a StyleGAN3 network; sg2jax implements StyleGAN2'):
    load_official_pickle(path)


def test_unknown_network_class_and_options_are_named(tmp_path, fake_persistence):
  path = tmp_path / 'other.pkl'
  path.write_bytes(pickle.dumps({'G': fake_persistence('VQGAN', {})}))
  with pytest.raises(ValueError, match='G is a VQGAN, not a StyleGAN2 Generator'):
    load_official_pickle(path)
  g = fake_persistence('Generator', {'_init_kwargs': {
      'z_dim': 8, 'w_dim': 8, 'img_resolution': 8, 'synthesis_kwargs': {'magnitude_ema': 1}}})
  path.write_bytes(pickle.dumps({'G': g}))
  with pytest.raises(ValueError, match='unsupported option.*magnitude_ema'):
    load_official_pickle(path)


def test_missing_and_unknown_parameters_are_named():
  data = read_network_pickle(DATA / 'ada_snapshot_tiny.pkl')
  g = data['G']
  b8 = g.state['_modules']['synthesis'].state['_modules']['b8']
  conv0 = b8.state['_modules']['conv0']
  conv0.state['_parameters'].pop('bias')
  conv0.state['_parameters']['extra'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match=r'missing params/synthesis/b8/conv0/bias; '
                                       r'unknown params/synthesis/b8/conv0/extra'):
    official.ada_network_weights(g, 'G', 'snapshot.pkl')


def test_weights_that_do_not_fit_the_config_are_named():
  data = read_network_pickle(DATA / 'ada_snapshot_tiny.pkl')
  d = data['D']
  d.state['_init_kwargs']['channel_max'] = 16
  with pytest.raises(ValueError, match=r'does not fit Discriminator.*wrong shape params/b16'):
    official.ada_network_weights(d, 'D', 'snapshot.pkl')


@pytest.mark.parametrize('content,match', [
    (b'\x89PNG\r\n\x1a\n' + bytes(64), 'is not a readable StyleGAN2 network pickle'),
    (pickle.dumps({'weights': [1, 2, 3]}), 'is not a StyleGAN2 network pickle: expected'),
    (b'PK\x03\x04' + bytes(64), 'is a zip file'),
])
def test_files_that_are_not_network_pickles(tmp_path, content, match):
  path = tmp_path / 'network.pkl'
  path.write_bytes(content)
  with pytest.raises(ValueError, match=match):
    load_official_pickle(path)


def test_truncated_pickle(tmp_path):
  path = tmp_path / 'truncated.pkl'
  path.write_bytes((DATA / 'ada_snapshot_tiny.pkl').read_bytes()[:300_000])
  with pytest.raises(ValueError, match='is not a readable StyleGAN2 network pickle'):
    load_official_pickle(path)


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    load_official_pickle(tmp_path / 'nope.pkl')


@pytest.mark.parametrize('name', ['inception_fid_subset.pth', 'inception_fid_subset_legacy.pth'])
def test_torch_pth_formats(name):
  """Both torch.save formats (zip; legacy, as pytorch-fid's Inception file) read bit-exactly."""
  import hashlib
  checks = load('inception_fid_subset_checks.npz')
  state = TorchReader().load(DATA / name)
  assert list(state) == list(checks['names'])
  for key, digest, dtype, ndim, shape in zip(checks['names'], checks['sha256'], checks['dtypes'],
                                             checks['ndim'], checks['shapes']):
    value = state[key]
    assert str(value.dtype) == dtype and value.shape == tuple(shape[:ndim]), key
    assert hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest() == digest, key
