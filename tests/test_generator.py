"""The generator against the official one: every architecture, noise mode and modconv form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldens import assert_matches_golden, golden_network, load, nchw, nhwc
from sg2jax.networks import Generator, mix_styles, sample_mixing_cutoff
from sg2jax.networks.weights import abstract_variables, count_params, init_variables
from sg2jax.tools.sampling import layer_resolutions

ARCHITECTURES = ['orig', 'skip', 'resnet']


@pytest.fixture(scope='module', params=ARCHITECTURES)
def golden(request):
  arch = request.param
  generator, variables = golden_network(f'G_{arch}', f'G_{arch}_params.npz')
  nonfused, _ = golden_network(f'G_{arch}', f'G_{arch}_params.npz', fused_modconv=False)
  return arch, generator, nonfused, variables, load(f'G_{arch}_io.npz')


def test_mapping_and_truncation(golden):
  _, g, _, v, io = golden
  z = jnp.asarray(io['z'])
  assert_matches_golden(g.apply(v, z, method='map'), io['ws_psi1'], 'ws')
  assert_matches_golden(g.apply(v, z, None, 0.7, method='map'), io['ws_psi0.7'], 'psi 0.7')
  assert_matches_golden(g.apply(v, z, None, 0.7, 2, method='map'), io['ws_psi0.7_cutoff2'],
                        'psi 0.7 cutoff 2')


@pytest.mark.parametrize('noise_mode', ['const', 'none'])
@pytest.mark.parametrize('fused', [True, False])
def test_synthesis(golden, noise_mode, fused):
  _, g, g_nonfused, v, io = golden
  net = g if fused else g_nonfused
  img = net.apply(v, jnp.asarray(io['ws_psi1']), noise_mode, method='synthesize')
  ref = io[f'img_{noise_mode}_fused' if fused else f'img_{noise_mode}_trainmode']
  assert_matches_golden(nchw(img), ref, f'{noise_mode} fused={fused}')


def test_synthesis_with_the_official_random_noise(golden):
  _, g, _, v, io = golden
  names = [f'noise/synthesis.b{r}.conv{i}' for r in layer_resolutions(32)[1::2] for i in (0, 1)]
  names = ['noise/synthesis.b4.conv1'] + names
  assert sorted(names) == sorted(k for k in io if k.startswith('noise/'))
  img = g.apply(v, jnp.asarray(io['ws_psi1']), noise=[nhwc(io[k]) for k in names],
                method='synthesize')
  assert_matches_golden(nchw(img), io['img_random_fused'], 'random noise')


def test_generator_end_to_end(golden):
  _, g, _, v, io = golden
  z = jnp.asarray(io['z'])
  assert_matches_golden(nchw(g.apply(v, z, noise_mode='const')), io['img_G_const'], 'G(z)')
  assert_matches_golden(nchw(g.apply(v, z, truncation_psi=0.7, noise_mode='const')),
                        io['img_G_psi0.7_const'], 'G(z, psi 0.7)')


def test_style_mixing(golden):
  _, g, _, v, io = golden
  ws2 = g.apply(v, jnp.asarray(io['mix_z2']), method='map')
  assert_matches_golden(ws2, io['mix_ws2'], 'ws2')
  mixed = mix_styles(jnp.asarray(io['ws_psi1']), ws2, 4)
  assert_matches_golden(mixed, io['mix_ws'], 'mixed ws')
  img = g.apply(v, mixed, 'const', method='synthesize')
  assert_matches_golden(nchw(img), io['img_mix_const'], 'mixed image')


def test_w_avg_update_in_training_mode(golden):
  _, g, _, v, io = golden
  _, state = g.apply(v, jnp.asarray(io['z']), update_w_avg=True, mutable=['stats'], method='map')
  assert_matches_golden(state['stats']['mapping']['w_avg'], io['w_avg_after_train_mapping'],
                        'w_avg')
  # Without update_w_avg (inference) nothing changes.
  _, state = g.apply(v, jnp.asarray(io['z']), mutable=['stats'], method='map')
  np.testing.assert_array_equal(state['stats']['mapping']['w_avg'], v['stats']['mapping']['w_avg'])


def test_parameter_tree_uses_official_names(golden):
  arch, g, _, v, _ = golden
  synthesis = v['params']['synthesis']
  assert set(v) == {'params', 'stats', 'buffers'}
  assert set(v['params']['mapping']) == {f'fc{i}' for i in range(8)}
  assert set(synthesis['b8']['conv0']) == {'affine', 'weight', 'bias', 'noise_strength'}
  assert set(synthesis['b8']['conv0']['affine']) == {'weight', 'bias'}
  assert ('torgb' in synthesis['b8']) == (arch == 'skip')
  assert ('skip' in synthesis['b8']) == (arch == 'resnet')
  assert v['buffers']['synthesis']['b16']['conv1']['noise_const'].shape == (16, 16)
  assert synthesis['b4']['const'].shape == (4, 4, 32)


def test_mix_styles_and_cutoff_sampling():
  ws, ws2 = jnp.zeros((2, 6, 3)), jnp.ones((2, 6, 3))
  np.testing.assert_array_equal(mix_styles(ws, ws2, 2)[0, :, 0], [0, 0, 1, 1, 1, 1])
  cutoffs = jax.vmap(lambda k: sample_mixing_cutoff(k, 6, 0.9))(
      jax.random.split(jax.random.key(0), 4000))
  cutoffs = np.asarray(cutoffs)
  assert set(np.unique(cutoffs)) == {1, 2, 3, 4, 5, 6}
  assert abs((cutoffs == 6).mean() - 0.1) < 0.02  # no mixing
  assert abs((cutoffs == 3).mean() - 0.9 / 5) < 0.03  # cutoffs 1..5 equally likely
  assert np.asarray(jax.vmap(lambda k: sample_mixing_cutoff(k, 6, 0.0))(
      jax.random.split(jax.random.key(1), 10))).tolist() == [6] * 10


@pytest.mark.parametrize('resolution', [4, 8, 64])
def test_any_power_of_two_resolution_and_z_dim_different_from_w_dim(resolution,
                                                                     random_variables):
  g = Generator(z_dim=12, w_dim=8, img_resolution=resolution, channel_base=64, channel_max=8,
                mapping_layers=2, img_channels=1)
  v = random_variables(g)
  img = jax.jit(g.apply)(v, jnp.ones((3, 12)), rngs={'noise': jax.random.key(1)})
  assert img.shape == (3, resolution, resolution, 1)
  assert g.num_ws == 2 * int(np.log2(resolution)) - 2
  assert v['params']['mapping']['fc0']['weight'].shape == (12, 8)


def test_initialization_follows_the_official_scheme():
  g = Generator(z_dim=16, w_dim=16, img_resolution=8, channel_base=256, channel_max=16)
  p = init_variables(g, jax.random.key(0))['params']
  np.testing.assert_allclose(np.std(p['mapping']['fc0']['weight']), 100, rtol=0.2)  # N(0, 1/0.01^2)
  np.testing.assert_array_equal(p['synthesis']['b8']['conv0']['affine']['bias'], 1)
  np.testing.assert_array_equal(p['synthesis']['b8']['conv0']['noise_strength'], 0)
  np.testing.assert_allclose(np.std(p['synthesis']['b8']['conv0']['weight']), 1, rtol=0.1)


def test_conv_clamp_limits_the_activations(golden):
  _, g, _, v, io = golden
  clamped = g.clone(conv_clamp=0.5)
  img = clamped.apply(v, jnp.asarray(io['ws_psi1']), 'const', method='synthesize')
  reference = g.apply(v, jnp.asarray(io['ws_psi1']), 'const', method='synthesize')
  assert np.abs(np.asarray(img)).max() < np.abs(np.asarray(reference)).max()
  assert np.abs(np.asarray(img)).max() <= 0.5 * (1 + (g.architecture == 'skip') * 4) + 1e-6


def test_bfloat16_compute_keeps_float32_params_and_stays_close(golden):
  _, g, _, v, io = golden
  bf16 = g.clone(dtype='bfloat16')
  ws = jnp.asarray(io['ws_psi1'])
  img = jax.jit(lambda v, ws: bf16.apply(v, ws, 'const', method='synthesize'))(v, ws)
  assert img.dtype == jnp.float32
  ref = io['img_const_fused']
  rel = np.abs(nchw(img) - ref).max() / np.abs(ref).max()
  assert rel < 0.05, rel
  fresh = abstract_variables(bf16)
  assert {x.dtype for x in jax.tree.leaves(fresh)} == {jnp.dtype('float32')}


def test_invalid_configurations_are_clear_errors(random_variables):
  with pytest.raises(ValueError, match='img_resolution 384 is not a power of two'):
    Generator(img_resolution=384)
  with pytest.raises(ValueError, match="architecture 'unet' is not one of orig, skip, resnet"):
    Generator(img_resolution=32, architecture='unet')
  g = Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=8)
  v = abstract_variables(g)
  with pytest.raises(ValueError, match="noise_mode 'fixed' is not one of"):
    jax.eval_shape(lambda v: g.apply(v, jnp.zeros((1, 8)), noise_mode='fixed'), v)
  with pytest.raises(ValueError, match=r'expects ws of shape \[N, 4, 8\]'):
    jax.eval_shape(lambda v: g.apply(v, jnp.zeros((1, 3, 8)), method='synthesize'), v)
  with pytest.raises(ValueError, match='noise must hold 3 maps'):
    jax.eval_shape(lambda v: g.apply(v, jnp.zeros((1, 8)), noise=[jnp.zeros((1, 4, 4, 1))]), v)
  cond = Generator(z_dim=8, w_dim=8, c_dim=3, img_resolution=8, channel_base=64, channel_max=8)
  with pytest.raises(ValueError, match=r'conditional: pass labels c of shape \[N, 3\]'):
    jax.eval_shape(lambda v: cond.apply(v, jnp.zeros((1, 8))), abstract_variables(cond))


def test_param_count_of_the_tiny_golden(golden):
  arch, _, _, v, _ = golden
  params = load(f'G_{arch}_params.npz')
  official = sum(int(np.prod(a.shape)) for k, a in params.items()
                 if not k.endswith(('resample_filter', 'noise_const', 'w_avg')))
  assert count_params(v) == official


def test_one_rule_decides_the_form_of_the_modulated_convolutions():
  """`fused_modconv`: the fused form only to generate on a single device that is not a CPU; and
  callers take their form from it: training's G, the metrics' G on a mesh and `generate
  --modconv auto`'s (all unfused here, on CPU devices)."""
  from types import SimpleNamespace

  from tiny_experiment import tiny
  from sg2jax.metrics.context import metric_generator
  from sg2jax.networks.generator import fused_modconv, modconv_form
  from sg2jax.networks.stylegan1 import StyleGenerator
  from sg2jax.sharding import make_mesh
  from sg2jax.tools.sampling import with_modconv
  from sg2jax.train.build import build_models
  cpu, gpu, tpu = (SimpleNamespace(platform=name) for name in ('cpu', 'gpu', 'tpu'))
  assert fused_modconv(training=False, devices=[gpu]) and fused_modconv(False, [tpu])
  assert not fused_modconv(training=True, devices=[gpu])  # the official training's form
  assert not fused_modconv(training=False, devices=[tpu, tpu])  # a batch split over devices
  assert not fused_modconv(training=False, devices=[cpu])
  g = Generator(z_dim=8, w_dim=8, img_resolution=8, channel_base=32, channel_max=8)
  assert g.fused_modconv  # as the official networks store it
  assert modconv_form(g, True) is g and not modconv_form(g, False).fused_modconv
  style = StyleGenerator(z_dim=8, w_dim=8, img_resolution=8)
  assert modconv_form(style, False) is style  # no modulated convolutions
  mesh = make_mesh()
  assert not metric_generator(g, mesh).fused_modconv
  assert not metric_generator(g, make_mesh(jax.devices()[:1])).fused_modconv
  assert not with_modconv(g, 'auto').fused_modconv
  assert not build_models(tiny(), 8, 3, 0, mesh).generator.fused_modconv
  assert 'fused_modconv' not in tiny().G
