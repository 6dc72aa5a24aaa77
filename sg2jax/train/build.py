"""The ONE reader of a training config: networks, optimizers, mesh, data and derived numbers.

`build(config)` checks a config (`sg2jax.train.config`) and returns an `Experiment`: the built
objects plus frozen, typed settings (`Hyperparameters`, `LoopSettings`, `MetricSettings`, the
data's `DatasetSpec`). Loop, step, the metrics hook and the eval CLI use those; nothing else
reads a config key.

Fine-tuning (`config.resume_from`, REFERENCE.md §7.8): G, D and G_ema come from a file (official
pickle, `sg2jax.convert` directory or another run's workdir), and so does their architecture;
the network keys the run set (the experiment file or `--config.KEY=VALUE`, as the config records
them: `sg2jax.train.config.assigned_keys`) must agree with the file, and the others are not
used. Freeze-D (`config.freeze_d`, REFERENCE.md §7.9) and ADA (`config.augment`,
REFERENCE.md §7.6-§7.7) become optimizer masks and `StepConfig.augment`.
"""

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple, Optional

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
from sg2jax.networks.generator import DTYPES, fused_modconv, modconv_form
from sg2jax.networks.layers import check_resolution
from sg2jax.networks.progressive import ProgressiveDiscriminator, ProgressiveGenerator
from sg2jax.networks.stylegan1 import BasicDiscriminator, StyleGenerator
from sg2jax.networks.synthesis import ARCHITECTURES
from sg2jax.networks.weights import NetworkWeights, build_network, network_config
from sg2jax.sharding import batch_sharded, check_batch_size, make_mesh
from sg2jax.train.config import assigned_keys
from sg2jax.train.optimizers import NAN_POLICIES, make_adam
from sg2jax.train.schedule import FixedSchedule, GrowingSchedule, Stage
from sg2jax.train.step import (REMAT_MODES, AugmentSettings, Models, StepConfig, ema_beta,
                               path_length_batch)


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


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What `train_and_evaluate` runs, built from a config: made once by `build_models`, completed
  by `build` with `dataclasses.replace`, never changed."""
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
                                 batch_gpu=stage.batch_gpu)
    return dataclasses.replace(self.step_template, batch_size=stage.batch_size,
                               batch_gpu=stage.batch_gpu, resolution=stage.resolution,
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


def augment_settings(config: ml_collections.ConfigDict, hyper: Hyperparameters,
                     spec: Optional[AugmentSpec]) -> Optional[AugmentSettings]:
  """ADA's settings from `config.augment` ('none': None; 'fixed': p stays `augment_p`), with
  `spec`, the pipeline of `config.augment_pipe`."""
  if config.augment == 'none':
    return None
  return AugmentSettings(
      spec=spec, initial_p=float(config.augment_p),
      ada_target=float(config.ada_target) if config.augment == 'ada' else None,
      ada_interval=config.ada_interval, ada_kimg=hyper.ada_kimg)


def step_template(config: ml_collections.ConfigDict, hyper: Hyperparameters,
                  augment_spec: Optional[AugmentSpec]) -> StepConfig:
  """The phases' settings that do not change during a run (the schedule sets the rest);
  `augment_spec` as `augment_settings` takes it.

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
      batch_gpu=config.batch_gpu,
      style_mixing_prob=config.style_mixing_prob, r1_gamma=config.r1_gamma,
      pl_weight=config.pl_weight, pl_decay=config.pl_decay,
      g_reg_interval=config.g_reg_interval, d_reg_interval=config.d_reg_interval,
      ema_kimg=config.ema_kimg, ema_rampup=ema_rampup,
      augment=augment_settings(config, hyper, augment_spec), remat=config.remat,
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


def schedule_batches(schedule) -> dict[int, tuple[int, int]]:
  """Every (minibatch, per-GPU minibatch) the run will use, by working resolution."""
  if not schedule.progressive:
    return {schedule.resolution: (schedule.batch_size, schedule.batch_gpu)}
  levels = int(math.log2(schedule.resolution) - math.log2(schedule.initial_resolution)) + 1
  resolutions = [schedule.resolution >> level for level in range(levels)]
  return {r: (schedule.batch_sizes.get(r, schedule.batch_size),
              schedule.batch_gpus.get(r, schedule.batch_gpu)) for r in resolutions}


def check_batches(schedule, mesh: Mesh) -> None:
  """Checks every (minibatch, per-GPU minibatch) the run will use against the devices before
  training starts."""
  for resolution, (batch, batch_gpu) in schedule_batches(schedule).items():
    where = f' (at resolution {resolution})' if schedule.progressive else ''
    per_device = check_batch_size(batch, mesh, f'batch_size{where}')
    if batch % batch_gpu:
      raise ValueError(f'batch_size {batch}{where} is not a multiple of batch_gpu {batch_gpu}')
    if per_device % batch_gpu and batch_gpu % per_device:
      raise ValueError(f'batch_gpu {batch_gpu} and the per-device batch {per_device}{where} must '
                       f'divide one another')


AUGMENT_MODES = ('none', 'ada', 'fixed')
G_TYPES = ('Generator', 'StyleGenerator', 'ProgressiveGenerator')
D_TYPES = ('Discriminator', 'BasicDiscriminator', 'ProgressiveDiscriminator')
PRECISIONS = ('highest', 'high', 'default')


class Range(NamedTuple):
  """The values a numeric config key takes: finite, from `low` to `high` (None: unbounded), each
  end included unless `above` / `below` says it is not, and None where `optional` (what None
  means is in the key's comment, `sg2jax.train.config.defaults`). `example` is a value to
  suggest in the error."""
  low: float
  high: Optional[float] = None
  above: bool = False  # > low rather than >= low
  below: bool = False  # < high rather than <= high
  optional: bool = False
  example: Any = None

  def admits(self, value) -> bool:
    if value is None:
      return self.optional
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      return False
    return ((value > self.low or (value == self.low and not self.above))
            and (self.high is None or value < self.high
                 or (value == self.high and not self.below)))

  def rule(self) -> str:
    if self.high is None:
      rule = f'{">" if self.above else ">="} {_shown(self.low)}'
    else:
      rule = (f'in {"(" if self.above else "["}{_shown(self.low)}, {_shown(self.high)}'
              f'{")" if self.below else "]"}')
    return rule + (' or None' if self.optional else '')


class PowerOfTwo(NamedTuple):
  """A resolution: a power of two >= 4 (or None / 0, "from the data", where `optional`)."""
  optional: bool = False
  example: int = 256

  def admits(self, value) -> bool:
    if self.optional and not value:
      return value is None or value == 0
    return isinstance(value, int) and value >= 4 and not value & (value - 1)

  def rule(self) -> str:
    return 'a power of two >= 4' + (', or None for the data\'s' if self.optional else '')


# Every numeric key of the training config (`sg2jax.train.config.defaults`) and its values.
KEY_RANGES = {
    'seed': Range(0, example=0),
    'data.num_images': Range(0, example=1000),
    'data.max_images': Range(1, optional=True, example=1000),
    'data.num_threads': Range(1, example=2),
    'data.prefetch': Range(0, example=2),
    'resolution': PowerOfTwo(optional=True),
    'total_kimg': Range(0, example=25000),  # 0: the initial networks are saved, not trained
    'batch_size': Range(1, example=32),
    'batch_gpu': Range(1, example=4),
    'G.z_dim': Range(1, example=512),
    'G.w_dim': Range(1, example=512),
    'G.mapping_layers': Range(1, example=8),
    'G.mapping_lr_multiplier': Range(0, above=True, example=0.01),
    'G.w_avg_beta': Range(0, 1, example=0.995),
    'G.channel_base': Range(1, example=32768),
    'G.channel_max': Range(1, example=512),
    'G.conv_clamp': Range(0, above=True, optional=True, example=256),
    'D.channel_base': Range(1, example=32768),
    'D.channel_max': Range(1, example=512),
    'D.conv_clamp': Range(0, above=True, optional=True, example=256),
    'D.mbstd_group_size': Range(1, optional=True, example=4),
    'D.mbstd_num_channels': Range(0, example=1),
    'g_lr': Range(0, above=True, example=0.002),
    'd_lr': Range(0, above=True, example=0.002),
    'adam_beta1': Range(0, 1, below=True, example=0),
    'adam_beta2': Range(0, 1, below=True, example=0.99),
    'adam_eps': Range(0, above=True, example=1e-8),
    'ema_kimg': Range(0, example=10),  # 0: G_ema is G
    'ema_rampup': Range(0, above=True, optional=True, example=0.05),
    'r1_gamma': Range(0, example=10),
    'pl_weight': Range(0, example=2),
    'pl_batch_shrink': Range(1, example=2),
    'pl_decay': Range(0, 1, example=0.01),
    'style_mixing_prob': Range(0, 1, example=0.9),
    'g_reg_interval': Range(1, optional=True, example=4),
    'd_reg_interval': Range(1, optional=True, example=16),
    'growing.initial_resolution': PowerOfTwo(example=8),
    'growing.training_kimg': Range(0, example=600),
    'growing.transition_kimg': Range(0, example=600),
    'growing.minibatch_repeats': Range(1, example=4),
    'growing.lr': Range(0, above=True, example=0.001),
    'freeze_d': Range(0, example=10),  # 0: nothing frozen
    'augment_p': Range(0, 1, example=0.2),
    'ada_target': Range(0, 1, example=0.6),
    'ada_interval': Range(1, example=4),
    'ada_kimg': Range(0, above=True, optional=True, example=500),
    'kimg_per_tick': Range(0, example=4),  # 0: a tick every minibatch
    'snapshot_ticks': Range(1, example=50),
    'image_snapshot_ticks': Range(1, example=50),
    'keep_checkpoints': Range(1, example=5),
    'grid_size': Range(1, example=16),
    'metrics_num_samples': Range(1, optional=True, example=50000),
}
# The growing schedule's (resolution, value) tables: each value's range.
TABLE_RANGES = {
    'growing.batch_sizes': Range(1, example='((8, 256), (16, 128))'),
    'growing.batch_gpus': Range(1, example='((8, 32), (16, 16))'),
    'growing.lrs': Range(0, above=True, example='((128, 0.0015), (256, 0.002))'),
}
# Every key with a fixed set of values, and its values (the first one suggested).
KEY_CHOICES = {
    'G.type': G_TYPES, 'D.type': D_TYPES, 'G.architecture': ARCHITECTURES,
    'D.architecture': ARCHITECTURES, 'G.dtype': DTYPES, 'D.dtype': DTYPES,
    'nan_policy': NAN_POLICIES, 'precision': PRECISIONS, 'remat': REMAT_MODES,
    'augment': AUGMENT_MODES, 'augment_pipe': tuple(PRESETS),
}


def _shown(value) -> str:
  """A value as the command line writes it: `-1` for -1.0, `0.002`, `'bgc'`."""
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return repr(value)


def _leaf(config: ml_collections.ConfigDict, key: str):
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def _bad_value(key: str, value, rule: str, example) -> ValueError:
  example = example if isinstance(example, str) else _shown(example)
  return ValueError(f'config.{key}={_shown(value)}: must be {rule}; pass e.g. '
                    f'--config.{key}={example}')


# Strings that stand for "no file" in other programs' configs: as `resume_from` they would read as
# a file name (unless a file has that name).
NO_FILE_WORDS = ('None', 'none', 'null')


def validate(config: ml_collections.ConfigDict) -> None:
  """One-line errors for values that are out of range (unknown keys fail in config_flags), each
  naming the key, its value and what to use: every numeric key has its `KEY_RANGES` (or
  `TABLE_RANGES`) entry, every key with a fixed set of values its `KEY_CHOICES`.

  `resume_from` is a file to fine-tune from, or '' for fresh networks: None, a blank string or
  a `NO_FILE_WORDS` string naming no file does not say which and is an error, as is '' when the
  config needs a file (`resume_required`, experiments/finetune.py).
  """
  resume_from = config.resume_from
  if (not isinstance(resume_from, str) or (resume_from and not resume_from.strip())
      or (resume_from in NO_FILE_WORDS and not Path(resume_from).exists())):
    raise _bad_value('resume_from', resume_from, "a file to fine-tune from, or '' for fresh "
                     'networks', 'ffhq.pkl')
  if config.resume_required and not resume_from:
    raise ValueError('this config fine-tunes a network: give it with --config.resume_from=PATH '
                     '(an official .pkl, a sg2jax.convert directory or a training workdir)')
  for key, valid in KEY_RANGES.items():
    value = _leaf(config, key)
    if not valid.admits(value):
      finite = isinstance(value, float) and not math.isfinite(value)
      raise _bad_value(key, value, ('a finite number ' if finite else '') + valid.rule(),
                       valid.example)
  for key, valid in TABLE_RANGES.items():
    table = _leaf(config, key)
    if not all(isinstance(entry, tuple) and len(entry) == 2 and PowerOfTwo().admits(entry[0])
               and valid.admits(entry[1]) for entry in table):
      raise _bad_value(key, table, f'(resolution, value) pairs of a power of two >= 4 and a '
                       f'value {valid.rule()}', f'"{valid.example}"')
  for key, choices in KEY_CHOICES.items():
    value = _leaf(config, key)
    if value not in choices:
      raise _bad_value(key, value, f'one of {", ".join(choices)}', choices[0])
  if config.freeze_d and config.D.type != 'Discriminator':
    raise ValueError(f'config.freeze_d needs config.D.type Discriminator (ADA\'s layer order), '
                     f'not {config.D.type}')


def build_networks(config: ml_collections.ConfigDict, resolution: int, channels: int,
                   c_dim: int) -> tuple[nn.Module, nn.Module]:
  """G and D of the types `config.G.type` / `config.D.type` (configs A-F)."""
  g, d = config.G, config.D
  mapping = dict(z_dim=g.z_dim, c_dim=c_dim, w_dim=g.w_dim, img_resolution=resolution,
                 img_channels=channels, mapping_layers=g.mapping_layers,
                 mapping_lr_multiplier=g.mapping_lr_multiplier, w_avg_beta=g.w_avg_beta,
                 channel_base=g.channel_base, channel_max=g.channel_max, dtype=g.dtype)
  if g.type == 'Generator':
    generator = Generator(architecture=g.architecture, conv_clamp=g.conv_clamp, **mapping)
  elif g.type == 'ProgressiveGenerator':
    generator = ProgressiveGenerator(conv_clamp=g.conv_clamp, **mapping)
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
# The config keys that describe the networks' architecture (the rest, dtype, only says how to
# compute: it comes from the config even when fine-tuning).
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
                      resolution: int, channels: int, c_dim: int,
                      set_keys: frozenset[str]) -> tuple[nn.Module, nn.Module]:
  """G and D as `resume_from`'s network configs describe them.

  A config key of the architecture (`G.type`, `G.*` of `G_ARCHITECTURE_KEYS`, `D.type`, `D.*` of
  `D_ARCHITECTURE_KEYS`, `resolution`) in `set_keys` (the keys the run set, whatever their
  value) must equal the file's value; the others are not used (a `resolution` of None or 0, "from
  the data", agrees with any file). The data's resolution, channels and labels must fit the
  networks. `G.dtype` and `D.dtype` come from the config.

  Raises:
    ValueError: one line naming every key whose value contradicts the file (both values), or
      data that does not fit the networks, or progressive-growing networks.
  """
  path = config.resume_from
  generator = build_network(networks['G'].config)
  discriminator = build_network(networks['D'].config)
  if generator.progressive or discriminator.progressive:
    raise ValueError(f'resume_from {path} holds progressive-growing networks '
                     f'({type(generator).__name__}); fine-tuning starts from StyleGAN2 networks '
                     f'(configs E/F)')
  conflicts = []

  def compare(key: str, value, file_value) -> None:
    if key in set_keys and value != file_value:
      conflicts.append(f'config.{key}={value!r} but resume_from {path} has {file_value!r}')

  if config.resolution:
    compare('resolution', config.resolution, generator.img_resolution)
  for name, network, keys in (('G', generator, G_ARCHITECTURE_KEYS),
                              ('D', discriminator, D_ARCHITECTURE_KEYS)):
    compare(f'{name}.type', config[name].type, type(network).__name__)
    for key in keys:
      compare(f'{name}.{key}', config[name][key], getattr(network, key))
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
  return generator.clone(dtype=config.G.dtype), discriminator.clone(dtype=config.D.dtype)


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
  (`load_transfer`), the networks are the file's (checked against the network keys the config
  records as set) and the run starts from its variables. G computes its modulated convolutions
  as `fused_modconv` decides for training. `config` is one that `validate` accepted."""
  hyper = derived_hyperparameters(config, mesh.devices.size)
  if transfer is None:
    generator, discriminator = build_networks(config, resolution, channels, c_dim)
  else:
    generator, discriminator = transfer_networks(config, transfer, resolution, channels, c_dim,
                                                 assigned_keys(config))
  generator = modconv_form(generator, fused_modconv(training=True,
                                                    devices=list(mesh.devices.flat)))
  schedule = make_schedule(config, resolution, generator.progressive, hyper)
  check_batches(schedule, mesh)
  augment_spec = (None if config.augment == 'none' else
                  AugmentSpec.from_preset(config.augment_pipe))
  if (augment_spec is not None and augment_spec.color_enabled(channels)
      and channels not in (1, 3)):
    raise ValueError(f'config.augment_pipe {config.augment_pipe!r} has colour transforms, which '
                     f'need 1 or 3 channels; the data has {channels}')
  frozen = frozen_d_layers(discriminator, config.freeze_d) if config.freeze_d else ()
  g_tx = make_adam(hyper.g_lr, hyper.g_beta1, hyper.g_beta2, config.adam_eps, config.nan_policy)
  d_tx = make_adam(hyper.d_lr, hyper.d_beta1, hyper.d_beta2, config.adam_eps, config.nan_policy,
                   frozen)
  variables = None if transfer is None else {
      name: transfer[name].variables for name in TRANSFER_NETWORKS}
  return Experiment(config, mesh, generator, discriminator, g_tx, d_tx, schedule, None, hyper,
                    step_template(config, hyper, augment_spec), transfer=variables)


def dataset_spec(config: ml_collections.ConfigDict) -> DatasetSpec:
  """Where the run's images come from (`config.data`, `resolution`, `mirror`, `cond`, `seed`)."""
  data = config.data
  return DatasetSpec(source=data.source, path=data.path, split=data.split,
                     use_labels=bool(config.cond), tfds_data_dir=data.tfds_data_dir,
                     num_images=data.num_images, resolution=config.resolution or 0,
                     seed=config.seed, max_images=data.max_images, mirror=bool(config.mirror))


def build(config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None) -> Experiment:
  """Builds the run: checks the config, opens the data, makes networks, optimizers, schedule."""
  validate(config)  # first: a bad value stops the run before the data or a file is read
  mesh = make_mesh() if mesh is None else mesh
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
  largest_batch = max(batch for batch, _ in schedule_batches(exp.schedule).values())
  data = TrainData(source, resolution, channels, largest_batch, seed=config.seed,
                   mirror=spec.mirror, max_images=spec.max_images,
                   num_threads=config.data.num_threads, prefetch=config.data.prefetch,
                   strict=config.data.strict, bad_images=range(first))
  loop = LoopSettings(
      seed=config.seed, total_nimg=exp.hyper.total_nimg, kimg_per_tick=config.kimg_per_tick,
      snapshot_ticks=config.snapshot_ticks, image_snapshot_ticks=config.image_snapshot_ticks,
      keep_checkpoints=config.keep_checkpoints, grid_size=config.grid_size,
      minibatch_repeats=config.growing.minibatch_repeats if exp.schedule.progressive else 1)
  return dataclasses.replace(exp, data=data, loop=loop, metrics=metric_settings(config))


def metric_settings(config: ml_collections.ConfigDict) -> MetricSettings:
  """The metrics to run at every snapshot (`config.metrics` and their weight files)."""
  return MetricSettings(
      names=tuple(config.metrics), inception=config.metrics_inception or None,
      vgg16=config.metrics_vgg16 or None, num_samples=config.metrics_num_samples,
      batch_size=config.batch_size, mirror=bool(config.mirror), seed=config.seed,
      classifiers=config.metrics_classifiers or None)
