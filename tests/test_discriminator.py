"""The discriminator against the official one: every architecture, batch 8 / 2 / 1, conditioning."""

import jax
import jax.numpy as jnp
import pytest

from goldens import assert_matches_golden, golden_network, load, nchw, nhwc
from sg2jax.networks import Discriminator
from sg2jax.networks.weights import abstract_variables


@pytest.mark.parametrize('arch', ['orig', 'skip', 'resnet'])
def test_discriminator_matches_official(arch):
  d, v = golden_network(f'D_{arch}', f'D_{arch}_params.npz')
  io = load(f'D_{arch}_io.npz')
  img = nhwc(io['img'])
  assert_matches_golden(d.apply(v, img), io['logits'], 'batch 8 (two groups of 4)')
  assert_matches_golden(d.apply(v, img[:2]), io['logits_b2'], 'batch 2 (group of 2)')
  assert_matches_golden(d.apply(v, img[:1]), io['logits_b1'], 'batch 1')


def test_parameter_tree_uses_official_names():
  _, v = golden_network('D_resnet', 'D_resnet_params.npz')
  p = v['params']
  assert set(p) == {'b32', 'b16', 'b8', 'b4'}
  assert set(p['b32']) == {'fromrgb', 'conv0', 'conv1', 'skip'}
  assert set(p['b16']) == {'conv0', 'conv1', 'skip'}
  assert set(p['b4']) == {'conv', 'fc', 'out'}
  assert p['b4']['conv']['weight'].shape == (3, 3, 33, 32)
  assert set(v) == {'params'}


def test_conditional_pair_matches_official():
  io = load('cond_io.npz')
  g, gv = golden_network('cond_G_skip', 'cond_G_skip_params.npz')
  d, dv = golden_network('cond_D_resnet', 'cond_D_resnet_params.npz')
  z, c = jnp.asarray(io['z']), jnp.asarray(io['c'])
  assert_matches_golden(g.apply(gv, z, c, method='map'), io['ws'], 'conditional ws')
  assert_matches_golden(nchw(g.apply(gv, jnp.asarray(io['ws']), 'const', method='synthesize')),
                        io['img'], 'conditional synthesis')
  assert_matches_golden(nchw(g.apply(gv, z, c, noise_mode='const')), io['img_G_const'], 'G(z, c)')
  assert_matches_golden(d.apply(dv, nhwc(io['img']), c), io['logits_fake'], 'D(fake, c)')
  assert_matches_golden(d.apply(dv, nhwc(io['img_real']), c), io['logits_real'], 'D(real, c)')
  assert set(dv['params']['mapping']) == {'embed'} | {f'fc{i}' for i in range(8)}


def test_conditional_label_mapping_matches_official():
  """D's cmap (embed -> normalize -> 8 fc) on its own."""
  from sg2jax.networks import MappingNetwork
  io = load('cond_io.npz')
  _, dv = golden_network('cond_D_resnet', 'cond_D_resnet_params.npz')
  mapping = MappingNetwork(z_dim=0, c_dim=4, w_dim=32, num_ws=None, w_avg_beta=None)
  cmap = mapping.apply({'params': dv['params']['mapping']}, None, jnp.asarray(io['c']))
  assert_matches_golden(cmap, io['cmap'], 'cmap')


@pytest.mark.parametrize('arch', ['orig', 'skip', 'resnet'])
def test_resolution_4_and_64(arch, random_variables):
  for res in (4, 64):
    d = Discriminator(img_resolution=res, architecture=arch, channel_base=64, channel_max=8)
    logits = jax.jit(d.apply)(random_variables(d), jnp.zeros((4, res, res, 3)))
    assert logits.shape == (4, 1)


def test_clear_errors():
  with pytest.raises(ValueError, match='img_resolution 48 is not a power of two'):
    Discriminator(img_resolution=48)
  d = Discriminator(img_resolution=8, channel_base=64, channel_max=8)
  v = abstract_variables(d)
  with pytest.raises(ValueError, match='batch 6 is not divisible by the group size 4'):
    jax.eval_shape(lambda v: d.apply(v, jnp.zeros((6, 8, 8, 3))), v)
  with pytest.raises(ValueError, match=r'expects images \[N, 8, 8, 3\] \(NHWC\)'):
    jax.eval_shape(lambda v: d.apply(v, jnp.zeros((4, 3, 8, 8))), v)
