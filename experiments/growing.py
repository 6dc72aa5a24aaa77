"""Configs A-D of Table 1 (progressive growing, REFERENCE.md §3), shared by config_a..d.py, the
dataset presets and the demo."""

from experiments import config_e

CONFIGS = ('a', 'b', 'c', 'd')


def apply(config, name: str):
  """Turns a config F into config A, B, C or D.

  All four: fmap_base 8192 (channel_base 16384), progressive growing from 8x8 with the
  per-resolution minibatch and learning-rate tables, R1 gamma 10.
  - A: the original StyleGAN networks; R1 in every D step and plain Adam (no lazy
    regularization); no path-length regularization.
  - B: StyleGAN2's weight demodulation in progressive networks (revised synthesis, D_stylegan);
    otherwise as A.
  - C: + lazy regularization (R1 every 16 minibatches; Adam adjusted for G and D).
  - D: + path-length regularization (weight 2, every 4 minibatches).
  """
  name = name.lower()
  if name not in CONFIGS:
    raise ValueError(f'growing configs are {", ".join(CONFIGS)}, got {name!r}')
  config_e.apply(config)  # fmap_base 8192
  config.r1_gamma = 10.0
  if name == 'a':
    config.G.type, config.D.type = 'StyleGenerator', 'BasicDiscriminator'
  else:
    config.G.type, config.D.type = 'ProgressiveGenerator', 'ProgressiveDiscriminator'
  lazy = name in ('c', 'd')
  config.d_reg_interval = 16 if lazy else None
  config.g_reg_interval = 4 if lazy else None
  config.pl_weight = 2.0 if name == 'd' else 0.0
  return config
