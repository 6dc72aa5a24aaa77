"""Table 2: config E with every G / D architecture pair (orig, skip, resnet).

  python -m sg2jax.main --config experiments/table2.py:g=resnet,d=orig --workdir DIR \\
      --config.data.path=DATA
`g=skip,d=resnet` is config E itself.
"""

from experiments import config_e

ARCHITECTURES = ('orig', 'skip', 'resnet')


def parse_arg(arg):
  """'g=resnet,d=orig' -> {'g': 'resnet', 'd': 'orig'}; both keys required."""
  values = dict(part.split('=', 1) for part in (arg or '').split(',') if '=' in part)
  if set(values) != {'g', 'd'} or not set(values.values()) <= set(ARCHITECTURES):
    raise ValueError(f'table2.py needs g=ARCH,d=ARCH with ARCH in {", ".join(ARCHITECTURES)}, '
                     f'got {arg!r}')
  return values


def get_config(arg=None):
  pair = parse_arg(arg)
  config = config_e.get_config()
  config.G.architecture = pair['g']
  config.D.architecture = pair['d']
  return config
