"""Table 2: config E with every G / D architecture pair (orig, skip, resnet).

  python -m sg2jax.main --config experiments/table2.py:g=resnet,d=orig --workdir DIR \\
      --config.data.path=DATA
`g=skip,d=resnet` is config E itself.
"""

from experiments import config_e
from experiments.args import parse_arg

ARCHITECTURES = ('orig', 'skip', 'resnet')


def get_config(arg=None):
  try:
    pair = parse_arg(arg, 'table2.py takes', g=ARCHITECTURES, d=ARCHITECTURES)
  except ValueError:
    pair = {}
  if set(pair) != {'g', 'd'}:
    raise ValueError(f'table2.py needs g=ARCH,d=ARCH with ARCH in {"|".join(ARCHITECTURES)}, '
                     f'got {arg!r}')
  config = config_e.get_config()
  config.G.architecture = pair['g']
  config.D.architecture = pair['d']
  return config
