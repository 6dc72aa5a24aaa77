"""Configs A-D against the official TF networks (tests/data/tf_stylegan, made with NVlabs/stylegan2):
StyleGAN (config A, also with fused up/down convs) and the progressive StyleGAN2 networks (B-D) at
lod 0-3 in steps of 0.5, truncation, the E/F cross-check, the reals fade, and TF pickles of A-D."""

import json
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

from goldens import DATA, assert_matches_golden, nchw, nhwc
from sg2jax.formats.official import ada_to_variables, load_official_pickle, tf_to_ada_state_dict
from sg2jax.formats.official_growing import tf_growing_config, tf_growing_to_variables
from sg2jax.networks.weights import build_network, count_params
from sg2jax.ops.pyramid import lower_resolution_copy, process_reals

TF = DATA / 'tf_stylegan'
CONFIGS = json.loads((TF / 'configs.json').read_text())['configs']
KINDS = {'A': ('G_style', 'D_basic'), 'BD': ('G_revised', 'D_stylegan')}
LODS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]


def load(name):
  with np.load(TF / name) as f:
    return dict(f)


@pytest.fixture(scope='module', params=['A', 'BD'])
def growing(request):
  cfg = request.param
  g_kind, d_kind = KINDS[cfg]
  kwargs = CONFIGS[cfg]
  g_config = tf_growing_config(kwargs['G_static_kwargs'], g_kind)
  d_config = tf_growing_config(kwargs['D_static_kwargs'], d_kind)
  gv = tf_growing_to_variables(load(f'{cfg}_G_params.npz'), g_kind, 32)
  dv = tf_growing_to_variables(load(f'{cfg}_D_params.npz'), d_kind, 32)
  return cfg, g_config, d_config, gv, dv, load(f'{cfg}_io.npz')


def test_parameter_counts_equal_tf(growing):
  cfg, _, _, gv, dv, _ = growing
  assert count_params(gv) == CONFIGS[cfg]['G_num_params']
  assert count_params(dv) == CONFIGS[cfg]['D_num_params']


@pytest.mark.parametrize('lod', LODS)
def test_images_and_scores_at_every_lod(growing, lod):
  cfg, g_config, d_config, gv, dv, io = growing
  g, d = build_network(g_config), build_network(d_config)
  resolution = 32 >> int(np.floor(lod))
  ws = g.apply(gv, jnp.asarray(io['z']), method='map')
  assert_matches_golden(ws, io['dlatents'], 'dlatents')
  img = g.apply(gv, ws, 'const', None, lod, resolution, method='synthesize')
  assert_matches_golden(nchw(img), io[f'images/lod{lod:.1f}'], f'{cfg} images lod {lod}')
  scores = d.apply(dv, nhwc(io['d_images']), None, None, lod, resolution)
  assert_matches_golden(scores, io[f'scores/lod{lod:.1f}'], f'{cfg} scores lod {lod}')
  if cfg == 'A':  # the fused up/down convolutions that TF uses from 128 up, forced
    g_fused = build_network({**g_config, 'fused_scale': True})
    d_fused = build_network({**d_config, 'fused_scale': True})
    img = g_fused.apply(gv, ws, 'const', None, lod, resolution, method='synthesize')
    assert_matches_golden(nchw(img), io[f'images_fused/lod{lod:.1f}'], f'fused images lod {lod}')
    scores = d_fused.apply(dv, nhwc(io['d_images']), None, None, lod, resolution)
    assert_matches_golden(scores, io[f'scores_fused/lod{lod:.1f}'], f'fused scores lod {lod}')


def test_truncation(growing):
  cfg, g_config, _, gv, _, io = growing
  g = build_network(g_config)
  img = g.apply(gv, jnp.asarray(io['z']), None, 0.7, 4, 'const')
  assert_matches_golden(nchw(img), io['images_trunc/lod0.0'], f'{cfg} psi 0.7 cutoff 4')


def test_configs_e_f_cross_check():
  """The E/F networks of the same TF harness, through the TF -> ADA names -> sg2jax path."""
  io = load('EF_io.npz')
  kwargs = CONFIGS['EF']
  from sg2jax.formats.official import _tf_config
  g_config, d_config = _tf_config(kwargs['G_static_kwargs'], 'G'), _tf_config(
      kwargs['D_static_kwargs'], 'D')
  gv = ada_to_variables(tf_to_ada_state_dict(load('EF_G_params.npz'), 'G'), 'G')
  dv = ada_to_variables(tf_to_ada_state_dict(load('EF_D_params.npz'), 'D'), 'D')
  g, d = build_network(g_config), build_network(d_config)
  z = jnp.asarray(io['z'])
  assert_matches_golden(g.apply(gv, z, method='map'), io['dlatents'], 'EF dlatents')
  assert_matches_golden(nchw(g.apply(gv, z, noise_mode='const')), io['images'], 'EF images')
  assert_matches_golden(nchw(g.apply(gv, z, None, 0.7, 4, 'const')), io['images_trunc'],
                        'EF truncated')
  assert_matches_golden(d.apply(dv, nhwc(io['d_images'])), io['scores'], 'EF scores')


@pytest.mark.parametrize('lod', [0.0, 0.5, 1.0, 1.5])
def test_reals_fade(lod):
  """TF process_reals: dynamic range, fade with the 2x2 box-downsampled copy, nearest upscale."""
  io = load('A_io.npz')
  out = process_reals(nhwc(io[f'reals_in/lod{lod:.1f}']), lod, 32)
  assert_matches_golden(nchw(out), io[f'reals_processed/lod{lod:.1f}'], f'reals lod {lod}')


def test_lower_resolution_copy_rounds_like_the_tf_dataset_tool():
  io = load('A_io.npz')
  full = nhwc(io['reals_in/lod0.0']).astype(jnp.uint8)
  half = np.asarray(lower_resolution_copy(full, 1))
  # The golden's 16x16 reals are the unrounded 2x2 means; the dataset stores them rounded.
  np.testing.assert_array_equal(half, np.rint(np.transpose(io['reals_in/lod1.0'], (0, 2, 3, 1))))
  quarter = np.asarray(lower_resolution_copy(full, 2)).astype(np.float64)
  means = np.transpose(io['reals_in/lod0.0'], (0, 2, 3, 1)).reshape(4, 8, 4, 8, 4, 3).mean((2, 4))
  np.testing.assert_array_equal(quarter, np.rint(means))


def tf_network(cls, name, func, kwargs, variables, components=None):
  return cls({'version': 4, 'name': name, 'static_kwargs': kwargs, 'components': components or {},
              'build_module_src': '# source not stored', 'build_func_name': func,
              'variables': list(variables.items())})


@pytest.mark.parametrize('cfg', ['A', 'BD'])
def test_tf_pickles_of_configs_a_to_d_load(cfg, tmp_path, fake_tf_network):
  """A pickle in the released format (tuple G, D, Gs of Network states, component-relative
  variable names) loads through load_official_pickle and reproduces the TF images and scores."""
  kwargs = CONFIGS[cfg]
  g_params, d_params = load(f'{cfg}_G_params.npz'), load(f'{cfg}_D_params.npz')
  g_func = kwargs['G_func'].split('.')[-1]
  synthesis_func = 'G_synthesis' if cfg == 'A' else 'G_synthesis_stylegan_revised'
  part = lambda prefix: {k[len(prefix):]: v for k, v in g_params.items() if k.startswith(prefix)}
  top = {k: v for k, v in g_params.items() if '/' not in k}
  top['lod'] = np.float32(0)

  def make_g(name):
    components = {
        'mapping': tf_network(fake_tf_network, 'G_mapping', 'G_mapping', {},
                              part('G_mapping/')),
        'synthesis': tf_network(fake_tf_network, 'G_synthesis', synthesis_func, {},
                                {**part('G_synthesis/'), 'lod': np.float32(0)})}
    static = {k: v for k, v in kwargs['G_static_kwargs'].items() if k != 'synthesis_func'}
    return tf_network(fake_tf_network, name, g_func, static, top, components)

  d = tf_network(fake_tf_network, 'D', kwargs['D_func'].split('.')[-1], kwargs['D_static_kwargs'],
                 {**d_params, 'lod': np.float32(0)})
  path = tmp_path / f'stylegan2-test-config-{cfg.lower()}.pkl'
  path.write_bytes(pickle.dumps((make_g('G'), d, make_g('Gs')), protocol=4))
  networks = load_official_pickle(path)
  io = load(f'{cfg}_io.npz')
  g = build_network(networks['G_ema'].config)
  img = g.apply(networks['G_ema'].variables, jnp.asarray(io['z']), noise_mode='const')
  assert_matches_golden(nchw(img), io['images/lod0.0'], f'{cfg} pickle images')
  dn = build_network(networks['D'].config)
  assert_matches_golden(dn.apply(networks['D'].variables, nhwc(io['d_images'])),
                        io['scores/lod0.0'], f'{cfg} pickle scores')
