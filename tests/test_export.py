"""`sg2jax.export`: TF StyleGAN2 pickles that sg2jax's reader and the official legacy loader read.

These tests need no torch: they read the files back with sg2jax and check what the official
`legacy.load_network_pkl` relies on (REFERENCE.md §8.3-§8.6). The official loader itself opens the
exports in `benchmarks/check_export_with_official.py`.
"""

import io
import json
import os
import pickle
import pickletools
import shutil
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldens import DATA, load
from sg2jax import export
from sg2jax.checkpoint import load_networks
from sg2jax.cli import run
from sg2jax.formats import tf_export
from sg2jax.formats.official import load_official_pickle, read_network_pickle
from sg2jax.formats.tf_export import discriminator_kwargs, generator_kwargs, write_tf_pickle
from sg2jax.networks.weights import (NetworkWeights, build_network, flatten_variables,
                                     network_config)
from sg2jax.tools.sampling import z_from_seed

SEEDS = (0, 1, 2, 3)
NETWORKS = ('G', 'D', 'G_ema')

# What legacy.load_network_pkl accepts (REFERENCE.md §8.4, ADA legacy.py:113-155 and :211-252):
# the key, and the value it assumes when the key is absent. Other keys are refused.
LEGACY_G_KWARGS = {
    'latent_size': 512, 'label_size': 0, 'dlatent_size': 512, 'resolution': 1024,
    'num_channels': 3, 'mapping_layers': 8, 'label_fmaps': None, 'mapping_fmaps': None,
    'mapping_nonlinearity': 'lrelu', 'mapping_lrmul': 0.01, 'w_avg_beta': 0.995,
    'fmap_base': 16384, 'fmap_max': 512, 'num_fp16_res': 0, 'conv_clamp': None,
    'architecture': 'skip', 'resample_kernel': [1, 3, 3, 1], 'use_noise': True,
    'nonlinearity': 'lrelu', 'truncation_psi': None, 'truncation_cutoff': None,
    'style_mixing_prob': None, 'structure': None}
LEGACY_D_KWARGS = {
    'label_size': 0, 'resolution': 1024, 'num_channels': 3, 'architecture': 'resnet',
    'fmap_base': 16384, 'fmap_max': 512, 'num_fp16_res': 0, 'conv_clamp': None,
    'mapping_fmaps': None, 'nonlinearity': 'lrelu', 'resample_kernel': [1, 3, 3, 1],
    'freeze_layers': 0, 'mapping_layers': 0, 'mapping_lrmul': 0.1, 'mbstd_group_size': None,
    'mbstd_num_features': 1, 'structure': None}
# The only globals an export may name: the TF network class, and numpy's array reconstruction
# under the names numpy 1.x writes (which numpy 2 still resolves).
ALLOWED_GLOBALS = {('dnnlib.tflib.network', 'Network'), ('numpy.core.multiarray', '_reconstruct'),
                   ('numpy', 'ndarray'), ('numpy', 'dtype')}


def mod_bias_round_trip(bias: np.ndarray) -> np.ndarray:
  """What the TF format gives back for an affine bias: it stores `bias - 1` in float32 and
  readers add the 1 again (exact for biases >= 0.5, within float32 rounding of 1 below)."""
  one = np.float32(1)
  return (np.asarray(bias, np.float32) - one) + one


def effective_config(config: dict) -> dict:
  """A config with its defaults filled in, without the fields that do not change the function
  (`fused_modconv`: same values; the unused label mapping of unconditional networks) and with
  `None` widths spelled out as the widths they mean."""
  config = network_config(build_network(config))
  config.pop('fused_modconv', None)
  if config['class'] == 'Generator':
    config['layer_features'] = config['layer_features'] or config['w_dim']
    config['embed_features'] = config['embed_features'] or config['w_dim']
  if config['c_dim'] == 0:  # no label embedding, no label mapping
    config.pop('embed_features', None)
    if config['class'] == 'Discriminator':
      for key in ('cmap_dim', 'mapping_layers', 'mapping_lr_multiplier'):
        config.pop(key)
  config['resample_filter'] = [float(t) for t in config['resample_filter']]
  return config


def tf_variables_of(state) -> dict:
  """`{component/name: array}` of a TF network read by sg2jax's restricted unpickler."""
  out = {name: value for name, value in state.state['variables']}
  for component, sub in state.state['components'].items():
    out.update({f'{component}/{k}': v for k, v in tf_variables_of(sub).items()})
  return out


_PROGRAMS = {}


def outputs(networks: dict, fused_modconv=None) -> dict:
  """G_ema's images of SEEDS (psi 0.7, const noise) and D's logits on them.

  `fused_modconv`: run the generator with this setting (it changes the program, not the values).
  """
  g_config = dict(networks['G_ema'].config)
  if fused_modconv is not None:
    g_config['fused_modconv'] = fused_modconv
  programs = []
  for config in (g_config, networks['D'].config):
    key = json.dumps(config, sort_keys=True)
    if key not in _PROGRAMS:
      net = build_network(config)
      _PROGRAMS[key] = jax.jit(
          (lambda v, z, net=net: net.apply(v, z, truncation_psi=0.7, noise_mode='const'))
          if config['class'] == 'Generator' else net.apply)
    programs.append(_PROGRAMS[key])
  z = jnp.asarray(np.concatenate([z_from_seed(s, g_config['z_dim']) for s in SEEDS]))
  images = programs[0](networks['G_ema'].variables, z)
  return {'images': np.asarray(images),
          'logits': np.asarray(programs[1](networks['D'].variables, images))}


# ----------------------------------------------------------------------------------------------
# Three sources: an ADA snapshot, a TF pickle and a training run (exported once per module).

@pytest.fixture(scope='module')
def training_run(tmp_path_factory):
  """The 2-step run of tests/tiny_experiment.py (8x8, G skip / D resnet) in a fresh workdir."""
  workdir = tmp_path_factory.mktemp('run') / 'run'
  shutil.copytree(DATA / 'old_format' / 'train_run_checkpoints', workdir / 'checkpoints')
  shutil.copy(DATA / 'old_format' / 'train_run_config.json', workdir / 'config.json')
  return workdir


@pytest.fixture(scope='module')
def sources(training_run):
  return {'ada': load_networks(DATA / 'ada_snapshot_tiny.pkl'),
          'tf': load_networks(DATA / 'tf_snapshot_tiny.pkl'),
          'run': load_networks(training_run)}


@pytest.fixture(scope='module')
def exported(sources, tmp_path_factory):
  folder = tmp_path_factory.mktemp('exported')
  return {name: write_tf_pickle(networks, folder / f'{name}.pkl')
          for name, networks in sources.items()}


@pytest.mark.parametrize('source', ['ada', 'tf', 'run'])
def test_reads_back_to_identical_variables(sources, exported, source):
  readback = load_official_pickle(exported[source])
  assert set(readback) == set(NETWORKS)
  for name in NETWORKS:
    want, got = sources[source][name], readback[name]
    want_config, got_config = effective_config(want.config), effective_config(got.config)
    # sg2jax's TF reader ignores conv_clamp (the official loader takes it: see the kwargs test).
    assert want_config.pop('conv_clamp') == (256 if source == 'ada' else None)
    assert got_config.pop('conv_clamp') is None
    assert got_config == want_config, name
    want_leaves, got_leaves = flatten_variables(want.variables), flatten_variables(got.variables)
    assert set(got_leaves) == set(want_leaves), name
    for key, value in want_leaves.items():
      if key.endswith('affine/bias'):
        value = mod_bias_round_trip(value)
      np.testing.assert_array_equal(got_leaves[key], np.asarray(value), err_msg=f'{name} {key}')


@pytest.mark.parametrize('source', ['ada', 'tf', 'run'])
def test_reads_back_to_identical_images(sources, exported, source):
  want = outputs(sources[source])
  readback = load_official_pickle(exported[source])
  # The training run's G modulates activations (fused_modconv False): same values, other program.
  got = outputs(readback, fused_modconv=sources[source]['G_ema'].config.get('fused_modconv'))
  for key in want:
    if source == 'ada':
      # The read-back networks lack conv_clamp 256 (sg2jax's reader ignores it). No value here
      # reaches 256, but the programs differ, so XLA may round a float32 differently.
      np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-5, err_msg=key)
    else:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_tf_pickle_exports_to_its_own_variables_and_kwargs(exported):
  """Read and written again, NVIDIA-format TF networks keep every variable name and value
  (`mod_bias` up to the float32 rounding of `(m + 1) - 1`), their build functions and kwargs."""
  expected = load('tf_snapshot_tiny_expected.npz')
  original = read_network_pickle(DATA / 'tf_snapshot_tiny.pkl')
  written = read_network_pickle(exported['tf'])
  for tf_name, want_net, got_net in zip(('G', 'D', 'Gs'), original, written):
    prefix = f'tf/{tf_name}/'
    want = {k[len(prefix):]: v for k, v in expected.items() if k.startswith(prefix)}
    got = tf_variables_of(got_net)
    assert set(got) == set(want), tf_name
    for name, value in want.items():
      if name.endswith('mod_bias'):
        value = (value + np.float32(1)) - np.float32(1)
      np.testing.assert_array_equal(got[name], value, err_msg=f'{tf_name} {name}')
    for key in ('version', 'name', 'build_func_name'):
      assert got_net.state[key] == want_net.state[key], (tf_name, key)
    for component, sub in want_net.state['components'].items():
      assert got_net.state['components'][component].state['build_func_name'] == \
          sub.state['build_func_name']
    kwargs = got_net.state['static_kwargs']
    for key, value in want_net.state['static_kwargs'].items():
      assert kwargs[key] == value, (tf_name, key)


# ----------------------------------------------------------------------------------------------
# The file: what the official loader unpickles, and nothing else.

def pickle_globals(data: bytes) -> set:
  """Every global a pickle names: GLOBAL opcodes, and STACK_GLOBAL with the two strings it pops
  (pushed directly or fetched from the memo)."""
  found, stack, memo = set(), [], {}
  for opcode, arg, _ in pickletools.genops(data):
    if opcode.name == 'GLOBAL':
      found.add(tuple(arg.split(' ', 1)))
    elif opcode.name in ('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE'):
      stack.append(arg)
    elif opcode.name == 'MEMOIZE':
      memo[len(memo)] = stack[-1] if stack else None
    elif opcode.name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
      memo[int(arg)] = stack[-1] if stack else None
    elif opcode.name in ('BINGET', 'LONG_BINGET', 'GET'):
      stack.append(memo.get(int(arg)))
    elif opcode.name == 'STACK_GLOBAL':
      found.add((stack[-2], stack[-1]))
      stack.append(None)
    else:
      stack.append(None)  # only the two values under STACK_GLOBAL are ever read
  return found


class LegacyStub(dict):
  """What legacy.py unpickles `dnnlib.tflib.network.Network` as: a dict subclass whose pickled
  state lands in `__dict__`."""


class OfficialLikeUnpickler(pickle.Unpickler):
  """Resolves the TF network class to `LegacyStub` and nothing but ALLOWED_GLOBALS, with the real
  numpy of this process (numpy 2 here: the numpy 1.x names must still resolve)."""

  def find_class(self, module, name):
    if (module, name) not in ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(f'unexpected global {module}.{name}')
    if (module, name) == ('dnnlib.tflib.network', 'Network'):
      return LegacyStub
    return super().find_class(module, name)


def plain_values(value) -> bool:
  """Static kwargs hold only Python ints, floats, strings, bools, None and lists of those."""
  if isinstance(value, list):
    return all(plain_values(v) for v in value)
  return value is None or type(value) in (int, float, str, bool)


@pytest.mark.parametrize('source', ['ada', 'tf', 'run'])
def test_pickle_names_only_allowed_globals(exported, source):
  data = exported[source].read_bytes()
  assert data[:2] == b'\x80\x04'  # protocol 4, as TF StyleGAN2 wrote
  assert pickle_globals(data) == ALLOWED_GLOBALS
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # numpy 2 resolves numpy.core.multiarray without a warning
    nets = OfficialLikeUnpickler(io.BytesIO(data)).load()
  assert isinstance(nets, tuple) and len(nets) == 3
  assert all(type(net) is LegacyStub for net in nets)

  def check(net, name, build_func, components):
    state = net.__dict__
    assert set(state) == {'version', 'name', 'static_kwargs', 'components', 'build_module_src',
                          'build_func_name', 'variables'}
    assert (state['version'], state['name'], state['build_func_name']) == (4, name, build_func)
    assert isinstance(state['build_module_src'], str)
    assert sorted(state['components']) == components
    assert all(plain_values(v) for v in state['static_kwargs'].values())
    for var_name, value in state['variables']:
      assert type(var_name) is str and type(value) is np.ndarray, var_name
      assert value.dtype == np.float32 and value.flags['C_CONTIGUOUS'], var_name

  g, d, gs = nets
  for net, name in ((g, 'G'), (gs, 'Gs')):
    check(net, name, 'G_main', ['mapping', 'synthesis'])
    check(net.__dict__['components']['mapping'], 'G_mapping', 'G_mapping', [])
    check(net.__dict__['components']['synthesis'], 'G_synthesis', 'G_synthesis_stylegan2', [])
  check(d, 'D', 'D_stylegan2', [])
  assert read_network_pickle(exported[source]) is not None  # sg2jax's restricted allow-list


# ----------------------------------------------------------------------------------------------
# Static kwargs: only keys legacy.py accepts, and its reading of them rebuilds the network.

def legacy_reading(kwargs: dict, network: str) -> dict:
  """What legacy.py builds from TF static kwargs (REFERENCE.md §8.4), in sg2jax's field names."""
  table = LEGACY_G_KWARGS if network == 'G' else LEGACY_D_KWARGS
  unknown = set(kwargs) - set(table)
  assert not unknown, f'legacy.py refuses {unknown}'
  kw = lambda key: kwargs.get(key, table[key])
  common = {'c_dim': kw('label_size'), 'img_resolution': kw('resolution'),
            'img_channels': kw('num_channels'), 'channel_base': kw('fmap_base') * 2,
            'channel_max': kw('fmap_max'), 'conv_clamp': kw('conv_clamp'),
            'architecture': kw('architecture'),
            'resample_filter': [float(t) for t in kw('resample_kernel')]}
  if network == 'G':
    w_dim = kw('dlatent_size')
    out = {'class': 'Generator', 'z_dim': kw('latent_size'), 'w_dim': w_dim,
           'mapping_layers': kw('mapping_layers'), 'mapping_lr_multiplier': kw('mapping_lrmul'),
           'layer_features': kw('mapping_fmaps') or w_dim,
           'w_avg_beta': 1 if kw('w_avg_beta') is None else kw('w_avg_beta'),
           'use_noise': kw('use_noise'), **common}
    if out['c_dim']:
      out['embed_features'] = kw('label_fmaps') or w_dim
    return out
  out = {'class': 'Discriminator', 'mbstd_group_size': kw('mbstd_group_size'),
         'mbstd_num_channels': kw('mbstd_num_features'), **common}
  if out['c_dim']:
    out.update(cmap_dim=kw('mapping_fmaps'), mapping_layers=kw('mapping_layers'),
               mapping_lr_multiplier=kw('mapping_lrmul'))
  return out


def assert_legacy_rebuilds(g_config: dict, d_config: dict) -> None:
  for config, kwargs_of, network in ((g_config, generator_kwargs, 'G'),
                                     (d_config, discriminator_kwargs, 'D')):
    config = network_config(build_network(config))
    want = effective_config(config)
    if network == 'D' and want['c_dim'] and want['cmap_dim'] is None:
      want['cmap_dim'] = min(want['channel_base'] // 4, want['channel_max'])
    got = legacy_reading(kwargs_of(config), network)
    assert {k: want[k] for k in got} == got, network


@pytest.mark.parametrize('source', ['ada', 'tf', 'run'])
def test_static_kwargs_rebuild_the_networks_in_legacy(sources, exported, source):
  nets = read_network_pickle(exported[source])
  for net, name in zip(nets, NETWORKS):
    config = effective_config(sources[source][name].config)
    got = legacy_reading(net.state['static_kwargs'], name[0])
    assert {k: config[k] for k in got} == got, name
    if name == 'D':  # absent, legacy.py would take the whole minibatch as one group
      assert net.state['static_kwargs']['mbstd_group_size'] == 4


SMALL = dict(img_resolution=16, channel_base=256, channel_max=32)
G_SMALL = dict(SMALL, **{'class': 'Generator'}, z_dim=16, w_dim=16, mapping_layers=2)
D_SMALL = dict(SMALL, **{'class': 'Discriminator'})
VARIANTS = {
    'conditional': (dict(G_SMALL, c_dim=4, embed_features=8, layer_features=24),
                    dict(D_SMALL, c_dim=4, cmap_dim=8, mapping_layers=2)),
    'conditional_default_cmap': (dict(G_SMALL, c_dim=3), dict(D_SMALL, c_dim=3)),
    'clamped_whole_batch_mbstd': (dict(G_SMALL, conv_clamp=0.5, architecture='resnet'),
                                  dict(D_SMALL, conv_clamp=0.5, mbstd_group_size=None,
                                       architecture='orig')),
    'no_noise_grey_fir121': (
        dict(G_SMALL, use_noise=False, w_avg_beta=0.9, img_channels=1, resample_filter=[1, 2, 1],
             mapping_lr_multiplier=0.1, architecture='orig'),
        dict(D_SMALL, img_channels=1, resample_filter=[1, 2, 1], mbstd_group_size=2,
             mbstd_num_channels=2, architecture='skip')),
}


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_static_kwargs_of_other_networks(variant):
  assert_legacy_rebuilds(*VARIANTS[variant])


@pytest.fixture
def make_networks(random_variables):
  def make(g_config, d_config):
    return {name: NetworkWeights(config, random_variables(build_network(config), seed))
            for seed, (name, config) in enumerate((('G', g_config), ('D', d_config),
                                                   ('G_ema', g_config)))}
  return make


def test_conditional_networks_carry_their_label_layers(make_networks, tmp_path):
  networks = make_networks(*VARIANTS['conditional'])
  nets = read_network_pickle(write_tf_pickle(networks, tmp_path / 'cond.pkl'))
  g = tf_variables_of(nets[2])
  g_params = networks['G_ema'].variables['params']['mapping']
  np.testing.assert_array_equal(g['mapping/LabelEmbed/weight'], g_params['embed']['weight'])
  np.testing.assert_array_equal(g['mapping/LabelEmbed/bias'], g_params['embed']['bias'])
  assert g['mapping/LabelEmbed/weight'].shape == (4, 8)  # [c_dim, label_fmaps]
  assert g['mapping/Dense0/weight'].shape == (16 + 8, 24)  # [z_dim + label_fmaps, mapping_fmaps]
  d = tf_variables_of(nets[1])
  d_params = networks['D'].variables['params']
  np.testing.assert_array_equal(d['LabelEmbed/weight'], d_params['mapping']['embed']['weight'])
  np.testing.assert_array_equal(d['Mapping1/bias'], d_params['mapping']['fc1']['bias'])
  np.testing.assert_array_equal(d['Output/weight'], d_params['b4']['out']['weight'])
  assert d['Output/weight'].shape == (32, 8)  # [C at 4x4, cmap_dim]
  assert nets[2].state['static_kwargs']['label_size'] == 4
  assert nets[1].state['static_kwargs']['mapping_fmaps'] == 8


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_every_variable_is_written_once(make_networks, tmp_path, variant):
  networks = make_networks(*VARIANTS[variant])
  nets = read_network_pickle(write_tf_pickle(networks, tmp_path / 'net.pkl'))
  for net, name in zip(nets, NETWORKS):
    names = [n for n, _ in net.state['variables']] + [
        n for sub in net.state['components'].values() for n, _ in sub.state['variables']]
    assert len(names) == len(set(names))
    leaves = flatten_variables(networks[name].variables)
    assert len(names) == len(leaves) + (name != 'D'), name  # + G's `lod`
    values = tf_variables_of(net)
    if name != 'D':  # the 4x4 constant, and the first noise input (none without noise)
      const = networks[name].variables['params']['synthesis']['b4']['const']
      np.testing.assert_array_equal(values['synthesis/4x4/Const/const'][0],
                                    np.transpose(const, (2, 0, 1)))
      buffers = networks[name].variables.get('buffers')
      if buffers:
        np.testing.assert_array_equal(values['synthesis/noise2'][0, 0],
                                      buffers['synthesis']['b8']['conv1']['noise_const'])


def test_discriminator_dense_rows_are_in_nchw_order(make_networks, tmp_path):
  networks = make_networks(*VARIANTS['clamped_whole_batch_mbstd'])
  d = tf_variables_of(read_network_pickle(write_tf_pickle(networks, tmp_path / 'n.pkl'))[1])
  weight = networks['D'].variables['params']['b4']['fc']['weight']  # rows (h, w, c)
  c = weight.shape[0] // 16
  h, w, ch = 1, 2, 3
  np.testing.assert_array_equal(d['4x4/Dense0/weight'][ch * 16 + h * 4 + w],
                                weight[(h * 4 + w) * c + ch])


# ----------------------------------------------------------------------------------------------
# Networks the format cannot express, and the output file.

def with_config(networks: dict, name: str, **changes) -> dict:
  out = dict(networks)
  out[name] = NetworkWeights(dict(networks[name].config, **changes), networks[name].variables)
  return out


@pytest.mark.parametrize('name, changes, match', [
    ('G', {'class': 'ProgressiveGenerator'}, r'G is a ProgressiveGenerator \(configs A-D'),
    ('D', {'class': 'BasicDiscriminator'}, r'D is a BasicDiscriminator \(configs A-D'),
    ('G_ema', {'dtype': 'bfloat16'}, 'G_ema computes in bfloat16; the TF format has no such'),
    ('D', {'architecture': 'skip', 'conv_clamp': 256}, 'sg2jax clamps the 4x4 FromRGB'),
    ('G', {'channel_base': 513}, 'channel_base 513 is odd'),
    ('D', {'class': 'Generator'}, 'D is a Generator, not a Discriminator'),
])
def test_networks_the_format_cannot_express(sources, tmp_path, name, changes, match):
  networks = with_config(sources['tf'], name, **changes)
  with pytest.raises(ValueError, match=match):
    write_tf_pickle(networks, tmp_path / 'net.pkl')
  assert not os.listdir(tmp_path)


def test_discriminator_at_resolution_4(make_networks, tmp_path):
  networks = make_networks(dict(G_SMALL, img_resolution=4), dict(D_SMALL, img_resolution=4))
  with pytest.raises(ValueError, match='cannot run at resolution 4'):
    write_tf_pickle(networks, tmp_path / 'net.pkl')


def test_all_three_networks_are_needed(sources, tmp_path):
  networks = {k: v for k, v in sources['tf'].items() if k != 'D'}
  with pytest.raises(ValueError, match='holds G, D and G_ema together; this source has no D'):
    write_tf_pickle(networks, tmp_path / 'net.pkl')


def test_output_is_never_overwritten_unless_asked(sources, exported, tmp_path):
  path = tmp_path / 'net.pkl'
  path.write_bytes(b'keep')
  with pytest.raises(FileExistsError, match='already exists; choose a new file name or pass '
                                            '--overwrite'):
    write_tf_pickle(sources['run'], path)
  assert path.read_bytes() == b'keep'
  write_tf_pickle(sources['run'], path, overwrite=True)
  assert_same_networks(path, exported['run'])
  with pytest.raises(ValueError, match='is a folder; pass a file name'):
    write_tf_pickle(sources['run'], tmp_path)


def test_failed_write_leaves_nothing_behind(sources, tmp_path, monkeypatch):
  def fail(data, f, protocol):
    f.write(b'\x80\x04partial')
    raise OSError('disk full')

  reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
  module = reconstruct.__module__
  monkeypatch.setattr(tf_export.pickle, 'dump', fail)
  with pytest.raises(OSError, match='disk full'):
    write_tf_pickle(sources['run'], tmp_path / 'net.pkl')
  assert not os.listdir(tmp_path)  # neither net.pkl nor the temporary file
  assert not [m for m in sys.modules if m.split('.')[0] == 'dnnlib']  # stubs gone
  assert reconstruct.__module__ == module  # numpy's name restored


# ----------------------------------------------------------------------------------------------
# The command.

def assert_same_networks(path, other) -> None:
  """Two exports hold the same states: kwargs, build functions and variables (their bytes may
  differ where pickle shares one string object between values)."""
  def flat(state, prefix=''):
    out = {f'{prefix}{k}': v for k, v in state.state.items()
           if k not in ('components', 'variables')}
    out.update({f'{prefix}variables/{k}': v for k, v in state.state['variables']})
    for name, sub in state.state['components'].items():
      out.update(flat(sub, f'{prefix}{name}/'))
    return out

  for got, want in zip(read_network_pickle(path), read_network_pickle(other)):
    got, want = flat(got), flat(want)
    assert set(got) == set(want)
    for key, value in want.items():
      if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(got[key], value, err_msg=key)
      else:
        assert got[key] == value, key


def test_command_exports_a_training_run(training_run, exported, tmp_path, capsys):
  out = tmp_path / 'sub' / 'run.pkl'
  assert export.main(['--network', str(training_run), '--out', str(out)]) == 0
  printed = capsys.readouterr().out
  assert 'G_ema -> Gs: Generator 8x8, skip' in printed and f'wrote {out}' in printed
  assert_same_networks(out, exported['run'])


def test_command_exports_a_converted_folder(exported, tmp_path):
  """tests/data/old_format/converted is `sg2jax.convert` of the ADA snapshot: the same file."""
  out = tmp_path / 'converted.pkl'
  assert export.main(['--network', str(DATA / 'old_format' / 'converted'), '--out', str(out)]) == 0
  assert_same_networks(out, exported['ada'])


@pytest.mark.parametrize('case, message', [
    ('existing', 'already exists; choose a new file name or pass --overwrite'),
    ('missing', 'not found; pass an official .pkl'),
])
def test_command_errors_are_one_line(training_run, tmp_path, case, message):
  existing = tmp_path / 'existing.pkl'
  existing.write_bytes(b'keep')
  if case == 'existing':
    argv = ['--network', str(training_run), '--out', str(existing)]
  else:
    argv = ['--network', str(tmp_path / 'missing'), '--out', str(tmp_path / 'new.pkl')]
  with pytest.raises(SystemExit) as exit_info:
    run(lambda: export.main(argv))
  line = str(exit_info.value.code)
  assert line.startswith('error: ') and message in line and '\n' not in line
  assert existing.read_bytes() == b'keep'
  assert sorted(os.listdir(tmp_path)) == ['existing.pkl']
