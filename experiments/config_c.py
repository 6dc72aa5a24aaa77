"""Config C of Table 1 (see experiments/growing.py for what it changes from config F).

  python -m sg2jax.main --config experiments/config_c.py --workdir DIR --config.data.path=DATA
"""

from experiments import base, growing


def get_config():
  return growing.apply(base.get_config(), 'c')
