"""The ONE reader of the training config: networks, optimizers, mesh, data and derived numbers.

Everything else takes typed arguments. `derived_hyperparameters` computes (and the loop logs)
every number that is not read directly from the config.
"""

import dataclasses
import math
from typing import Any, Optional

import jax
import ml_collections
import optax
from jax.sharding import Mesh

from sg2jax.data.pipeline import TrainData
from sg2jax.data.sources import guess_source_kind, image_shape, open_source
from sg2jax.networks import Discriminator, Generator
from sg2jax.networks.config import network_config
from sg2jax.networks.layers import check_resolution
from sg2jax.sharding import check_batch_size, make_mesh
from sg2jax.train.step import NAN_POLICIES, StepConfig


@dataclasses.dataclass
class Experiment:
  """What `train_and_evaluate` runs, built from a config."""
  config: ml_collections.ConfigDict
  mesh: Mesh
  generator: Generator
  discriminator: Discriminator
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  step_config: StepConfig
  data: TrainData
  hyper: dict[str, Any]  # derived_hyperparameters

  @property
  def total_steps(self) -> int:
    return self.hyper['total_steps']

  def network_configs(self) -> dict[str, dict]:
    g = network_config(self.generator)
    return {'G': g, 'G_ema': g, 'D': network_config(self.discriminator)}


def lazy_regularization_factor(interval: Optional[int]) -> float:
  """`c = I / (I + 1)` for a regularizer run every I minibatches; 1 without lazy regularization."""
  return 1.0 if interval is None else interval / (interval + 1)


def derived_hyperparameters(config: ml_collections.ConfigDict, num_devices: int) -> dict[str, Any]:
  """Every derived number of a run (SPEC.md §3.4, §3.7), in one place.

  - Lazy regularization: `lr' = lr * c`, `beta' = beta^c` with `c = I / (I + 1)`, for G (I =
    g_reg_interval) and D (I = d_reg_interval), used by the main and regularization steps.
  - G EMA per step: `beta_ema = 0.5^(batch_size / (ema_kimg * 1000))`.
  - Steps: `total_steps = ceil(total_kimg * 1000 / batch_size)`, and per tick.
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
  out['total_steps'] = math.ceil(config.total_kimg * 1000 / batch)
  out['steps_per_tick'] = max(1, round(config.kimg_per_tick * 1000 / batch))
  return out


def _adam(lr: float, beta1: float, beta2: float, eps: float) -> optax.GradientTransformation:
  return optax.adam(lr, b1=beta1, b2=beta2, eps=eps)


def validate(config: ml_collections.ConfigDict) -> None:
  """One-line errors for values that are out of range (unknown keys fail in config_flags)."""
  if config.nan_policy not in NAN_POLICIES:
    raise ValueError(f'config.nan_policy {config.nan_policy!r} is not one of '
                     f'{", ".join(NAN_POLICIES)}')
  if config.batch_size <= 0 or config.batch_gpu <= 0:
    raise ValueError('config.batch_size and config.batch_gpu must be positive')
  if config.batch_size % config.batch_gpu:
    raise ValueError(f'config.batch_size {config.batch_size} is not a multiple of '
                     f'config.batch_gpu {config.batch_gpu}')
  if config.batch_size % config.pl_batch_shrink:
    raise ValueError(f'config.batch_size {config.batch_size} is not divisible by '
                     f'config.pl_batch_shrink {config.pl_batch_shrink}')
  for key in ('g_reg_interval', 'd_reg_interval'):
    if config[key] is not None and config[key] < 1:
      raise ValueError(f'config.{key} must be >= 1, or None to regularize in every main step')
  if config.precision not in ('highest', 'high', 'default'):
    raise ValueError(f'config.precision {config.precision!r} is not highest, high or default')


def build_networks(config: ml_collections.ConfigDict, resolution: int, channels: int,
                   c_dim: int) -> tuple[Generator, Discriminator]:
  g, d = config.G, config.D
  generator = Generator(
      z_dim=g.z_dim, c_dim=c_dim, w_dim=g.w_dim, img_resolution=resolution,
      img_channels=channels, mapping_layers=g.mapping_layers,
      mapping_lr_multiplier=g.mapping_lr_multiplier, w_avg_beta=g.w_avg_beta,
      architecture=g.architecture, channel_base=g.channel_base, channel_max=g.channel_max,
      conv_clamp=g.conv_clamp, fused_modconv=g.fused_modconv, dtype=g.dtype)
  discriminator = Discriminator(
      c_dim=c_dim, img_resolution=resolution, img_channels=channels,
      architecture=d.architecture, channel_base=d.channel_base, channel_max=d.channel_max,
      conv_clamp=d.conv_clamp, mbstd_group_size=d.mbstd_group_size,
      mbstd_num_channels=d.mbstd_num_channels, dtype=d.dtype)
  return generator, discriminator


def build(config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None) -> Experiment:
  """Builds the run: checks the config, opens the data, makes networks, optimizers and mesh."""
  validate(config)
  mesh = make_mesh() if mesh is None else mesh
  per_device = check_batch_size(config.batch_size, mesh)
  if per_device % config.batch_gpu and config.batch_gpu % per_device:
    raise ValueError(f'config.batch_gpu {config.batch_gpu} and the per-device batch {per_device} '
                     f'must divide one another')
  hyper = derived_hyperparameters(config, mesh.devices.size)
  check_batch_size(hyper['pl_batch_size'], mesh, 'batch_size / pl_batch_shrink')

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
  data = TrainData(source, resolution, channels, config.batch_size,
                   seed=config.seed, mirror=config.mirror, max_images=config.data.max_images,
                   num_threads=config.data.num_threads, prefetch=config.data.prefetch)
  hyper.update(resolution=resolution, channels=channels, c_dim=source.label_dim,
               num_images=data.num_images)

  generator, discriminator = build_networks(config, resolution, channels, source.label_dim)
  g_tx = _adam(hyper['G_lr'], hyper['G_beta1'], hyper['G_beta2'], config.adam_eps)
  d_tx = _adam(hyper['D_lr'], hyper['D_beta1'], hyper['D_beta2'], config.adam_eps)
  step_config = StepConfig(
      batch_size=config.batch_size, pl_batch_size=hyper['pl_batch_size'],
      mbstd_shard_size=config.batch_gpu, style_mixing_prob=config.style_mixing_prob,
      r1_gamma=config.r1_gamma, pl_weight=config.pl_weight, pl_decay=config.pl_decay,
      g_reg_interval=config.g_reg_interval, d_reg_interval=config.d_reg_interval,
      ema_kimg=config.ema_kimg, ema_rampup=config.ema_rampup, nan_policy=config.nan_policy)
  return Experiment(config, mesh, generator, discriminator, g_tx, d_tx, step_config, data, hyper)
