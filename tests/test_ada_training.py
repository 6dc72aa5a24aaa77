"""ADA in training (REFERENCE.md §7.6-§7.7): the adaptive p, augmentation at p = 0, R1 through the
augmentation, fixed p, exact resume with the ADA state, and old checkpoints without one.

Every run is `tests/tiny_experiment.py` with `augment` set; the step-level tests share one
compiled `TrainStep` (`ada_run`) and set p in the state.
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_experiment import BATCH, kimg, tiny
from sg2jax.augment import AugmentSpec, augment_images
from sg2jax.sharding import global_batch, make_mesh, replicated
from sg2jax.train import step as train_step
from sg2jax.train.build import build
from sg2jax.train.config import load_run_config
from sg2jax.train.loop import train_and_evaluate
from sg2jax.train.state import AugmentedGANState, GANState, init_state
from sg2jax.train.step import TrainStep

DATA = Path(__file__).parent / 'data'


def all_leaves(state) -> dict:
  """Every leaf of the state (networks, optimizer states, ADA state) by path, e.g. '.augment.p'."""
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


class Run:
  """An experiment's first state (a new one on each call of `first_state`), the TrainStep of its
  stage and its batches."""

  def __init__(self, config, mesh=None):
    self.mesh = make_mesh() if mesh is None else mesh
    self.exp = exp = build(config, self.mesh)
    augment_p = None if exp.augment is None else exp.augment.initial_p
    self._init = jax.jit(lambda: init_state(exp.generator, exp.discriminator, exp.g_tx,
                                            exp.d_tx, exp.loop.seed, augment_p=augment_p),
                         out_shardings=replicated(self.mesh))
    self.stage = exp.schedule.at(0)
    self.step = TrainStep(exp.models, exp.step_config(self.stage), self.mesh)

  def first_state(self, p=None):
    state = self._init()
    if p is not None:
      p = jax.device_put(np.float32(p), replicated(self.mesh))
      state = state.replace(augment=state.augment.replace(p=p))
    return state

  def next_batch(self):
    return global_batch(self.exp.data.next_batch(self.stage.batch_size), self.mesh)


INTERVAL, ADA_KIMG, TARGET = 2, 0.16, 0.6


@pytest.fixture(scope='module')
def ada_run():
  """The tiny run with adaptive p (every 2 minibatches, by 0.1), compiled once for the module."""
  return Run(tiny(augment='ada', augment_p=0.15, ada_interval=INTERVAL, ada_kimg=ADA_KIMG))


def with_d_out_bias(state, value: float, mesh):
  """D's last bias set to `value`: every logit, real or fake, then has that sign."""
  params = jax.device_get(state.d['params'])
  params['b4']['out']['bias'] = np.full_like(params['b4']['out']['bias'], value)
  d = {**state.d, 'params': jax.device_put(params, replicated(mesh))}
  return state.replace(d=d)


def test_adaptive_p_follows_the_formula(ada_run):
  """p after every minibatch equals the host's `max(0, p + sign(r_t - target) * B * I /
  (ada_kimg * 1000))` every I minibatches, from the reported `r_t`; D's signs are forced with
  its output bias (+100 for 4 minibatches: p rises, then -100: p falls and stops at 0). The
  accumulators count D main's and D reg's reals; a changing p compiles nothing."""
  interval, target, mesh, step = INTERVAL, TARGET, ada_run.mesh, ada_run.step
  state = ada_run.first_state()
  assert [name for name, _, _ in step.table][-1] == 'ada'
  delta = np.float32(BATCH * interval / (ADA_KIMG * 1000))  # 0.1
  compiles = []
  listener = lambda event, duration, **kw: compiles.append(event) if (
      event == '/jax/core/compile/backend_compile_duration') else None
  p_host, counted, ps = np.float32(0.15), 0, []
  for s in range(12):
    if s in (0, 4):
      state = with_d_out_bias(state, 100.0 if s == 0 else -100.0, mesh)
    if s == 1:
      jax.monitoring.register_event_duration_secs_listener(listener)
    state, metrics = step(state, ada_run.next_batch(), s)
    rt = float(metrics['Augment/rt'])
    counted += BATCH * (1 + (s % 4 == 0))  # D main's reals, and D reg's every 4 minibatches
    assert rt == (1.0 if s < 4 else -1.0), (s, rt)
    if (s + 1) % interval == 0:
      p_host = np.maximum(p_host + np.float32(np.sign(rt - target)) * delta, np.float32(0))
      counted = 0
    augment = jax.device_get(state.augment)
    assert int(augment.count) == counted and int(augment.signs) == counted * int(rt), s
    np.testing.assert_allclose(augment.p, p_host, rtol=0, atol=1e-7, err_msg=f'step {s}')
    ps.append(float(augment.p))
  jax.monitoring.unregister_event_duration_listener(listener)
  np.testing.assert_allclose(ps[1::2], [0.25, 0.35, 0.25, 0.15, 0.05, 0.0], atol=1e-6)
  assert compiles == [], 'a new p recompiled a phase'


def test_ada_at_p_0_changes_nothing(ada_run):
  """augment='ada' with p = 0 (no adjustment within the first minibatch) gives the same first
  minibatch as augment='none': the pipeline is then the identity up to float error."""
  plain_run = Run(tiny(), ada_run.mesh)
  batch = plain_run.next_batch()
  results = []
  for run, state in ((plain_run, plain_run.first_state()), (ada_run, ada_run.first_state(p=0))):
    state, metrics = run.step(state, batch, 0)
    results.append((all_leaves(state), jax.device_get(metrics)))
  (plain, plain_metrics), (ada, ada_metrics) = results
  assert set(ada) - set(plain) == {'.augment.p', '.augment.signs', '.augment.count'}
  # At p = 0 the pipeline is the identity within ~3e-6 on [-1, 1] images at 8x8; after one
  # minibatch the states differ by at most 7e-7 and the metrics by 1e-6 relative (measured).
  for key in plain_metrics:
    np.testing.assert_allclose(ada_metrics[key], plain_metrics[key], rtol=1e-5, atol=1e-7,
                               err_msg=key)
  for key in plain:
    np.testing.assert_allclose(ada[key], plain[key], rtol=1e-5, atol=1e-5, err_msg=key)
  assert float(ada['.augment.p']) == 0.0


def test_r1_is_the_gradient_wrt_the_reals_before_augmentation(ada_run):
  """D reg's R1 penalty (p = 1) equals `|d sum D(A(x)) / dx|^2` written by hand with the phase's
  augmentation key, and not the gradient at the augmented images `A(x)`."""
  exp, step, state = ada_run.exp, ada_run.step, ada_run.first_state(p=1)
  batch = ada_run.next_batch()
  cfg = step.cfg
  key = train_step._augment_key(train_step._phase_key(state, 'd_reg'))
  d_vars, p = jax.device_get(state.d), np.float32(1.0)
  real = np.asarray(batch['image'], np.float32) / 127.5 - 1
  discriminator = exp.discriminator

  @jax.jit
  def penalties(real):
    logits = lambda x: jnp.sum(discriminator.apply(d_vars, x, None, cfg.batch_gpu))
    augmented = augment_images(key, real, p, AugmentSpec.bgc())
    before = jax.grad(lambda x: logits(augment_images(key, x, p, AugmentSpec.bgc())))(real)
    at_augmented = jax.grad(logits)(augmented)
    return (jnp.sum(before ** 2, axis=(1, 2, 3)).mean(),
            jnp.sum(at_augmented ** 2, axis=(1, 2, 3)).mean())

  want, wrong = (float(v) for v in penalties(real))
  _, metrics = step.executable('d_reg', state, batch, jnp.float32(0))(state, batch,
                                                                       jnp.float32(0))
  got = float(metrics['Loss/r1_penalty'])
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert abs(wrong - want) > 0.05 * want, (want, wrong)


@pytest.mark.slow
def test_resume_with_ada_is_exact(tmp_path):
  """6 minibatches straight == 3, a restart, and 3 more: p and the accumulators (mid-interval at
  the restart) come back from the checkpoint."""
  config = lambda steps: tiny(augment='ada', augment_p=0.5, ada_interval=2, ada_kimg=0.16,
                              total_kimg=kimg(steps))
  straight = train_and_evaluate(config(6), tmp_path / 'a')
  stopped = train_and_evaluate(config(3), tmp_path / 'b')
  assert int(stopped.augment.count) > 0  # the restart falls inside an interval
  resumed = train_and_evaluate(config(6), tmp_path / 'b')
  assert isinstance(resumed, AugmentedGANState)
  a, b = all_leaves(straight), all_leaves(resumed)
  assert set(a) == set(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert float(a['.augment.p']) != np.float32(0.5)  # p moved


def test_an_old_checkpoint_continues_with_a_fixed_p(tmp_path):
  """A run saved by sg2jax 0.1.0 (no ADA state, step 2) resumed with augment='fixed': the ADA
  state starts at augment_p with empty accumulators; p stays constant across the adjustment
  point after minibatch 3, where the accumulators restart; dropping augmentation again gives
  the plain state back."""
  workdir = tmp_path / 'run'
  shutil.copytree(DATA / 'old_format' / 'train_run_checkpoints', workdir / 'checkpoints')
  shutil.copy(DATA / 'old_format' / 'train_run_config.json', workdir / 'config.json')
  config = load_run_config(workdir)
  config.augment, config.augment_p, config.ada_interval = 'fixed', 0.25, 2
  config.total_kimg = kimg(5)
  state = train_and_evaluate(config, workdir)
  assert isinstance(state, AugmentedGANState) and int(state.step) == 5
  assert float(state.augment.p) == np.float32(0.25)
  assert int(state.augment.count) == 2 * BATCH  # minibatch 4's D main and D reg (reset at 4)
  config.augment, config.total_kimg = 'none', kimg(6)
  state = train_and_evaluate(config, workdir)
  assert type(state) is GANState and int(state.step) == 6


@pytest.mark.slow
def test_one_step_with_ada_on_1_device_equals_4_devices():
  """The augmented phases, sharded over 4 devices, match 1 device (per-sample draws do not
  depend on the sharding)."""
  results = []
  for mesh in (make_mesh(jax.devices()[:1]), make_mesh()):
    run = Run(tiny(augment='ada', augment_p=0.6), mesh)
    state, metrics = run.step(run.first_state(), run.next_batch(), 0)
    results.append((all_leaves(state), jax.device_get(metrics)))
  (one, metrics_one), (four, metrics_four) = results
  for key in one:
    np.testing.assert_allclose(one[key], four[key], rtol=2e-5, atol=2e-6, err_msg=key)
  for key in metrics_one:
    np.testing.assert_allclose(metrics_one[key], metrics_four[key], rtol=1e-4, err_msg=key)


def test_ada_presets_load():
  """experiments/ada.py: ADA's `--cfg` presets, with adaptive augmentation."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      'ada', Path(__file__).parent.parent / 'experiments' / 'ada.py')
  ada = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ada)
  paper256 = ada.get_config()
  assert (paper256.batch_size, paper256.batch_gpu, paper256.G.channel_base,
          paper256.D.mbstd_group_size, paper256.r1_gamma, paper256.ema_kimg,
          paper256.augment) == (64, 8, 16384, 8, 1.0, 20.0, 'ada')
  cifar = ada.get_config('cfg=cifar')
  assert (cifar.D.architecture, cifar.pl_weight, cifar.ema_rampup) == ('orig', 0.0, 0.05)
  with pytest.raises(ValueError, match='ada.py takes cfg=stylegan2.paper256'):
    ada.get_config('cfg=auto')
