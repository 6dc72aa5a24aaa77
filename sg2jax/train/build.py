"""The ONE reader of a training config: networks, optimizers, mesh, data and derived numbers.

`build(config)` checks a `ConfigDict` and returns an `Experiment`: the built objects plus frozen,
typed settings (`Hyperparameters`, `LoopSettings`, `MetricSettings`, the data's
`DatasetSpec`). Loop, step, the metrics hook and the eval CLI use those; nothing else reads a
config key. `load_run_config` reads a run's saved `config.json` back into a config.
"""

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import ml_collections
import optax
from jax.sharding import Mesh

from sg2jax.data.pipeline import TrainData
from sg2jax.data.sources import DatasetSpec, image_shape
from sg2jax.networks import Discriminator, Generator
from sg2jax.networks.layers import check_resolution
from sg2jax.networks.progressive import ProgressiveDiscriminator, ProgressiveGenerator
from sg2jax.networks.stylegan1 import BasicDiscriminator, StyleGenerator
from sg2jax.networks.weights import network_config
from sg2jax.sharding import check_batch_size, make_mesh
from sg2jax.train.optimizers import NAN_POLICIES, make_adam
from sg2jax.train.schedule import FixedSchedule, GrowingSchedule, Stage
from sg2jax.train.step import Models, StepConfig, ema_beta

CONFIG_FILE = 'config.json'


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
  """Every number of a run that is derived rather than read (SPEC.md §3.4, §3.7), logged once.

  - Lazy regularization: `lr' = lr * c`, `beta' = beta^c` with `c = I / (I + 1)`, for G (I =
    g_reg_interval) and D (I = d_reg_interval), used by the main and regularization steps.
  - G EMA per step: `ema_beta = 0.5^(batch_size / (ema_kimg * 1000))`.
  - Length: `total_nimg = total_kimg * 1000` images (`total_steps` minibatches without growing).
  """
  batch_size: int
  num_devices: int
  batch_per_device: int
  g_lr: float
  g_beta1: float
  g_beta2: float
  d_lr: float
  d_beta1: float
  d_beta2: float
  pl_batch_size: int
  ema_beta: float
  total_nimg: int
  total_steps: int


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """What the host loop needs (`sg2jax.train.loop`)."""
  seed: int
  total_nimg: int
  kimg_per_tick: float
  snapshot_ticks: int
  image_snapshot_ticks: int
  keep_checkpoints: int
  grid_size: int
  minibatch_repeats: int  # minibatches between schedule evaluations (TF: 4 when growing)


@dataclasses.dataclass(frozen=True)
class MetricSettings:
  """The `sg2jax.eval` metrics run at every snapshot (`config.metrics`)."""
  names: tuple[str, ...]
  inception: Optional[str]
  vgg16: Optional[str]
  num_samples: Optional[int]
  batch_size: int
  mirror: bool
  seed: int


@dataclasses.dataclass
class Experiment:
  """What `train_and_evaluate` runs, built from a config."""
  config: ml_collections.ConfigDict  # kept to be saved with the run, not read
  mesh: Mesh
  generator: nn.Module
  discriminator: nn.Module
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  schedule: Any  # FixedSchedule | GrowingSchedule
  data: Optional[TrainData]
  hyper: Hyperparameters
  step_template: StepConfig  # the phases' settings; the schedule fills in the stage's values
  loop: Optional[LoopSettings] = None
  metrics: Optional[MetricSettings] = None

  @property
  def models(self) -> Models:
    return Models(self.generator, self.discriminator, self.g_tx, self.d_tx)

  def network_configs(self) -> dict[str, dict]:
    g = network_config(self.generator)
    return {'G': g, 'G_ema': g, 'D': network_config(self.discriminator)}

  def step_config(self, stage: Stage) -> StepConfig:
    """The phases' settings at a schedule stage (one compiled program per distinct value)."""
    if not self.schedule.progressive:
      return dataclasses.replace(self.step_template, batch_size=stage.batch_size,
                                 mbstd_shard_size=stage.batch_gpu)
    return dataclasses.replace(self.step_template, batch_size=stage.batch_size,
                               mbstd_shard_size=stage.batch_gpu, resolution=stage.resolution,
                               level=stage.level)


def lazy_regularization_factor(interval: Optional[int]) -> float:
  """`c = I / (I + 1)` for a regularizer run every I minibatches; 1 without lazy regularization."""
  return 1.0 if interval is None else interval / (interval + 1)


def derived_hyperparameters(config: ml_collections.ConfigDict,
                            num_devices: int) -> Hyperparameters:
  """The run's `Hyperparameters` (see there)."""
  batch = config.batch_size
  adjusted = {}
  for net, interval, lr in (('g', config.g_reg_interval, config.g_lr),
                            ('d', config.d_reg_interval, config.d_lr)):
    c = lazy_regularization_factor(interval)
    adjusted.update({f'{net}_lr': lr * c, f'{net}_beta1': config.adam_beta1 ** c,
                     f'{net}_beta2': config.adam_beta2 ** c})
  return Hyperparameters(
      batch_size=batch, num_devices=num_devices, batch_per_device=batch // max(num_devices, 1),
      pl_batch_size=batch // config.pl_batch_shrink, ema_beta=float(ema_beta(batch, config.ema_kimg)),
      total_nimg=int(math.ceil(config.total_kimg * 1000)),
      total_steps=math.ceil(config.total_kimg * 1000 / batch), **adjusted)


def step_template(config: ml_collections.ConfigDict) -> StepConfig:
  """The phases' settings that do not change during a run (the schedule sets the rest)."""
  return StepConfig(
      batch_size=config.batch_size, pl_batch_shrink=config.pl_batch_shrink,
      mbstd_shard_size=config.batch_gpu,
      style_mixing_prob=config.style_mixing_prob, r1_gamma=config.r1_gamma,
      pl_weight=config.pl_weight, pl_decay=config.pl_decay,
      g_reg_interval=config.g_reg_interval, d_reg_interval=config.d_reg_interval,
      ema_kimg=config.ema_kimg, ema_rampup=config.ema_rampup)


def make_schedule(config: ml_collections.ConfigDict, resolution: int, progressive: bool,
                  hyper: Hyperparameters):
  """FixedSchedule (configs E/F), or the progressive-growing schedule of configs A-D."""
  if not progressive:
    return FixedSchedule(resolution, config.batch_size, config.batch_gpu, hyper.g_lr, hyper.d_lr)
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
  if generator.progressive != discriminator.progressive:
    raise ValueError(f'config.G.type {g.type} and config.D.type {d.type} do not match: both or '
                     f'neither must grow progressively')
  return generator, discriminator


def build_models(config: ml_collections.ConfigDict, resolution: int, channels: int, c_dim: int,
                 mesh: Mesh) -> Experiment:
  """Networks, optimizers, schedule and the phases' settings, without data: an `Experiment`
  whose `data`, `loop` and `metrics` are None (benchmarks use it as it is)."""
  validate(config)
  hyper = derived_hyperparameters(config, mesh.devices.size)
  generator, discriminator = build_networks(config, resolution, channels, c_dim)
  schedule = make_schedule(config, resolution, generator.progressive, hyper)
  check_batches(schedule, mesh, config.pl_batch_shrink)
  g_tx = make_adam(hyper.g_lr, hyper.g_beta1, hyper.g_beta2, config.adam_eps, config.nan_policy)
  d_tx = make_adam(hyper.d_lr, hyper.d_beta1, hyper.d_beta2, config.adam_eps, config.nan_policy)
  return Experiment(config, mesh, generator, discriminator, g_tx, d_tx, schedule, None, hyper,
                    step_template(config))


def dataset_spec(config: ml_collections.ConfigDict) -> DatasetSpec:
  """Where the run's images come from (`config.data`, `resolution`, `mirror`, `cond`, `seed`)."""
  data = config.data
  return DatasetSpec(source=data.source, path=data.path, split=data.split,
                     use_labels=bool(config.cond), tfds_data_dir=data.tfds_data_dir,
                     num_images=data.num_images, resolution=config.resolution or 0,
                     seed=config.seed, max_images=data.max_images, mirror=bool(config.mirror))


def build(config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None) -> Experiment:
  """Builds the run: checks the config, opens the data, makes networks, optimizers, schedule."""
  mesh = make_mesh() if mesh is None else mesh
  spec = dataset_spec(config)
  source = spec.open()
  height, width, channels = image_shape(source)
  resolution = config.resolution or height
  check_resolution(resolution, 'resolution')
  if (height, width) != (resolution, resolution):
    raise ValueError(f'{source.name(0)} is {width}x{height}, not {resolution}x{resolution}; '
                     f'prepare the data with `python -m sg2jax.dataset_tool --resolution '
                     f'{resolution}`')
  exp = build_models(config, resolution, channels, source.label_dim, mesh)
  largest_batch = check_batches(exp.schedule, mesh, config.pl_batch_shrink)
  exp.data = TrainData(source, resolution, channels, largest_batch, seed=config.seed,
                       mirror=spec.mirror, max_images=spec.max_images,
                       num_threads=config.data.num_threads, prefetch=config.data.prefetch)
  exp.loop = LoopSettings(
      seed=config.seed, total_nimg=exp.hyper.total_nimg, kimg_per_tick=config.kimg_per_tick,
      snapshot_ticks=config.snapshot_ticks, image_snapshot_ticks=config.image_snapshot_ticks,
      keep_checkpoints=config.keep_checkpoints, grid_size=config.grid_size,
      minibatch_repeats=config.growing.minibatch_repeats if exp.schedule.progressive else 1)
  exp.metrics = metric_settings(config)
  return exp


def metric_settings(config: ml_collections.ConfigDict) -> MetricSettings:
  """The metrics to run at every snapshot (`config.metrics` and their weight files)."""
  return MetricSettings(
      names=tuple(config.metrics), inception=config.metrics_inception or None,
      vgg16=config.metrics_vgg16 or None, num_samples=config.metrics_num_samples,
      batch_size=config.batch_size, mirror=bool(config.mirror), seed=config.seed)


def load_run_config(path: str | Path) -> ml_collections.ConfigDict:
  """A run's saved `config.json` (or the workdir holding it) as a config: `experiments/base.py`'s
  defaults with the saved values on top (keys added since the run was saved keep their
  defaults; a saved key that no longer exists is an error naming it)."""
  from experiments import base  # the defaults, read here only
  path = Path(path)
  if path.is_dir():
    path = path / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: not a training workdir (no {CONFIG_FILE})')
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not a readable config ({e})') from None
  config = base.get_config()

  def merge(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
      if key not in node:
        raise ValueError(f'{path}: unknown config key {prefix}{key}')
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        merge(node[key], value, f'{prefix}{key}.')
      else:
        node[key] = tuple(map(tuple_if_list, value)) if isinstance(value, list) else value

  def tuple_if_list(value):
    return tuple(value) if isinstance(value, list) else value

  merge(config, saved, '')
  return config
