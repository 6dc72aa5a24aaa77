"""Training configs A and D (tiny) through the progressive-growing schedule: across the 16x16
fade-in, with Adam resets, per-resolution batches and exact resume in the middle of the fade."""

import jax
import numpy as np
import pytest

import growing_experiment
from sg2jax.checkpoint import TrainCheckpoints, load_networks
from sg2jax.train.loop import count_steps
from sg2jax.train.build import build
from test_train import state_leaves


def config_for(name, total_kimg=None):
  config = growing_experiment.get_config(name)
  if total_kimg is not None:
    config.total_kimg = total_kimg
  return config


def test_the_tiny_schedule_fades_in_16x16():
  exp = build(config_for('d'))
  lods, nimg, step = [], 0, 0
  while nimg < exp.total_nimg:
    phase = exp.schedule.at(nimg)
    lods.append(phase.lod)
    nimg += 4 * phase.batch_size
    step += 4
  assert lods == pytest.approx([1.0, 1.0, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0, 0, 0, 0])
  assert step == count_steps(exp.schedule, exp.total_nimg, 4) == 48


@pytest.mark.parametrize('name', [pytest.param('a', marks=pytest.mark.slow), 'd'])
def test_growing_run_resumes_mid_fade_exactly(name, tmp_path):
  from sg2jax.train.loop import train_and_evaluate
  straight = state_leaves(train_and_evaluate(config_for(name), tmp_path / 'straight'))
  # 21 steps: 8 at 8x8 and 13 at 16x16 (lod 0.375, one step into its group of 4).
  stopped = train_and_evaluate(config_for(name, total_kimg=0.232), tmp_path / 'resumed')
  assert int(stopped.step) == 21 and int(stopped.nimg) == 232
  resumed = state_leaves(train_and_evaluate(config_for(name), tmp_path / 'resumed'))
  for key in straight:
    np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
  assert int(straight['step']) == 48
  assert all(np.isfinite(v).all() for v in straight.values())
  networks = load_networks(tmp_path / 'straight')
  assert networks['G_ema'].config['class'] == ('StyleGenerator' if name == 'a'
                                               else 'ProgressiveGenerator')


def test_a_fade_in_does_not_recompile():
  """lod is a traced argument: every phase traces once for the whole fade at one resolution."""
  import jax.numpy as jnp
  from sg2jax.sharding import global_batch, replicated
  from sg2jax.train.state import init_state, reset_optimizers
  from sg2jax.train.step import TrainStep
  exp = build(config_for('d'))
  phase = exp.schedule.at(128)  # the first group of the 16x16 fade-in (lod 0.75)
  assert (phase.resolution, phase.lod) == (16, 0.75)
  train_step = TrainStep(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx,
                         exp.step_config(phase), exp.mesh)
  state = jax.jit(lambda: reset_optimizers(
      init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx, 0), exp.g_tx, exp.d_tx,
      phase.g_lr, phase.d_lr), out_shardings=replicated(exp.mesh))()
  batch = global_batch(exp.data.next_batch(phase.batch_size), exp.mesh)
  for step, lod in enumerate((0.75, 0.75, 0.625, 0.625, 0.5)):
    state, metrics = train_step(state, batch, step * 4, lod)  # every phase runs at step % 4 == 0
  assert dict(train_step.traces) == {name: 1 for name in ('g_main', 'g_reg', 'd_main', 'd_reg',
                                                          'ema')}
  assert np.isfinite(float(metrics['Loss/G/loss']))
