"""Per-dataset settings of the paper (SPEC.md §2.2), shared by the dataset presets."""

from experiments import base, config_e

CONFIGS = ('e', 'f')


def preset(arg, resolution, total_kimg, mirror, gamma_f):
  """A config for one dataset: `arg` is '' or 'config=e|f' (default f).

  Config F uses the dataset's gamma (TF README commands); config E keeps its gamma 100.
  """
  values = dict(part.split('=', 1) for part in (arg or '').split(',') if '=' in part)
  unknown = set(values) - {'config'}
  name = values.get('config', 'f').lower()
  if unknown or name not in CONFIGS:
    raise ValueError(f'dataset presets take config=e or config=f, got {arg!r}')
  config = base.get_config()
  if name == 'e':
    config_e.apply(config)
  else:
    config.r1_gamma = gamma_f
  config.resolution = resolution
  config.total_kimg = float(total_kimg)
  config.mirror = mirror
  return config
