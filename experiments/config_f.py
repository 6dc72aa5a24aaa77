"""Config F of Table 1 (StyleGAN2): G skip, D resnet, large networks (channel_base 32768), lazy R1
(gamma 10) and path-length regularization, no progressive growing. The defaults of base.py.

  python -m sg2jax.main --config experiments/config_f.py --workdir DIR --config.data.path=DATA
Dataset presets (ffhq.py, lsun_*.py) add the per-dataset settings of the paper.
"""

from experiments import base


def get_config():
  return base.get_config()
