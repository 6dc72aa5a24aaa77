"""Per-dataset settings of the paper (REFERENCE.md §3.4), shared by the dataset presets."""

from experiments import base, config_e, growing
from experiments.args import parse_arg

CONFIGS = ('a', 'b', 'c', 'd', 'e', 'f')


def preset(arg, resolution, total_kimg, mirror, gamma_f):
  """A config for one dataset: `arg` is '' or 'config=a|b|c|d|e|f' (default f).

  Config F uses the dataset's gamma (TF README commands); E keeps its gamma 100 and A-D their
  gamma 10 (TF run_training.py, unless --gamma was given; REFERENCE.md §3.4).
  """
  name = parse_arg(arg, 'dataset presets take', config=CONFIGS).get('config', 'f')
  config = base.get_config()
  if name == 'e':
    config_e.apply(config)
  elif name in growing.CONFIGS:
    growing.apply(config, name)
  else:
    config.r1_gamma = gamma_f
  config.resolution = resolution
  config.total_kimg = float(total_kimg)
  config.mirror = mirror
  return config
