"""The ONE reader of a training config: networks, optimizers, mesh, data and derived numbers.

`build(config)` checks a `ConfigDict` and returns an `Experiment`: the built objects plus frozen,
typed settings (`Hyperparameters`, `LoopSettings`, `MetricSettings`, the data's
`DatasetSpec`). Loop, step, the metrics hook and the eval CLI use those; nothing else reads a
config key. `load_run_config` reads a run's saved `config.json` back into a config.

Fine-tuning (`config.resume_from`, REFERENCE.md §7.8): G, D and G_ema come from a file (official
pickle, `sg2jax.convert` directory or another run's workdir), and so does their architecture;
the config's network keys must then agree with the file wherever they differ from
`experiments/base.py`. Freeze-D (`config.freeze_d`, REFERENCE.md §7.9) and ADA (`config.augment`,
REFERENCE.md §7.6-§7.7) become optimizer masks and `StepConfig.augment`.
"""

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import ml_collections
import optax
from absl import logging
from jax.sharding import Mesh

from sg2jax.augment import PRESETS, AugmentSpec
from sg2jax.checkpoint import load_networks
from sg2jax.data.pipeline import TrainData
from sg2jax.data.sources import DatasetSpec, first_image
from sg2jax.networks import Discriminator, Generator
from sg2jax.networks.layers import check_resolution
from sg2jax.networks.progressive import ProgressiveDiscriminator, ProgressiveGenerator
from sg2jax.networks.stylegan1 import BasicDiscriminator, StyleGenerator
from sg2jax.networks.weights import NetworkWeights, build_network, network_config
from sg2jax.sharding import batch_sharded, check_batch_size, make_mesh
from sg2jax.train.optimizers import NAN_POLICIES, make_adam
from sg2jax.train.schedule import FixedSchedule, GrowingSchedule, Stage
from sg2jax.train.step import (REMAT_MODES, AugmentSettings, Models, StepConfig, ema_beta,
                               path_length_batch)

CONFIG_FILE = 'config.json'


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
  """Every number of a run that is derived rather than read (REFERENCE.md §2.4, §2.7), logged once.

  - Lazy regularization: `lr' = lr * c`, `beta' = beta^c` with `c = I / (I + 1)`, for G (I =
    g_reg_interval) and D (I = d_reg_interval), used by the main and regularization steps.
  - G EMA per step: `ema_beta = 0.5^(batch_size / (ema_kimg * 1000))`.
  - Length: `total_nimg = total_kimg * 1000` images (`total_steps` minibatches without growing).
  - ADA: `ada_kimg` is `config.ada_kimg`, or when that is None 100 when fine-tuning from
    `resume_from` ("react faster") and 500 otherwise (REFERENCE.md §7.7-§7.8).
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
  ada_kimg: float


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
  classifiers: Optional[str] = None  # folder of the 40 attribute classifiers (ls)


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
  # Fine-tuning: the variables of 'G', 'D' and 'G_ema' read from `resume_from` (a fresh run
  # starts from them; a resumed one from its checkpoint). None: fresh networks.
  transfer: Optional[dict[str, dict]] = None

  @property
  def models(self) -> Models:
    return Models(self.generator, self.discriminator, self.g_tx, self.d_tx,
                  batch_sharded(self.mesh))

  @property
  def augment(self) -> Optional[AugmentSettings]:
    """ADA's settings, or None when D sees the images as they are."""
    return self.step_template.augment

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
  ada_kimg = config.ada_kimg
  if ada_kimg is None:
    ada_kimg = 100.0 if config.resume_from else 500.0
  return Hyperparameters(
      batch_size=batch, num_devices=num_devices, batch_per_device=batch // max(num_devices, 1),
      pl_batch_size=path_length_batch(batch, config.pl_batch_shrink, num_devices),
      ema_beta=float(ema_beta(batch, config.ema_kimg)),
      total_nimg=int(math.ceil(config.total_kimg * 1000)),
      total_steps=math.ceil(config.total_kimg * 1000 / batch), ada_kimg=float(ada_kimg),
      **adjusted)


def augment_settings(config: ml_collections.ConfigDict,
                     hyper: Hyperparameters) -> Optional[AugmentSettings]:
  """ADA's settings from `config.augment` ('none': None; 'fixed': p stays `augment_p`)."""
  if config.augment == 'none':
    return None
  return AugmentSettings(
      spec=AugmentSpec.from_preset(config.augment_pipe), initial_p=float(config.augment_p),
      ada_target=float(config.ada_target) if config.augment == 'ada' else None,
      ada_interval=config.ada_interval, ada_kimg=hyper.ada_kimg)


def step_template(config: ml_collections.ConfigDict, hyper: Hyperparameters) -> StepConfig:
  """The phases' settings that do not change during a run (the schedule sets the rest).

  Fine-tuning (`resume_from`) turns the G_ema ramp-up off, as ADA does (REFERENCE.md §7.8): the
  ramp-up would overwrite the file's G_ema with the first minibatches' G.
  """
  ema_rampup = config.ema_rampup
  if config.resume_from and ema_rampup is not None:
    logging.info('fine-tuning from %s: config.ema_rampup %s is not used (as ADA)',
                 config.resume_from, ema_rampup)
    ema_rampup = None
  return StepConfig(
      batch_size=config.batch_size, pl_batch_shrink=config.pl_batch_shrink,
      mbstd_shard_size=config.batch_gpu,
      style_mixing_prob=config.style_mixing_prob, r1_gamma=config.r1_gamma,
      pl_weight=config.pl_weight, pl_decay=config.pl_decay,
      g_reg_interval=config.g_reg_interval, d_reg_interval=config.d_reg_interval,
      ema_kimg=config.ema_kimg, ema_rampup=ema_rampup,
      augment=augment_settings(config, hyper), remat=config.remat,
      num_devices=hyper.num_devices)


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


def check_batches(schedule, mesh: Mesh) -> int:
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
  if config.pl_batch_shrink < 1:
    raise ValueError(f'config.pl_batch_shrink {config.pl_batch_shrink} must be >= 1')
  for key in ('g_reg_interval', 'd_reg_interval'):
    if config[key] is not None and config[key] < 1:
      raise ValueError(f'config.{key} must be >= 1, or None to regularize in every main step')
  if config.remat not in REMAT_MODES:
    raise ValueError(f'config.remat {config.remat!r} is not one of {", ".join(REMAT_MODES)}')
  if config.precision not in ('highest', 'high', 'default'):
    raise ValueError(f'config.precision {config.precision!r} is not highest, high or default')
  if config.augment not in AUGMENT_MODES:
    raise ValueError(f'config.augment {config.augment!r} is not one of {", ".join(AUGMENT_MODES)}')
  if config.augment_pipe not in PRESETS:
    raise ValueError(f'config.augment_pipe {config.augment_pipe!r} is not one of '
                     f'{", ".join(PRESETS)} (imgfilter, noise and cutout are not implemented)')
  for key in ('augment_p', 'ada_target'):
    if not 0 <= config[key] <= 1:
      raise ValueError(f'config.{key} {config[key]} is outside [0, 1]')
  if config.ada_interval < 1:
    raise ValueError(f'config.ada_interval {config.ada_interval} must be >= 1')
  if config.ada_kimg is not None and not config.ada_kimg > 0:
    raise ValueError(f'config.ada_kimg {config.ada_kimg} must be > 0 (or None for the default)')
  if config.freeze_d < 0:
    raise ValueError(f'config.freeze_d {config.freeze_d} must be >= 0 (0: freeze nothing)')
  if config.freeze_d and config.D.type != 'Discriminator':
    raise ValueError(f'config.freeze_d needs config.D.type Discriminator (ADA\'s layer order), '
                     f'not {config.D.type}')


AUGMENT_MODES = ('none', 'ada', 'fixed')
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


# ---- Fine-tuning from a file (`resume_from`) -------------------------------------------------

TRANSFER_NETWORKS = ('G', 'D', 'G_ema')
# The config keys that describe the networks' architecture (the rest, dtype and fused_modconv,
# only say how to compute: they come from the config even when fine-tuning).
G_ARCHITECTURE_KEYS = ('z_dim', 'w_dim', 'mapping_layers', 'mapping_lr_multiplier', 'w_avg_beta',
                       'architecture', 'channel_base', 'channel_max', 'conv_clamp')
D_ARCHITECTURE_KEYS = ('architecture', 'channel_base', 'channel_max', 'conv_clamp',
                       'mbstd_group_size', 'mbstd_num_channels')


def load_transfer(path: str) -> dict[str, NetworkWeights]:
  """G, D and G_ema of `resume_from` (`sg2jax.checkpoint.load_networks`), all three required."""
  networks = load_networks(path)
  missing = [name for name in TRANSFER_NETWORKS if name not in networks]
  if missing:
    raise ValueError(f'resume_from {path} has no {" or ".join(missing)}: fine-tuning needs G, D '
                     f'and G_ema (an ADA or TF training pickle, its sg2jax.convert directory, or '
                     f'a training workdir)')
  if networks['G'].config != networks['G_ema'].config:
    raise ValueError(f'resume_from {path}: G and G_ema have different configs')
  return networks


def transfer_networks(config: ml_collections.ConfigDict, networks: dict[str, NetworkWeights],
                      resolution: int, channels: int, c_dim: int) -> tuple[nn.Module, nn.Module]:
  """G and D as `resume_from`'s network configs describe them.

  A config key of the architecture (`G.type`, `G.*` of `G_ARCHITECTURE_KEYS`, `D.*`,
  `resolution`) that differs from `experiments/base.py` was set on purpose and must equal the
  file's value; keys left at their defaults are not used. The data's resolution, channels and
  labels must fit the networks. `G.dtype`, `G.fused_modconv` and `D.dtype` come from the config.

  Raises:
    ValueError: one line naming every key whose value contradicts the file (both values), or
      data that does not fit the networks, or progressive-growing networks.
  """
  from experiments import base  # the defaults, read here only
  path = config.resume_from
  generator = build_network(networks['G'].config)
  discriminator = build_network(networks['D'].config)
  if generator.progressive or discriminator.progressive:
    raise ValueError(f'resume_from {path} holds progressive-growing networks '
                     f'({type(generator).__name__}); fine-tuning starts from StyleGAN2 networks '
                     f'(configs E/F)')
  default = base.get_config()
  conflicts = []

  def compare(key: str, value, default_value, file_value) -> None:
    if value != default_value and value != file_value:
      conflicts.append(f'config.{key}={value!r} but resume_from {path} has {file_value!r}')

  compare('resolution', config.resolution, default.resolution, generator.img_resolution)
  for name, network, keys in (('G', generator, G_ARCHITECTURE_KEYS),
                              ('D', discriminator, D_ARCHITECTURE_KEYS)):
    compare(f'{name}.type', config[name].type, default[name].type, type(network).__name__)
    for key in keys:
      compare(f'{name}.{key}', config[name][key], default[name][key], getattr(network, key))
  if conflicts:
    raise ValueError('; '.join(conflicts) + ': the networks come from resume_from; drop these '
                     'keys or choose a file with matching networks')
  for network in (generator, discriminator):
    if resolution != network.img_resolution:
      raise ValueError(f'the data is {resolution}x{resolution} but resume_from {path} has '
                       f'img_resolution {network.img_resolution}; prepare the data with '
                       f'`python -m sg2jax.dataset_tool --resolution {network.img_resolution}`')
    if channels != network.img_channels:
      raise ValueError(f'the data has {channels} channels but resume_from {path} has '
                       f'img_channels {network.img_channels}')
    if c_dim != network.c_dim:
      raise ValueError(f'the data gives {c_dim} labels (config.cond={bool(config.cond)}) but '
                       f'resume_from {path} has c_dim {network.c_dim}')
  return (generator.clone(fused_modconv=config.G.fused_modconv, dtype=config.G.dtype),
          discriminator.clone(dtype=config.D.dtype))


def frozen_d_layers(discriminator: nn.Module, count: int) -> tuple[str, ...]:
  """The first `count` layers of D in ADA's Freeze-D order (REFERENCE.md §7.9), e.g.
  `('b32/fromrgb', 'b32/conv0')`.

  Layers are counted from the highest resolution down, in the order each block creates them:
  `fromrgb` (the first block, or every block with `skip`), `conv0`, `conv1`, then `skip`
  (`resnet`). The epilogue (`b4`) and the conditioning mapping are never frozen; a `count`
  beyond the blocks' layers freezes all of them.
  """
  layers = []
  for res in discriminator.block_resolutions:
    if res == discriminator.img_resolution or discriminator.architecture == 'skip':
      layers.append(f'b{res}/fromrgb')
    layers += [f'b{res}/conv0', f'b{res}/conv1']
    if discriminator.architecture == 'resnet':
      layers.append(f'b{res}/skip')
  if count > len(layers):
    logging.info('config.freeze_d %d: D has %d layers before the epilogue; freezing all of them',
                 count, len(layers))
  return tuple(layers[:count])


def build_models(config: ml_collections.ConfigDict, resolution: int, channels: int, c_dim: int,
                 mesh: Mesh, transfer: Optional[dict[str, NetworkWeights]] = None) -> Experiment:
  """Networks, optimizers, schedule and the phases' settings, without data: an `Experiment`
  whose `data`, `loop` and `metrics` are None (benchmarks use it as it is). With `transfer`
  (`load_transfer`), the networks are the file's and the run starts from its variables."""
  validate(config)
  hyper = derived_hyperparameters(config, mesh.devices.size)
  if transfer is None:
    generator, discriminator = build_networks(config, resolution, channels, c_dim)
  else:
    generator, discriminator = transfer_networks(config, transfer, resolution, channels, c_dim)
  schedule = make_schedule(config, resolution, generator.progressive, hyper)
  check_batches(schedule, mesh)
  spec = AugmentSpec.from_preset(config.augment_pipe)
  if config.augment != 'none' and spec.color_enabled(channels) and channels not in (1, 3):
    raise ValueError(f'config.augment_pipe {config.augment_pipe!r} has colour transforms, which '
                     f'need 1 or 3 channels; the data has {channels}')
  frozen = frozen_d_layers(discriminator, config.freeze_d) if config.freeze_d else ()
  g_tx = make_adam(hyper.g_lr, hyper.g_beta1, hyper.g_beta2, config.adam_eps, config.nan_policy)
  d_tx = make_adam(hyper.d_lr, hyper.d_beta1, hyper.d_beta2, config.adam_eps, config.nan_policy,
                   frozen)
  variables = None if transfer is None else {
      name: transfer[name].variables for name in TRANSFER_NETWORKS}
  return Experiment(config, mesh, generator, discriminator, g_tx, d_tx, schedule, None, hyper,
                    step_template(config, hyper), transfer=variables)


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
  if config.resume_from is None:  # experiments/finetune.py: a fine-tuning config needs a file
    raise ValueError('this config fine-tunes a network: give it with --config.resume_from=PATH '
                     '(an official .pkl, a sg2jax.convert directory or a training workdir)')
  transfer = load_transfer(config.resume_from) if config.resume_from else None
  spec = dataset_spec(config)
  source = spec.open()
  first, (height, width, channels) = first_image(source, spec.max_images, config.data.strict)
  resolution = config.resolution or height
  check_resolution(resolution, 'resolution')
  if (height, width) != (resolution, resolution):
    raise ValueError(f'{source.name(first)} is {width}x{height}, not {resolution}x{resolution}; '
                     f'prepare the data with `python -m sg2jax.dataset_tool --resolution '
                     f'{resolution}`')
  exp = build_models(config, resolution, channels, source.label_dim, mesh, transfer)
  largest_batch = check_batches(exp.schedule, mesh)
  exp.data = TrainData(source, resolution, channels, largest_batch, seed=config.seed,
                       mirror=spec.mirror, max_images=spec.max_images,
                       num_threads=config.data.num_threads, prefetch=config.data.prefetch,
                       strict=config.data.strict, bad_images=range(first))
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
      batch_size=config.batch_size, mirror=bool(config.mirror), seed=config.seed,
      classifiers=config.metrics_classifiers or None)


def load_run_config(path: str | Path) -> ml_collections.ConfigDict:
  """A run's saved `config.json` (or the workdir holding it) as a config: `experiments/base.py`'s
  defaults with the saved values on top (keys added since the run was saved keep their
  defaults; a saved key that no longer exists is an error naming it)."""
  from experiments import base  # the defaults, read here only
  from sg2jax.storage import as_path
  path = as_path(path)
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
