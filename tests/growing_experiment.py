"""Tiny progressive-growing runs for tests: configs A and D at 16x16 growing from 8x8, with the
16x16 fade-in over 0.256 kimg (6 schedule evaluations), batch 16 at 8x8 and 8 at 16x16:
8 steps at 8x8, 24 fading in, 16 at 16x16.

  --config tests/growing_experiment.py:a    (or :d)
"""

from experiments import demo, growing


def get_config(arg='d'):
  config = demo.get_config()
  growing.apply(config, arg)
  config.resolution = 16
  config.data.num_images = 64
  for net in (config.G, config.D):
    net.channel_base = 128
    net.channel_max = 16
  config.G.z_dim = config.G.w_dim = 16
  config.growing.initial_resolution = 8
  config.growing.training_kimg = 0.064
  config.growing.transition_kimg = 0.256
  config.growing.batch_sizes = ((8, 16), (16, 8))
  config.growing.batch_gpus = ((8, 4), (16, 4))
  config.growing.lr = 0.002
  config.growing.lrs = ()
  config.batch_size = 8
  config.batch_gpu = 4
  config.total_kimg = 0.448
  config.kimg_per_tick = 0.064
  config.snapshot_ticks = 1
  config.image_snapshot_ticks = 1
  config.grid_size = 4
  if config.pl_weight:
    config.g_reg_interval = 2
  if config.d_reg_interval:
    config.d_reg_interval = 4
  return config
