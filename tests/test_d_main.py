"""D main takes its gradient one term at a time, the fakes' and then the reals' (docs/TPU.md: so
that a compiler does not keep both passes' activations at once); their sum is the gradient of
the phase's whole loss."""

import jax
import numpy as np
import optax
import pytest

from benchmarks.training_setup import build_phase_bench
from sg2jax.sharding import make_mesh
from sg2jax.train import step
from tiny_experiment import tiny


@pytest.mark.parametrize('config_keys', [{}, {'d_reg_interval': None}],
                         ids=['lazy-r1', 'r1-in-d-main'])
def test_d_main_gradient_is_the_gradient_of_the_whole_loss(config_keys):
  bench = build_phase_bench(tiny(**config_keys), 8, mesh=make_mesh(jax.devices()[:1]))
  models, cfg = bench.exp.models, bench.train_step.cfg
  assert (cfg.d_reg_interval is None) == ('d_reg_interval' in config_keys)

  @jax.jit
  def gradients(state, batch, lod):
    fake_loss, real_loss, real, _ = step.d_main_losses(models, cfg, state, batch, lod)
    params = state.d['params']
    (metrics, _), grads = step.d_main_gradient(fake_loss, real_loss, params, real)
    whole = lambda p: fake_loss(p) + real_loss(p, real)[0]
    return metrics, grads, jax.value_and_grad(whole)(params)

  with jax.set_mesh(bench.train_step.mesh):
    metrics, grads, (loss, reference) = gradients(bench.state, bench.batch, bench.lod)
    jaxpr = str(jax.make_jaxpr(bench.train_step.phases['d_main'])(bench.state, bench.batch,
                                                                   bench.lod))
  assert 'optimization_barrier' in jaxpr
  flat = jax.tree_util.tree_leaves_with_path(reference)
  assert len(flat) == len(jax.tree.leaves(grads)) > 4
  for (path, want), got in zip(flat, jax.tree.leaves(grads)):
    assert np.abs(want).max() > 0, jax.tree_util.keystr(path)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))
  if 'd_reg_interval' in config_keys:  # the metric is the logistic loss; R1 is reported apart
    assert metrics['Loss/r1_penalty'] > 0 and metrics['Loss/D/loss'] < loss
  else:
    np.testing.assert_allclose(metrics['Loss/D/loss'], loss, rtol=1e-6)

  # The phase itself reports the norm of this gradient.
  state = jax.tree.map(jax.numpy.copy, bench.state)
  fn = bench.train_step.executable('d_main', state, bench.batch, bench.lod)
  _, phase_metrics = fn(state, bench.batch, bench.lod)
  np.testing.assert_allclose(phase_metrics['Grad/D/norm'], optax.tree.norm(reference),
                             rtol=1e-5)
