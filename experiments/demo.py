"""A tiny StyleGAN2 that learns on a laptop CPU in a few minutes, on images it makes itself.

  python -m sg2jax.main --config experiments/demo.py --workdir /tmp/sg2jax-demo

Data: 2048 generated 32x32 images of a circle or square (sg2jax.data.sources.ShapesSource).
Networks: config F's architecture (G skip, D resnet) with 16-32 channels and 2 mapping layers.
Regularization as the paper (lazy R1 and path length), with gamma and EMA scaled for the small
images and the short run (as ADA's heuristics do: gamma ~ 0.0002 R^2 / batch, EMA ramp-up).
"""

from experiments import base


def get_config():
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
  return config
