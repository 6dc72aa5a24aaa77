"""Training configs A and D (tiny) through the progressive-growing schedule: across the 16x16
fade-in, with Adam resets, per-resolution batches and exact resume in the middle of the fade."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import growing_experiment
from sg2jax.checkpoint import load_networks
from sg2jax.train.build import build
from sg2jax.train.loop import count_steps
from test_train import state_leaves


def config_for(name, total_kimg=None):
  config = growing_experiment.get_config(name)
  if total_kimg is not None:
    config.total_kimg = total_kimg
  return config


def test_the_tiny_schedule_fades_in_16x16():
  exp = build(config_for('d'))
  lods, nimg, step = [], 0, 0
  while nimg < exp.hyper.total_nimg:
    stage = exp.schedule.at(nimg)
    lods.append(stage.lod)
    nimg += 4 * stage.batch_size
    step += 4
  assert lods == pytest.approx([1.0, 1.0, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0, 0, 0, 0])
  assert step == count_steps(exp.schedule, exp.hyper.total_nimg, 4) == 48


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
  """lod is a traced argument: every phase traces once for the whole fade at one resolution
  (`chex.assert_max_traces` fails on a second trace)."""
  import functools

  import chex

  from sg2jax.sharding import batch_sharded, global_batch, replicated
  from sg2jax.train.state import init_state, reset_optimizers
  from sg2jax.train.step import due, phase_table
  exp = build(config_for('d'))
  stage = exp.schedule.at(128)  # the first group of the 16x16 fade-in (lod 0.75)
  assert (stage.resolution, stage.lod) == (16, 0.75)
  cfg = exp.step_config(stage)
  table = phase_table(cfg)
  sharding = replicated(exp.mesh)
  phases = {name: jax.jit(functools.partial(chex.assert_max_traces(phase, n=1), exp.models, cfg),
                          in_shardings=(sharding, batch_sharded(exp.mesh), sharding),
                          out_shardings=(sharding, sharding), donate_argnums=0)
            for name, phase, _ in table}
  state = jax.jit(lambda: reset_optimizers(
      init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx, 0), exp.g_tx, exp.d_tx,
      stage.g_lr, stage.d_lr), out_shardings=sharding)()
  batch = global_batch(exp.data.next_batch(stage.batch_size), exp.mesh)
  for step, lod in enumerate((0.75, 0.75, 0.625, 0.625, 0.5)):
    assert due(table, step * 4) == list(phases)  # every phase runs at step % 4 == 0
    for name in phases:
      state, metrics = phases[name](state, batch, jnp.float32(lod))
      if name == 'g_main':
        assert np.isfinite(float(metrics['Loss/G/loss']))
