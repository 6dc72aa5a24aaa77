"""Training: derived numbers, the phase schedule, sharding equivalence (1 vs 4 devices vs 2
processes), exact resume, preemption, crash safety of checkpoints, and clear errors."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tiny_experiment import kimg, tiny
from sg2jax.checkpoint import TrainCheckpoints, load_networks
from sg2jax.networks.weights import flatten_variables
from sg2jax.sharding import global_batch, make_mesh, replicated
from sg2jax.train.build import build, derived_hyperparameters
from sg2jax.train.loop import train_and_evaluate
from sg2jax.train.state import init_state
from sg2jax.train.optimizers import all_finite, nan_to_num_gradients, skip_nonfinite
from sg2jax.train.step import StepConfig, TrainStep, due, phase_table

TESTS = Path(__file__).parent


def state_leaves(state) -> dict:
  return {k: np.asarray(v) for k, v in flatten_variables(jax.device_get(
      {'g': state.g, 'g_ema': state.g_ema, 'd': state.d, 'pl_mean': state.pl_mean,
       'step': state.step})).items()}


def test_derived_hyperparameters_follow_the_paper():
  """REFERENCE.md §2.4: G (I=4) lr 0.0016, beta2 0.991992; D (I=16) lr 0.00188235, beta2 0.990585;
  REFERENCE.md §2.7: EMA beta 0.997784 at batch 32."""
  from experiments import base
  hyper = derived_hyperparameters(base.get_config(), 8)
  assert hyper.g_lr == pytest.approx(0.0016)
  assert hyper.g_beta2 == pytest.approx(0.991992, abs=1e-6)
  assert hyper.d_lr == pytest.approx(0.00188235, abs=1e-8)
  assert hyper.d_beta2 == pytest.approx(0.990585, abs=1e-6)
  assert hyper.g_beta1 == hyper.d_beta1 == 0
  assert hyper.ema_beta == pytest.approx(0.997784, abs=1e-6)
  assert hyper.pl_batch_size == 16 and hyper.batch_per_device == 4
  assert hyper.total_steps == 25000 * 1000 // 32
  config = base.get_config()
  config.d_reg_interval = None  # R1 in every D step: no adjustment (configs A/B)
  assert derived_hyperparameters(config, 8).d_lr == 0.002


def test_lazy_regularization_schedule():
  cfg = StepConfig(batch_size=32, pl_batch_shrink=2, batch_gpu=4, style_mixing_prob=0.9,
                   r1_gamma=10, pl_weight=2, pl_decay=0.01, g_reg_interval=4,
                   d_reg_interval=16, ema_kimg=10, ema_rampup=None)
  table = phase_table(cfg)
  runs = {name: [s for s in range(33) if name in due(table, s)] for name in ('g_reg', 'd_reg')}
  assert runs == {'g_reg': list(range(0, 33, 4)), 'd_reg': [0, 16, 32]}
  assert due(table, 5) == ['g_main', 'd_main', 'ema']
  assert due(table, 0) == ['g_main', 'g_reg', 'd_main', 'd_reg', 'ema']


def test_non_finite_gradients():
  params = {'w': jnp.ones(3)}
  bad = {'w': jnp.array([1.0, jnp.nan, jnp.inf])}

  def apply(tx):
    opt = tx.init(params)
    updates, new_opt = tx.update(bad, opt, params)
    return optax.apply_updates(params, updates), new_opt

  kept, kept_opt = apply(skip_nonfinite(optax.adam(0.1)))
  finite = all_finite(bad)
  assert not bool(finite)
  np.testing.assert_array_equal(kept['w'], params['w'])
  assert int(kept_opt[0].count) == 0
  moved, _ = apply(nan_to_num_gradients(optax.adam(0.1)))
  assert np.isfinite(np.asarray(moved['w'])).all() and not np.array_equal(moved['w'], params['w'])


def one_minibatch(mesh):
  exp = build(tiny(), mesh)
  state = jax.jit(lambda: init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx,
                                     exp.loop.seed), out_shardings=replicated(mesh))()
  stage = exp.schedule.at(0)
  step = TrainStep(exp.models, exp.step_config(stage), mesh)
  state, metrics = step(state, global_batch(exp.data.next_batch(stage.batch_size), mesh), 0)
  return state_leaves(state), jax.device_get(metrics)


@pytest.fixture(scope='module')
def four_device_step():
  assert jax.device_count() == 4
  return one_minibatch(make_mesh())


def assert_states_close(a: dict, b: dict, what: str):
  assert set(a) == set(b)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=2e-6, err_msg=f'{what}: {key}')


def test_one_step_on_1_device_equals_4_devices(four_device_step):
  """Every phase of the first minibatch (G main, PL, D main, R1, EMA), sharded over 4 devices,
  matches 1 device: the batch split and the minibatch-stddev groups do not change the math."""
  one, metrics_one = one_minibatch(make_mesh(jax.devices()[:1]))
  four, metrics_four = four_device_step
  assert_states_close(one, four, '1 vs 4 devices')
  for key in metrics_one:
    np.testing.assert_allclose(metrics_one[key], metrics_four[key], rtol=1e-4, err_msg=key)
  assert set(metrics_one) >= {'Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/pl_penalty'}


def test_every_phase_splits_its_work_over_the_devices():
  """Each device does a quarter of a phase's arithmetic on 4 devices (XLA's flop count of the
  per-device program equals one device's with a quarter of the batch): fakes and path-length
  latents are drawn split over the devices, not computed in full on every one."""
  from benchmarks.training_setup import build_phase_bench
  flops = {}
  for devices, batch in ((4, 8), (1, 2)):
    bench = build_phase_bench(tiny(batch_size=batch, batch_gpu=2), 8,
                              mesh=make_mesh(jax.devices()[:devices]))
    flops[devices] = {name: bench.flops(name) for name in ('g_main', 'g_reg', 'd_main', 'd_reg')}
  for name, one in flops[1].items():
    assert flops[4][name] == pytest.approx(one, rel=0.1), name


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(four_device_step, tmp_path):
  """2 processes x 2 devices joined by jax.distributed (gloo) == 1 process x 4 devices."""
  port, out = free_port(), tmp_path / 'state.npz'
  procs = [subprocess.Popen([sys.executable, str(TESTS / 'multiprocess_step.py'), str(port),
                             str(i), str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  with np.load(out) as f:
    two = dict(f)
  four = {k: v for k, v in four_device_step[0].items() if k != 'step'}
  assert_states_close(two, four, '2 processes vs 1')


def test_resume_is_exact_and_workdir_is_usable(tmp_path):
  """5 steps straight == 2 steps, a new process-like start, and 3 more (bit-exact)."""
  straight = state_leaves(train_and_evaluate(tiny(total_kimg=kimg(5)), tmp_path / 'a'))
  train_and_evaluate(tiny(total_kimg=kimg(2)), tmp_path / 'b')
  assert TrainCheckpoints(tmp_path / 'b').latest_step() == 2
  resumed = state_leaves(train_and_evaluate(tiny(total_kimg=kimg(5)), tmp_path / 'b'))
  assert set(straight) == set(resumed)
  for key in straight:
    np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
  assert int(straight['step']) == 5

  workdir = tmp_path / 'a'
  assert (workdir / 'config.json').is_file()
  assert list(workdir.glob('events.out.tfevents.*'))
  assert (workdir / 'samples' / 'reals.png').is_file()
  assert sorted(p.name for p in (workdir / 'samples').glob('fakes*.png'))[-1] == 'fakes0000005.png'
  networks = load_networks(workdir)  # tools accept a workdir
  np.testing.assert_array_equal(
      networks['G_ema'].variables['params']['synthesis']['b8']['conv1']['weight'],
      straight['g_ema/params/synthesis/b8/conv1/weight'])
  from sg2jax import generate
  assert generate.main(['--network', str(workdir), '--seeds', '0-1', '--outdir',
                        str(tmp_path / 'images')]) == 0
  assert (tmp_path / 'images' / 'seed0001.png').is_file()


def test_a_workdir_trained_with_other_networks_is_refused(tmp_path):
  train_and_evaluate(tiny(total_kimg=kimg(1)), tmp_path)
  with pytest.raises(ValueError, match='trained with other networks than this config builds'):
    train_and_evaluate(tiny(total_kimg=kimg(2), **{'G.channel_max': 8}), tmp_path)


def start_training(workdir: Path, *overrides: str) -> tuple[subprocess.Popen, Path]:
  log = workdir.parent / f'{workdir.name}.log'
  args = [sys.executable, '-m', 'sg2jax.main', '--config', str(TESTS / 'tiny_experiment.py'),
          '--workdir', str(workdir), *overrides]
  proc = subprocess.Popen(args, stdout=open(log, 'w'), stderr=subprocess.STDOUT)
  return proc, log


def wait_for(predicate, proc, log, timeout=300):
  start = time.time()
  while not predicate():
    assert proc.poll() is None, Path(log).read_text()[-3000:]
    assert time.time() - start < timeout, 'timed out'
    time.sleep(0.005)


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
  workdir = tmp_path / 'run'
  proc, log = start_training(workdir, '--config.total_kimg=100', '--config.snapshot_ticks=100000')
  wait_for(lambda: 'tick 2 ' in log.read_text(), proc, log)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()[-3000:]  # not finished
  assert 'stop requested' in log.read_text()
  stopped_at = TrainCheckpoints(workdir).latest_step()
  assert stopped_at is not None and 4 <= stopped_at < 12500
  proc, log = start_training(workdir, f'--config.total_kimg={kimg(stopped_at + 3)}')
  assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
  assert f'resumed from step {stopped_at}' in log.read_text()
  assert TrainCheckpoints(workdir).latest_step() == stopped_at + 3


def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path):
  workdir = tmp_path / 'run'
  checkpoints = workdir / 'checkpoints'
  proc, log = start_training(workdir, '--config.total_kimg=100')

  def saving_after_a_finished_one():
    if not checkpoints.is_dir():
      return False
    names = [p.name for p in checkpoints.iterdir()]
    return any(n.isdigit() for n in names) and any('tmp' in n for n in names)

  wait_for(saving_after_a_finished_one, proc, log)
  proc.kill()
  proc.wait(timeout=60)
  names = [p.name for p in checkpoints.iterdir()]
  assert any('tmp' in n for n in names), f'not killed during a save: {names}'
  latest = TrainCheckpoints(workdir).latest_step()
  assert latest is not None and str(latest) in names
  networks = load_networks(workdir)  # the previous checkpoint loads
  assert set(networks) == {'G', 'D', 'G_ema'}
  state = train_and_evaluate(tiny(total_kimg=kimg(latest + 2)), workdir)  # and training resumes
  assert int(state.step) == latest + 2


def test_unknown_config_key_is_named(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'sg2jax.main', '--config',
                        str(TESTS / 'tiny_experiment.py'), '--workdir', str(tmp_path),
                        '--config.totl_kimg=1'], capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1] == ('error: bad --config override: totl_kimg Did you '
                                                 'mean "total_kimg" instead of "totl_kimg"?')


def test_an_out_of_range_value_stops_the_run_in_one_line_before_the_workdir_is_used(tmp_path):
  workdir = tmp_path / 'run'
  out = subprocess.run([sys.executable, '-m', 'sg2jax.main', '--config', 'experiments/demo.py',
                        '--workdir', str(workdir), '--config.total_kimg=-1'],
                       cwd=TESTS.parent, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == ('error: config.total_kimg=-1: must be >= 0; pass '
                                                 'e.g. --config.total_kimg=25000')
  assert 'Traceback' not in out.stderr
  assert not (workdir / 'checkpoints').exists() and not (workdir / 'config.json').exists()


def test_path_length_batch_is_shrunk_per_device_with_at_least_one_image():
  """The official rule per device: `max(1, per-device batch // pl_batch_shrink)` images on each;
  with one image per device the path-length batch is not shrunk, and G reg runs."""
  from benchmarks.training_setup import build_phase_bench
  from sg2jax.train.step import path_length_batch
  assert path_length_batch(32, 2, 8) == 16  # 4 per device -> 2
  assert path_length_batch(16, 2, 1) == 8
  assert path_length_batch(8, 2, 8) == 8  # 1 per device -> 1
  assert path_length_batch(12, 2, 4) == 4  # 3 per device -> 1
  assert path_length_batch(16, 4, 2) == 4
  bench = build_phase_bench(tiny(batch_size=4, batch_gpu=1), 8, mesh=make_mesh())
  assert bench.exp.hyper.pl_batch_size == bench.train_step.cfg.pl_batch_size == 4
  lowered = bench.train_step.phases['g_reg'].lower(bench.state, bench.batch, bench.lod)
  assert 'f32[1,8,8,3]' in lowered.compile().as_text()  # each device: one image's y
  bench.run('g_reg')
  assert int(bench.state.step) == 0 and np.isfinite(float(bench.state.pl_mean))
  assert float(bench.state.pl_mean) > 0


def test_the_experiment_is_built_once_with_each_check_run_once(monkeypatch):
  """`build` makes one frozen `Experiment`; it checks the schedule's batches and resolves the
  augmentation preset once per run."""
  import dataclasses
  from sg2jax.augment import AugmentSpec
  from sg2jax.train import build as build_module
  calls = {'check_batches': 0, 'from_preset': 0}
  check_batches, from_preset = build_module.check_batches, AugmentSpec.from_preset.__func__

  def counted(name, function):
    def call(*args):
      calls[name] += 1
      return function(*args)
    return call

  monkeypatch.setattr(build_module, 'check_batches', counted('check_batches', check_batches))
  monkeypatch.setattr(AugmentSpec, 'from_preset', classmethod(counted('from_preset',
                                                                      from_preset)))
  exp = build(tiny(augment='ada', augment_pipe='bg'), make_mesh())
  assert calls == {'check_batches': 1, 'from_preset': 1}
  assert exp.augment.spec == from_preset(AugmentSpec, 'bg')
  assert exp.data is not None and exp.loop.minibatch_repeats == 1 and exp.metrics.names == ()
  with pytest.raises(dataclasses.FrozenInstanceError):
    exp.data = None


def test_batch_not_divisible_by_devices():
  with pytest.raises(ValueError, match=r'batch_size 6 is not divisible by the 4 devices; use a '
                                       r'multiple of 4'):
    build(tiny(batch_size=6, batch_gpu=2), make_mesh())


@pytest.mark.slow
def test_demo_learns(tmp_path):
  """The README's demo command for 12 kimg: G_ema's samples move towards the data (mean distance
  of each fake to its nearest real image falls by a third).

  Runs `python -m sg2jax.main` in a subprocess as users do: one CPU device with XLA's
  optimizations on. (In this process, conftest's 4 forced devices share 2 cores at optimization
  level 0; a step of the demo's network then keeps one device thread busy long enough for the
  others to hit XLA:CPU's 40 s all-reduce rendezvous timeout, which aborts the process.)
  """
  from sg2jax.checkpoint import load_training_networks
  from sg2jax.data.sources import ShapesSource
  from sg2jax.networks.weights import build_network
  reals = np.stack([ShapesSource(512, 32)[i]['image'] for i in range(512)]).astype(np.float32)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}

  def train(total_kimg):
    out = subprocess.run([sys.executable, '-m', 'sg2jax.main', '--config',
                          str(Path(__file__).parent.parent / 'experiments' / 'demo.py'),
                          '--workdir', str(tmp_path), f'--config.total_kimg={total_kimg}'],
                         capture_output=True, text=True, timeout=1500, env=env)
    assert out.returncode == 0, out.stderr[-3000:]

  def distance():
    net = load_training_networks(tmp_path)['G_ema']
    g = build_network(net.config)
    z = jax.random.normal(jax.random.key(7), (64, g.z_dim))
    fakes = (np.asarray(g.apply(net.variables, z, noise_mode='const')) + 1) * 127.5
    d = ((fakes[:, None] - reals[None]) ** 2).mean(axis=(2, 3, 4))
    return float(np.sqrt(d.min(axis=1)).mean())

  train(0.016)
  before = distance()
  train(12)
  after = distance()
  assert after < before * 2 / 3, (before, after)


def test_config_metrics_become_a_snapshot_hook(tmp_path):
  """config.metrics plugs sg2jax.eval in; names and weight files are checked before training."""
  from sg2jax.main import metric_hooks
  with pytest.raises(ValueError, match="unknown metric 'fid51k'"):
    metric_hooks(tiny(metrics=('fid51k',)), tmp_path)
  with pytest.raises(FileNotFoundError, match='pytorch-fid'):
    metric_hooks(tiny(metrics=('fid50k_full',), metrics_inception=str(tmp_path / 'x.pth')),
                 tmp_path)
  assert not (tmp_path / 'checkpoints').exists()
