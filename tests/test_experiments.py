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
  assert (config.adam_beta1, config.adam_beta2, config.style_mixing_prob, config.pl_weight,
          config.g_reg_interval, config.d_reg_interval) == (0.0, 0.99, 0.9, 2.0, 4, 16)
  if spec != 'demo.py':
    assert (config.ema_kimg, config.g_lr, config.d_lr, config.batch_gpu) == (10.0, 0.002, 0.002, 4)


@pytest.mark.parametrize('spec,match', [
    ('table2.py:g=resnet', 'table2.py needs g=ARCH,d=ARCH'),
    ('table2.py:g=unet,d=orig', 'table2.py needs g=ARCH,d=ARCH'),
    ('lsun_car.py:config=z', 'dataset presets take config=e or config=f'),
])
def test_bad_config_arguments(spec, match):
  with pytest.raises(ValueError, match=match):
    load(spec)
