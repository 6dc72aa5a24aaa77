"""Per-dataset settings of the paper (SPEC.md §2.2), shared by the dataset presets."""

from experiments import base, config_e, growing

CONFIGS = ('a', 'b', 'c', 'd', 'e', 'f')


def preset(arg, resolution, total_kimg, mirror, gamma_f):
  """A config for one dataset: `arg` is '' or 'config=a|b|c|d|e|f' (default f).

  Config F uses the dataset's gamma (TF README commands); E keeps its gamma 100 and A-D their
  gamma 10 (TF run_training.py, unless --gamma was given; SPEC.md §9.3).
  """
  values = dict(part.split('=', 1) for part in (arg or '').split(',') if '=' in part)
  unknown = set(values) - {'config'}
  name = values.get('config', 'f').lower()
  if unknown or name not in CONFIGS:
    raise ValueError(f'dataset presets take config=a|b|c|d|e|f, got {arg!r}')
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
