"""A tiny StyleGAN2 that learns on a laptop CPU in a few minutes, on images it makes itself.

  python -m sg2jax.main --config experiments/demo.py --workdir /tmp/sg2jax-demo
  python -m sg2jax.main --config experiments/demo.py:config=a --workdir /tmp/sg2jax-demo-a

`:config=a|b|c|d` trains the same tiny networks as Table 1's configs A-D (progressive growing
from 8x8, 3 kimg per stable level and per fade-in instead of 600).

Data: 2048 generated 32x32 images of a circle or square (sg2jax.data.sources.ShapesSource).
Networks: config F's architecture (G skip, D resnet) with 16-32 channels and 2 mapping layers.
Regularization as the paper (lazy R1 and path length), with gamma and EMA scaled for the small
images and the short run (as ADA's heuristics do: gamma ~ 0.0002 R^2 / batch, EMA ramp-up).
"""

from experiments import base, growing
from experiments.args import parse_arg


def get_config(arg=None):
  values = parse_arg(arg, 'demo.py takes', config=growing.CONFIGS)
  config = base.get_config()
  config.data.source = 'shapes'
  config.data.num_images = 2048
  config.resolution = 32
  config.mirror = True
  config.total_kimg = 30
  config.batch_size = 16
  config.batch_gpu = 4
  for net in (config.G, config.D):
    net.channel_base = 512  # 32 channels at 4-16, 16 at 32
    net.channel_max = 32
  config.G.z_dim = config.G.w_dim = 64
  config.G.mapping_layers = 2
  config.g_lr = config.d_lr = 0.0025
  config.r1_gamma = 0.5
  config.ema_kimg = 1.0
  config.ema_rampup = 0.05
  config.kimg_per_tick = 1.0
  config.snapshot_ticks = 6
  config.image_snapshot_ticks = 2
  config.grid_size = 32
  config.precision = 'default'
  if 'config' in values:
    growing.apply(config, values['config'])
    for net in (config.G, config.D):  # growing.apply sets the paper's fmap_base: shrink again
      net.channel_base, net.channel_max = 512, 32
    config.r1_gamma = 0.5
    config.growing.training_kimg = config.growing.transition_kimg = 3.0
    config.growing.batch_sizes = ((8, 32), (16, 16), (32, 16))
    config.growing.batch_gpus = ((8, 4), (16, 4), (32, 4))
    config.growing.lr, config.growing.lrs = 0.0025, ()
  return config
