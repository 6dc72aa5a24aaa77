"""The smallest real run for tests: 8x8 generated shapes, 16-channel networks, batch 8.

Used in-process (`get_config()`) and by subprocesses (`--config tests/tiny_experiment.py`), so
both compile the same programs (the test session shares a persistent compilation cache).
"""

from experiments import demo


def get_config():
  config = demo.get_config()
  config.resolution = 8
  config.data.num_images = 64
  config.batch_size = 8
  config.batch_gpu = 4
  for net in (config.G, config.D):
    net.channel_base = 64
    net.channel_max = 16
  config.G.z_dim = config.G.w_dim = 16
  config.total_kimg = 0.04  # 5 steps
  config.kimg_per_tick = 0.016  # 2 steps
  config.snapshot_ticks = 1
  config.image_snapshot_ticks = 1
  config.grid_size = 4
  config.g_reg_interval = 2
  config.d_reg_interval = 4
  return config


BATCH = 8


def set_keys(config, **overrides):
  """`config` with `overrides` set (`'G.channel_max': 8` style dotted keys)."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def tiny(**overrides):
  """The config with `overrides` (`'G.channel_max': 8` style dotted keys)."""
  return set_keys(get_config(), **overrides)


def kimg(steps: int) -> float:
  """`total_kimg` of a run of `steps` minibatches."""
  return steps * BATCH / 1000
