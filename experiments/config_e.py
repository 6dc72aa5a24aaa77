"""Config E of Table 1: config F with the smaller networks (channel_base 16384 = TF fmap_base 8192)
and R1 gamma 100 (TF run_training.py sets it for config E).

  python -m sg2jax.main --config experiments/config_e.py --workdir DIR --config.data.path=DATA
"""

from experiments import base


def apply(config):
  """Turns a config F into config E (used by table2.py and the dataset presets)."""
  for net in (config.G, config.D):
    net.channel_base = 16384
  config.r1_gamma = 100.0
  return config


def get_config():
  return apply(base.get_config())
