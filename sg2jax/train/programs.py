"""The programs a training run compiles, without running anything: for ahead-of-time compilation
(`sg2jax.aot`) on devices that need not exist here.

Every jitted function of a run is given here as a `Program`: its name, how to lower it for the
run's mesh from abstract arguments (`jax.ShapeDtypeStruct`s: no array is allocated), and how
many images one call computes. The training loop builds the same functions (`TrainStep` and
`sample_grid_function`), so what compiles here is what the run compiles.
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from sg2jax.sharding import batch_sharded, replicated
from sg2jax.train.build import Experiment
from sg2jax.train.schedule import Stage
from sg2jax.train.state import GANState, init_state
from sg2jax.train.step import TrainStep

GRID_SEED_STREAM = 0x5A3  # the sample grid's latents: fold_in(key(seed), GRID_SEED_STREAM)


@dataclasses.dataclass(frozen=True)
class Program:
  """One jitted function of a run.

  Attributes:
    name: the phase ('g_main', 'g_reg', 'd_main', 'd_reg', 'ema', 'ada') or 'samples' (the
      snapshot grid); growing runs add the working resolution ('g_main@64').
    lower: `() -> jax.stages.Lowered` for the run's mesh.
    images: images one call computes (the minibatch; the path-length batch for 'g_reg').
    stage: the schedule stage the program belongs to.
  """
  name: str
  lower: Callable[[], Any]
  images: int
  stage: Stage


def abstract_state(exp: Experiment) -> GANState:
  """The run's training state as shapes and dtypes (what `init_state` would make)."""
  augment_p = None if exp.augment is None else exp.augment.initial_p
  return jax.eval_shape(lambda: init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx,
                                           0, exp.transfer, augment_p))


def abstract_batch(exp: Experiment, stage: Stage, channels: int, c_dim: int) -> dict:
  """A minibatch of `stage` as the data pipeline delivers it: uint8 images at the full
  resolution and float32 labels."""
  r = exp.generator.img_resolution
  return {'image': jax.ShapeDtypeStruct((stage.batch_size, r, r, channels), jnp.uint8),
          'label': jax.ShapeDtypeStruct((stage.batch_size, c_dim), jnp.float32)}


def stage_name(name: str, exp: Experiment, stage: Stage) -> str:
  return f'{name}@{stage.resolution}' if exp.schedule.progressive else name


def phase_images(name: str, train_step: TrainStep) -> int:
  return train_step.cfg.pl_batch_size if name == 'g_reg' else train_step.cfg.batch_size


def training_programs(exp: Experiment, channels: int, c_dim: int, grid_size: int, seed: int = 0,
                      names: Optional[Sequence[str]] = None) -> list[Program]:
  """Every phase at every stage of the schedule (one per working resolution when growing; a
  fade-in reuses its resolution's programs, `lod` being traced), then the sample grid's program
  (`grid_size` images) per stage. `names` keeps only those programs ('g_main', 'samples', ...)."""
  state = abstract_state(exp)
  lod = jax.ShapeDtypeStruct((), jnp.float32)
  programs = []
  for stage in exp.schedule.stages():
    train_step = TrainStep(exp.models, exp.step_config(stage), exp.mesh)
    batch = abstract_batch(exp, stage, channels, c_dim)
    for name, _, interval in train_step.table:
      if interval is None or (names is not None and name not in names):
        continue
      lower = (lambda name, train_step: lambda: train_step.lower(name, state, batch, lod))(
          name, train_step)
      programs.append(Program(stage_name(name, exp, stage), lower,
                              phase_images(name, train_step), stage))
    if names is None or 'samples' in names:
      grid = sample_grid_function(exp, grid_size, seed)
      lower = (lambda stage: lambda: grid.jitted.lower(
          state.g_ema, *grid.abstract_latents, lod, stage.resolution))(stage)
      programs.append(Program(stage_name('samples', exp, stage), lower, grid.count, stage))
  return programs


@dataclasses.dataclass(frozen=True)
class SampleGridFunction:
  """The snapshot grid's generator call: `jitted(g_ema, z, c, lod, resolution)` -> images
  `[count, R, R, C]` (replicated). The latents' rows are split over the devices (padded to a
  multiple of their number); `latents()` gives the run's fixed z and c."""
  jitted: Callable
  count: int
  rows: int  # count padded to a multiple of the devices
  seed: int
  z_dim: int
  c_dim: int
  sharding: Any

  @property
  def abstract_latents(self) -> tuple:
    c = None if not self.c_dim else jax.ShapeDtypeStruct((self.rows, self.c_dim), jnp.float32)
    return jax.ShapeDtypeStruct((self.rows, self.z_dim), jnp.float32), c

  def latents(self) -> tuple:
    """The grid's z (and one-hot labels cycling through the classes), padded and split."""
    def make():
      key = jax.random.fold_in(jax.random.key(self.seed), GRID_SEED_STREAM)
      z = jax.random.normal(key, (self.count, self.z_dim))
      z = jnp.concatenate([z, jnp.zeros((self.rows - self.count, self.z_dim))])
      c = None
      if self.c_dim:
        c = jax.nn.one_hot(jnp.arange(self.rows) % self.c_dim, self.c_dim)
      return z, c
    return jax.jit(make, out_shardings=self.sharding)()


def sample_grid_function(exp: Experiment, count: int, seed: int) -> SampleGridFunction:
  """G_ema's images of the run's fixed latents (const noise, no truncation, the stage's level of
  detail when growing)."""
  g = exp.generator
  devices = exp.mesh.devices.size
  rows = -(-count // devices) * devices
  jitted = jax.jit(
      lambda v, z, c, lod, resolution: g.apply(v, z, c, noise_mode='const', lod=lod,
                                               resolution=resolution)[:count],
      static_argnums=4, in_shardings=(replicated(exp.mesh), batch_sharded(exp.mesh),
                                      batch_sharded(exp.mesh), replicated(exp.mesh)),
      out_shardings=replicated(exp.mesh))
  return SampleGridFunction(jitted, count, rows, seed, g.z_dim, g.c_dim, batch_sharded(exp.mesh))
