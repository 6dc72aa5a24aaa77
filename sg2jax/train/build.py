"""The ONE reader of the training config: networks, optimizers, mesh, data and derived numbers.

Everything else takes typed arguments. `derived_hyperparameters` computes (and the loop logs)
every number that is not read directly from the config.
"""

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import ml_collections
import optax
from jax.sharding import Mesh

from sg2jax.data.pipeline import TrainData
from sg2jax.data.sources import guess_source_kind, image_shape, open_source
from sg2jax.networks import Discriminator, Generator
from sg2jax.networks.config import network_config
from sg2jax.networks.progressive import ProgressiveDiscriminator, ProgressiveGenerator
from sg2jax.networks.stylegan1 import BasicDiscriminator, StyleGenerator
from sg2jax.networks.layers import check_resolution
from sg2jax.sharding import check_batch_size, make_mesh
from sg2jax.train.schedule import FixedSchedule, GrowingSchedule, Phase
from sg2jax.train.step import NAN_POLICIES, StepConfig


@dataclasses.dataclass
class Experiment:
  """What `train_and_evaluate` runs, built from a config."""
  config: ml_collections.ConfigDict
  mesh: Mesh
  generator: nn.Module
  discriminator: nn.Module
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  schedule: Any  # FixedSchedule | GrowingSchedule
  data: TrainData
  hyper: dict[str, Any]  # derived_hyperparameters

  @property
  def total_nimg(self) -> int:
    return self.hyper['total_nimg']

  @property
  def minibatch_repeats(self) -> int:
    """Minibatches between schedule evaluations (TF: 4 with progressive growing)."""
    return self.config.growing.minibatch_repeats if self.schedule.progressive else 1

  def network_configs(self) -> dict[str, dict]:
    g = network_config(self.generator)
    return {'G': g, 'G_ema': g, 'D': network_config(self.discriminator)}

  def step_config(self, phase: Phase) -> StepConfig:
    """The phases' settings for one schedule phase (one compiled program per distinct value)."""
    config = self.config
    level = phase.level if self.schedule.progressive else 0
    return StepConfig(
        batch_size=phase.batch_size, pl_batch_size=phase.batch_size // config.pl_batch_shrink,
        mbstd_shard_size=phase.batch_gpu, style_mixing_prob=config.style_mixing_prob,
        r1_gamma=config.r1_gamma, pl_weight=config.pl_weight, pl_decay=config.pl_decay,
        g_reg_interval=config.g_reg_interval, d_reg_interval=config.d_reg_interval,
        ema_kimg=config.ema_kimg, ema_rampup=config.ema_rampup, nan_policy=config.nan_policy,
        resolution=phase.resolution if self.schedule.progressive else None, level=level)


def lazy_regularization_factor(interval: Optional[int]) -> float:
  """`c = I / (I + 1)` for a regularizer run every I minibatches; 1 without lazy regularization."""
  return 1.0 if interval is None else interval / (interval + 1)


def derived_hyperparameters(config: ml_collections.ConfigDict, num_devices: int) -> dict[str, Any]:
  """Every derived number of a run (SPEC.md §3.4, §3.7), in one place.

  - Lazy regularization: `lr' = lr * c`, `beta' = beta^c` with `c = I / (I + 1)`, for G (I =
    g_reg_interval) and D (I = d_reg_interval), used by the main and regularization steps.
  - G EMA per step: `beta_ema = 0.5^(batch_size / (ema_kimg * 1000))`.
  - Length: `total_nimg = total_kimg * 1000` images (`total_steps` minibatches without growing).
  """
  batch = config.batch_size
  out: dict[str, Any] = {'batch_size': batch, 'num_devices': num_devices,
                         'batch_per_device': batch // max(num_devices, 1)}
  for net, interval, lr in (('G', config.g_reg_interval, config.g_lr),
                            ('D', config.d_reg_interval, config.d_lr)):
    c = lazy_regularization_factor(interval)
    out[f'{net}_lr'] = lr * c
    out[f'{net}_beta1'] = config.adam_beta1 ** c
    out[f'{net}_beta2'] = config.adam_beta2 ** c
  out['pl_batch_size'] = batch // config.pl_batch_shrink
  out['ema_beta'] = 0.5 ** (batch / (config.ema_kimg * 1000))
  out['total_nimg'] = int(math.ceil(config.total_kimg * 1000))
  out['total_steps'] = math.ceil(config.total_kimg * 1000 / batch)  # without growing
  return out


def make_adam(lr: float, beta1: float, beta2: float, eps: float) -> optax.GradientTransformation:
  """optax Adam with the learning rate in its state (progressive growing changes it)."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=beta1, b2=beta2, eps=eps)


def make_schedule(config: ml_collections.ConfigDict, resolution: int, progressive: bool,
                  hyper: dict[str, Any]):
  """FixedSchedule (configs E/F), or the progressive-growing schedule of configs A-D."""
  if not progressive:
    return FixedSchedule(resolution, config.batch_size, config.batch_gpu, hyper['G_lr'],
                         hyper['D_lr'])
  growing = config.growing
  return GrowingSchedule(
      resolution, growing.initial_resolution, growing.training_kimg, growing.transition_kimg,
      config.batch_size, config.batch_gpu, dict(growing.batch_sizes), dict(growing.batch_gpus),
      growing.lr, dict(growing.lrs), lazy_regularization_factor(config.g_reg_interval),
      lazy_regularization_factor(config.d_reg_interval))


def check_batches(schedule, mesh: Mesh, pl_batch_shrink: int) -> int:
  """Checks every (minibatch, per-GPU minibatch) the run will use against the devices before
  training starts; returns the largest minibatch."""
  if schedule.progressive:
    levels = int(math.log2(schedule.resolution) - math.log2(schedule.initial_resolution)) + 1
    resolutions = [schedule.resolution >> level for level in range(levels)]
    settings = {r: (schedule.batch_sizes.get(r, schedule.batch_size),
                    schedule.batch_gpus.get(r, schedule.batch_gpu)) for r in resolutions}
  else:
    settings = {schedule.resolution: (schedule.batch_size, schedule.batch_gpu)}
  for resolution, (batch, batch_gpu) in settings.items():
    where = f' (at resolution {resolution})' if schedule.progressive else ''
    per_device = check_batch_size(batch, mesh, f'batch_size{where}')
    check_batch_size(batch // pl_batch_shrink, mesh, f'batch_size / pl_batch_shrink{where}')
    if batch % batch_gpu:
      raise ValueError(f'batch_size {batch}{where} is not a multiple of batch_gpu {batch_gpu}')
    if per_device % batch_gpu and batch_gpu % per_device:
      raise ValueError(f'batch_gpu {batch_gpu} and the per-device batch {per_device}{where} must '
                       f'divide one another')
  return max(batch for batch, _ in settings.values())


def validate(config: ml_collections.ConfigDict) -> None:
  """One-line errors for values that are out of range (unknown keys fail in config_flags)."""
  if config.nan_policy not in NAN_POLICIES:
    raise ValueError(f'config.nan_policy {config.nan_policy!r} is not one of '
                     f'{", ".join(NAN_POLICIES)}')
  if config.batch_size <= 0 or config.batch_gpu <= 0:
    raise ValueError('config.batch_size and config.batch_gpu must be positive')
  if config.batch_size % config.pl_batch_shrink:
    raise ValueError(f'config.batch_size {config.batch_size} is not divisible by '
                     f'config.pl_batch_shrink {config.pl_batch_shrink}')
  for key in ('g_reg_interval', 'd_reg_interval'):
    if config[key] is not None and config[key] < 1:
      raise ValueError(f'config.{key} must be >= 1, or None to regularize in every main step')
  if config.precision not in ('highest', 'high', 'default'):
    raise ValueError(f'config.precision {config.precision!r} is not highest, high or default')


G_TYPES = ('Generator', 'StyleGenerator', 'ProgressiveGenerator')
D_TYPES = ('Discriminator', 'BasicDiscriminator', 'ProgressiveDiscriminator')


def build_networks(config: ml_collections.ConfigDict, resolution: int, channels: int,
                   c_dim: int) -> tuple[nn.Module, nn.Module]:
  """G and D of the types `config.G.type` / `config.D.type` (configs A-F)."""
  g, d = config.G, config.D
  if g.type not in G_TYPES:
    raise ValueError(f'config.G.type {g.type!r} is not one of {", ".join(G_TYPES)}')
  if d.type not in D_TYPES:
    raise ValueError(f'config.D.type {d.type!r} is not one of {", ".join(D_TYPES)}')
  mapping = dict(z_dim=g.z_dim, c_dim=c_dim, w_dim=g.w_dim, img_resolution=resolution,
                 img_channels=channels, mapping_layers=g.mapping_layers,
                 mapping_lr_multiplier=g.mapping_lr_multiplier, w_avg_beta=g.w_avg_beta,
                 channel_base=g.channel_base, channel_max=g.channel_max, dtype=g.dtype)
  if g.type == 'Generator':
    generator = Generator(architecture=g.architecture, conv_clamp=g.conv_clamp,
                          fused_modconv=g.fused_modconv, **mapping)
  elif g.type == 'ProgressiveGenerator':
    generator = ProgressiveGenerator(conv_clamp=g.conv_clamp, fused_modconv=g.fused_modconv,
                                     **mapping)
  else:
    generator = StyleGenerator(**mapping)
  common = dict(c_dim=c_dim, img_resolution=resolution, img_channels=channels,
                channel_base=d.channel_base, channel_max=d.channel_max,
                mbstd_group_size=d.mbstd_group_size, mbstd_num_channels=d.mbstd_num_channels,
                dtype=d.dtype)
  if d.type == 'Discriminator':
    discriminator = Discriminator(architecture=d.architecture, conv_clamp=d.conv_clamp, **common)
  elif d.type == 'ProgressiveDiscriminator':
    discriminator = ProgressiveDiscriminator(conv_clamp=d.conv_clamp, **common)
  else:
    discriminator = BasicDiscriminator(**common)
  if getattr(generator, 'progressive', False) != getattr(discriminator, 'progressive', False):
    raise ValueError(f'config.G.type {g.type} and config.D.type {d.type} do not match: both or '
                     f'neither must grow progressively')
  return generator, discriminator


def build_models(config: ml_collections.ConfigDict, resolution: int, channels: int, c_dim: int,
                 hyper: dict[str, Any]):
  """Networks, optimizers and schedule: `(generator, discriminator, g_tx, d_tx, schedule)`."""
  generator, discriminator = build_networks(config, resolution, channels, c_dim)
  schedule = make_schedule(config, resolution, getattr(generator, 'progressive', False), hyper)
  g_tx = make_adam(hyper['G_lr'], hyper['G_beta1'], hyper['G_beta2'], config.adam_eps)
  d_tx = make_adam(hyper['D_lr'], hyper['D_beta1'], hyper['D_beta2'], config.adam_eps)
  return generator, discriminator, g_tx, d_tx, schedule


def build(config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None) -> Experiment:
  """Builds the run: checks the config, opens the data, makes networks, optimizers, schedule."""
  validate(config)
  mesh = make_mesh() if mesh is None else mesh
  hyper = derived_hyperparameters(config, mesh.devices.size)

  kind = guess_source_kind(config.data.path) if config.data.source == 'auto' else config.data.source
  source = open_source(kind, config.data.path, config.data.split, config.cond,
                       config.data.tfds_data_dir, config.data.num_images, config.resolution or 0,
                       config.seed)
  height, width, channels = image_shape(source)
  resolution = config.resolution or height
  check_resolution(resolution, 'resolution')
  if (height, width) != (resolution, resolution):
    raise ValueError(f'{source.name(0)} is {width}x{height}, not {resolution}x{resolution}; '
                     f'prepare the data with `python -m sg2jax.dataset_tool --resolution '
                     f'{resolution}`')
  generator, discriminator, g_tx, d_tx, schedule = build_models(
      config, resolution, channels, source.label_dim, hyper)
  largest_batch = check_batches(schedule, mesh, config.pl_batch_shrink)
  data = TrainData(source, resolution, channels, largest_batch,
                   seed=config.seed, mirror=config.mirror, max_images=config.data.max_images,
                   num_threads=config.data.num_threads, prefetch=config.data.prefetch)
  hyper.update(resolution=resolution, channels=channels, c_dim=source.label_dim,
               num_images=data.num_images, progressive=schedule.progressive)
  return Experiment(config, mesh, generator, discriminator, g_tx, d_tx, schedule, data, hyper)
