"""A training run's config: every key with its default, which keys a run set, and the saved copy.

`defaults()` holds every key once, with its default (StyleGAN2 config F, REFERENCE.md §2, §3) and
a comment; `experiments/` starts from it and changes a few keys, and `--config.KEY=VALUE`
changes more (an unknown key is an error that names it). `sg2jax.train.build` is its only
reader.

Which keys were set. Fine-tuning (`resume_from`) takes the networks' architecture from a file
and uses only the network keys that the experiment file or the command line set; a key set to
its default value counts as set, a key left at its default does not. So every node of a config
is a `TrainConfig`, a `ConfigDict` that records each of its keys assigned after the node was
made: `config.KEY = VALUE` in an experiment file (or a test), and `--config.KEY=VALUE`, which
ml_collections' flag parser applies by the same assignment. `assigned_keys(config)` reads the
records of the whole tree as dotted keys. The record travels with the config (deep copies,
pickles and `copy_and_resolve_references` keep it), so every entry point hands `build` one
object; there is no global state. `defaults()` and `load_run_config` return configs that record
nothing: a run's saved `config.json` is a record of what ran, not a choice, so keys come from it
unset, and only command-line overrides on top of it are set. `restore_defaults` puts keys back
to their defaults, unset (experiments/finetune.py: its networks come from the file).

`load_run_config` reads a run's saved `config.json` (or the workdir holding it) onto the
defaults: keys added since the run was saved keep their defaults, keys retired since are dropped
(`RETIRED_KEYS`), values whose meaning moved to another key are moved (`saved_meanings`), and
any other saved key that no longer exists is an error naming it.
"""

import json
from pathlib import Path

import ml_collections

from sg2jax.storage import as_path

CONFIG_FILE = 'config.json'  # a run's config, saved in its workdir
# Keys that runs saved and that no longer exist: read from an old config.json and dropped.
# G.fused_modconv: the form of G's modulated convolutions is not a setting but one rule
# (`sg2jax.networks.generator.fused_modconv`); the values are the same either way.
RETIRED_KEYS = ('G.fused_modconv',)


class TrainConfig(ml_collections.ConfigDict):
  """A `ConfigDict` that records which of its keys were assigned after it was made.

  The record holds this node's own keys; a subtree keeps its own record, so assigning a whole
  subtree records none of its leaves (they are set where they were assigned, in that subtree).
  """

  def __init__(self, *args, **kwargs):
    object.__setattr__(self, '_assigned', set())
    super().__init__(*args, **kwargs)
    self._assigned.clear()  # the initial values are not assignments

  def __setitem__(self, key, value):
    super().__setitem__(key, value)
    self._assigned.add(key)

  def __setstate__(self, state):
    super().__setstate__(state)  # assigns every field again: restore the record after it
    object.__setattr__(self, '_assigned', set(state.get('_assigned', ())))

  def copy_and_resolve_references(self, visit_map=None):
    copy = super().copy_and_resolve_references(visit_map)
    object.__setattr__(copy, '_assigned', set(self._assigned))
    return copy


def assigned_keys(config: ml_collections.ConfigDict) -> frozenset[str]:
  """The dotted keys (`'G.channel_base'`) assigned since the config's nodes were made.

  A node that is a plain `ConfigDict` (not made by `defaults()`) records nothing, so every one
  of its keys counts as set.
  """
  keys = set()

  def walk(node: ml_collections.ConfigDict, prefix: str) -> None:
    record = node._assigned if isinstance(node, TrainConfig) else None
    for key, value in node.items():
      if isinstance(value, ml_collections.ConfigDict):
        walk(value, f'{prefix}{key}.')
      elif record is None or key in record:
        keys.add(prefix + key)

  walk(config, '')
  return frozenset(keys)


def clear_assignments(config: TrainConfig) -> TrainConfig:
  """`config`, its record (and its subtrees') emptied: no key counts as set."""
  config._assigned.clear()
  for value in config.values():
    if isinstance(value, TrainConfig):
      clear_assignments(value)
  return config


def restore_defaults(config: TrainConfig, *keys: str) -> TrainConfig:
  """`config` with the top-level `keys` (e.g. 'G', 'D') back at their defaults, none of their
  keys set."""
  default = defaults()
  for key in keys:
    config[key] = default[key]  # a subtree of the defaults: its record is empty
    if not isinstance(config[key], ml_collections.ConfigDict):
      config._assigned.discard(key)
  return config


def defaults() -> TrainConfig:
  """Every config key, once, with its default: StyleGAN2 config F. Nothing is recorded as set."""
  config = TrainConfig()
  config.seed = 0  # network init, latents, noise, shuffling, flips

  # ---- Data ----------------------------------------------------------------------------------
  config.data = TrainConfig()
  config.data.source = 'auto'  # auto (from the path) | folder | zip | lmdb | tfds | shapes
  config.data.path = ''  # image folder, dataset zip, LMDB folder, or tfds dataset name
  config.data.num_images = 0  # source 'shapes' only: how many images to generate
  config.data.split = 'train'  # tfds split
  config.data.tfds_data_dir = ml_collections.FieldReference(None, field_type=str)
  config.data.max_images = ml_collections.FieldReference(None, field_type=int)  # first N only
  config.data.num_threads = 2  # decoding threads
  config.data.prefetch = 2  # host batches read ahead
  # A bad image (unreadable, wrong size) is skipped with a warning and replaced by the next
  # good one; strict: save a checkpoint and stop at the first one instead.
  config.data.strict = False
  config.resolution = ml_collections.FieldReference(None, field_type=int)  # None: from the data
  config.mirror = False  # random x-flips of the reals (TF: per sample, prob 0.5)
  config.cond = False  # train on the dataset's labels (dataset.json)

  # ---- Length and batch ----------------------------------------------------------------------
  config.total_kimg = 25000.0  # thousands of real images shown to D
  config.batch_size = 32  # global minibatch
  config.batch_gpu = 4  # official per-GPU batch: minibatch-stddev groups form within it

  # ---- Networks (sg2jax.networks.Generator / Discriminator fields) ---------------------------
  config.G = TrainConfig()
  config.G.type = 'Generator'  # Generator (E/F) | StyleGenerator (A) | ProgressiveGenerator (B-D)
  config.G.z_dim = 512
  config.G.w_dim = 512
  config.G.mapping_layers = 8
  config.G.mapping_lr_multiplier = 0.01
  config.G.w_avg_beta = 0.995
  config.G.architecture = 'skip'  # orig | skip | resnet
  config.G.channel_base = 32768  # config F; 16384 for configs A-E (= 2 x TF fmap_base)
  config.G.channel_max = 512
  config.G.conv_clamp = ml_collections.FieldReference(None, field_type=float)  # ADA uses 256
  config.G.dtype = 'float32'  # compute dtype: float32 | bfloat16

  config.D = TrainConfig()
  config.D.type = 'Discriminator'  # Discriminator | BasicDiscriminator | ProgressiveDiscriminator
  config.D.architecture = 'resnet'  # orig | skip | resnet
  config.D.channel_base = 32768
  config.D.channel_max = 512
  config.D.conv_clamp = ml_collections.FieldReference(None, field_type=float)
  config.D.mbstd_group_size = 4
  config.D.mbstd_num_channels = 1
  config.D.dtype = 'float32'

  # ---- Optimization --------------------------------------------------------------------------
  config.g_lr = 0.002  # Adam learning rates before the lazy-regularization adjustment
  config.d_lr = 0.002
  config.adam_beta1 = 0.0
  config.adam_beta2 = 0.99
  config.adam_eps = 1e-8
  config.ema_kimg = 10.0  # G_ema half-life in thousands of images
  config.ema_rampup = ml_collections.FieldReference(None, field_type=float)  # ADA option
  config.nan_policy = 'skip'  # non-finite gradients: skip the update (TF) | nan_to_num (ADA)
  config.precision = 'highest'  # matmul/conv precision: highest (exact float32) | default
  # Backward passes of G's synthesis and D keep every intermediate ('none') or only each
  # block's outputs and compute the rest again ('blocks': less memory, more arithmetic; the
  # same values), 'blocks_ordered' as 'blocks' with G's blocks' parameter gradients taken
  # before the gradient moves on (sg2jax/train/step.py). `python -m sg2jax.aot` shows what each
  # needs on a TPU.
  config.remat = 'none'
  # Compiled programs persist here between runs: 'auto' ($SG2JAX_COMPILE_CACHE, else
  # ~/.cache/sg2jax/jax), a directory, or 'none'.
  config.compile_cache = 'auto'

  # ---- Loss ----------------------------------------------------------------------------------
  config.r1_gamma = 10.0
  config.pl_weight = 2.0
  config.pl_batch_shrink = 2
  config.pl_decay = 0.01
  config.style_mixing_prob = 0.9
  config.g_reg_interval = ml_collections.FieldReference(4, field_type=int)  # None: every step
  config.d_reg_interval = ml_collections.FieldReference(16, field_type=int)  # in the main loss

  # ---- Progressive growing (configs A-D: progressive G and D types; REFERENCE.md §3.3) -----
  config.growing = TrainConfig()
  config.growing.initial_resolution = 8  # TF lod_initial_resolution
  config.growing.training_kimg = 600.0  # per resolution: stable, then
  config.growing.transition_kimg = 600.0  # fading in the next one
  config.growing.minibatch_repeats = 4  # minibatches between schedule evaluations
  config.growing.batch_sizes = ((8, 256), (16, 128), (32, 64), (64, 32))  # else batch_size
  config.growing.batch_gpus = ((8, 32), (16, 16), (32, 8), (64, 4))  # else batch_gpu
  config.growing.lr = 0.001  # learning rate when a resolution is not in `lrs`
  config.growing.lrs = ((128, 0.0015), (256, 0.002), (512, 0.003), (1024, 0.003))

  # ---- Fine-tuning, Freeze-D, ADA (StyleGAN2-ADA; REFERENCE.md §7.6-§7.9) ---------------------
  # Start a new run from the G, D and G_ema (w_avg included) of an official pickle (ADA or TF),
  # a `sg2jax.convert` directory or another run's workdir, with fresh optimizers at step 0 (and,
  # as ADA, no ema_rampup). The networks' architecture comes from the file: a network key the
  # experiment file or the command line sets (`assigned_keys`) must agree with it; the others
  # are not used. A restart resumes from the run's own checkpoints.
  # '' is the one value for fresh networks; None (or a blank or 'None' string) is an error, not
  # a second way to say it (`sg2jax.train.build.validate`).
  config.resume_from = ''
  config.resume_required = False  # True: no run without resume_from (experiments/finetune.py)
  config.freeze_d = 0  # Freeze-D: D's first N layers, from the highest resolution, not trained
  config.augment = 'none'  # D's augmentation: none | ada (adaptive p) | fixed (p = augment_p)
  config.augment_p = 0.0  # the initial p (ada) or the constant p (fixed), in [0, 1]
  config.augment_pipe = 'bgc'  # ADA --augpipe preset: blit | geom | color | bg | bgc
  config.ada_target = 0.6  # ada: p moves so that E[sign(D(augmented reals))] approaches this
  config.ada_interval = 4  # ada: minibatches between adjustments of p
  # ada: thousands of images for p to change by 1; None: 500, or 100 when fine-tuning
  config.ada_kimg = ml_collections.FieldReference(None, field_type=float)

  # ---- Loop, checkpoints, reports ------------------------------------------------------------
  config.kimg_per_tick = 4.0  # progress line and scalars every tick
  config.snapshot_ticks = 50  # checkpoint (and periodic metrics) every N ticks
  config.image_snapshot_ticks = 50  # fixed-z sample grid every N ticks
  config.keep_checkpoints = 5
  config.grid_size = 16  # images in the sample grid
  config.metrics = ()  # metric names run at every snapshot (sg2jax.eval), e.g. ('fid50k_full',)
  config.metrics_inception = ''  # pt_inception-2015-12-05-6726825d.pth (FID, KID, IS)
  config.metrics_vgg16 = ''  # torchvision vgg16-397923af.pth (precision/recall)
  config.metrics_classifiers = ''  # folder of the 40 celebahq-classifier-*.pkl (ls)
  config.metrics_num_samples = ml_collections.FieldReference(None, field_type=int)  # None: 50k
  return clear_assignments(config)


def saved_meanings(saved: dict) -> dict:
  """A saved config's values with today's keys for what they meant: `resume_from` None said
  "this config fine-tunes, the file is still to be given", which `resume_required` says now
  (and `resume_from` '' with it)."""
  if 'resume_from' in saved and saved['resume_from'] is None:
    saved = {**saved, 'resume_from': '', 'resume_required': True}
  return saved


def load_run_config(path: str | Path) -> TrainConfig:
  """A run's saved `config.json` (or the workdir holding it) as a config: the defaults with the
  saved values on top, no key recorded as set (keys added since the run was saved keep their
  defaults; `RETIRED_KEYS` are dropped; `saved_meanings` moves values to the keys that carry
  their meaning now; any other saved key that no longer exists is an error naming it)."""
  path = as_path(path)
  if path.is_dir():
    path = path / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f'{path} not found: not a training workdir (no {CONFIG_FILE})')
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not a readable config ({e})') from None
  config = defaults()

  def merge(node: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
    for key, value in values.items():
      if prefix + key in RETIRED_KEYS:
        continue
      if key not in node:
        raise ValueError(f'{path}: unknown config key {prefix}{key}')
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        merge(node[key], value, f'{prefix}{key}.')
      else:
        node[key] = tuple(map(tuple_if_list, value)) if isinstance(value, list) else value

  def tuple_if_list(value):
    return tuple(value) if isinstance(value, list) else value

  merge(config, saved_meanings(saved), '')
  return clear_assignments(config)
