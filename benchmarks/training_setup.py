"""What the training benchmarks time: sg2jax's phases as `sg2jax.train` builds them, on a random
uint8 batch (no input pipeline), sharded over all local devices."""

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from sg2jax.sharding import global_batch, make_mesh, replicated
from sg2jax.train.build import Experiment, build_models, validate
from sg2jax.train.state import GANState, init_state, reset_optimizers
from sg2jax.train.step import TrainStep


@dataclasses.dataclass
class PhaseBench:
  """A built run, its `TrainStep`, a fresh state and one batch."""
  exp: Experiment
  train_step: TrainStep
  state: GANState
  batch: Any
  lod: jax.Array

  def compile(self, name: str) -> float:
    """Compiles phase `name`; returns the seconds it took."""
    self.train_step.executable(name, self.state, self.batch, self.lod)
    return self.train_step.compile_seconds[name]

  def flops(self, name: str) -> float:
    """XLA's cost-analysis flop count of one call of phase `name` (compiled if needed)."""
    cost = self.train_step.executable(name, self.state, self.batch, self.lod).cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    return float((cost or {}).get('flops', float('nan')))

  def run(self, name: str) -> None:
    """One call of phase `name` (the state is donated and replaced)."""
    fn = self.train_step.executable(name, self.state, self.batch, self.lod)
    self.state, metrics = fn(self.state, self.batch, self.lod)
    jax.block_until_ready((self.state, metrics))


def build_phase_bench(config: ml_collections.ConfigDict, resolution: int, seed: int = 0,
                      mesh=None) -> PhaseBench:
  """Networks, optimizers and phases of `config` at `resolution` (3 channels, unconditional),
  an initialized state (Adam at the schedule's first learning rates) and a random batch."""
  mesh = make_mesh() if mesh is None else mesh
  validate(config)
  exp = build_models(config, resolution, 3, 0, mesh)
  stage = exp.schedule.at(0)
  train_step = TrainStep(exp.models, exp.step_config(stage), mesh)
  state = jax.jit(lambda: reset_optimizers(
      init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx, seed, exp.transfer,
                 None if exp.augment is None else exp.augment.initial_p), exp.g_tx,
      exp.d_tx, stage.g_lr, stage.d_lr), out_shardings=replicated(mesh))()
  rng = np.random.default_rng(seed)
  host = {'image': rng.integers(0, 256, (stage.batch_size, resolution, resolution, 3),
                                dtype=np.uint8),
          'label': np.zeros((stage.batch_size, 0), np.float32)}
  return PhaseBench(exp, train_step, state, global_batch(host, mesh),
                    jax.numpy.float32(stage.lod))
