"""Every experiment config loads as users load it, with the paper's values."""

import importlib.util
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).parent.parent / 'experiments'


def load(spec: str):
  """`experiments/FILE[:ARG]` loaded from its path and `get_config(ARG)` called, as
  `--config experiments/FILE[:ARG]` does."""
  name, *arg = spec.split(':', 1)
  module_spec = importlib.util.spec_from_file_location(name[:-3], EXPERIMENTS / name)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(*arg)


@pytest.mark.parametrize('spec,values', [
    ('config_f.py', dict(channel_base=32768, r1_gamma=10.0, g='skip', d='resnet')),
    ('config_e.py', dict(channel_base=16384, r1_gamma=100.0, g='skip', d='resnet')),
    ('table2.py:g=resnet,d=orig', dict(channel_base=16384, r1_gamma=100.0, g='resnet', d='orig')),
    ('ffhq.py', dict(resolution=1024, total_kimg=25000, mirror=True, r1_gamma=10.0,
                     channel_base=32768)),
    ('ffhq.py:config=e', dict(resolution=1024, r1_gamma=100.0, channel_base=16384)),
    ('lsun_car.py', dict(resolution=512, total_kimg=57000, mirror=False, r1_gamma=10.0)),
    ('lsun_cat.py', dict(resolution=256, total_kimg=88000, mirror=False, r1_gamma=10.0)),
    ('lsun_church.py', dict(resolution=256, total_kimg=48000, r1_gamma=100.0)),
    ('lsun_horse.py', dict(resolution=256, total_kimg=100000, r1_gamma=100.0)),
    ('demo.py', dict(resolution=32, g='skip', d='resnet')),
    ('lsun_car.py:config=a', dict(resolution=512, r1_gamma=10.0, channel_base=16384)),
])
def test_configs(spec, values):
  config = load(spec)
  assert config.batch_size == 32 or spec == 'demo.py'
  expected = {'channel_base': config.G.channel_base, 'g': config.G.architecture,
              'd': config.D.architecture, 'r1_gamma': config.r1_gamma,
              'resolution': config.resolution, 'total_kimg': config.total_kimg,
              'mirror': config.mirror}
  assert {k: expected[k] for k in values} == values
  assert config.D.channel_base == config.G.channel_base
  if config.G.type == 'Generator':
    assert (config.pl_weight, config.g_reg_interval, config.d_reg_interval) == (2.0, 4, 16)
  assert (config.adam_beta1, config.adam_beta2, config.style_mixing_prob) == (0.0, 0.99, 0.9)
  if spec != 'demo.py':
    assert (config.ema_kimg, config.g_lr, config.d_lr, config.batch_gpu) == (10.0, 0.002, 0.002, 4)


@pytest.mark.parametrize('spec,match', [
    ('table2.py:g=resnet', 'table2.py needs g=ARCH,d=ARCH'),
    ('table2.py:g=unet,d=orig', 'table2.py needs g=ARCH,d=ARCH'),
    ('lsun_car.py:config=z', 'dataset presets take config=a.b.c.d.e.f'),
])
def test_bad_config_arguments(spec, match):
  with pytest.raises(ValueError, match=match):
    load(spec)


@pytest.mark.parametrize('name,g_type,d_type,d_reg,g_reg,pl_weight', [
    ('a', 'StyleGenerator', 'BasicDiscriminator', None, None, 0.0),
    ('b', 'ProgressiveGenerator', 'ProgressiveDiscriminator', None, None, 0.0),
    ('c', 'ProgressiveGenerator', 'ProgressiveDiscriminator', 16, 4, 0.0),
    ('d', 'ProgressiveGenerator', 'ProgressiveDiscriminator', 16, 4, 2.0),
])
def test_table1_configs_a_to_d(name, g_type, d_type, d_reg, g_reg, pl_weight):
  """REFERENCE.md §3: A-D grow progressively with fmap_base 8192 and gamma 10; A-B regularize R1 in
  every D step with plain Adam, C adds lazy R1, D path-length regularization."""
  config = load(f'config_{name}.py')
  assert (config.G.type, config.D.type) == (g_type, d_type)
  assert (config.d_reg_interval, config.g_reg_interval, config.pl_weight) == (d_reg, g_reg,
                                                                               pl_weight)
  assert config.r1_gamma == 10.0 and config.G.channel_base == config.D.channel_base == 16384
  assert config.growing.initial_resolution == 8
  assert (config.growing.training_kimg, config.growing.transition_kimg) == (600, 600)
  assert dict(config.growing.batch_sizes) == {8: 256, 16: 128, 32: 64, 64: 32}
  assert dict(config.growing.batch_gpus) == {8: 32, 16: 16, 32: 8, 64: 4}
  assert dict(config.growing.lrs) == {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}
  assert config.growing.lr == 0.001 and config.growing.minibatch_repeats == 4
