"""The host loop: `train_and_evaluate(config, workdir)`.

Resumes by itself from the workdir's latest checkpoint that restores (a damaged one is moved
aside); saves every `snapshot_ticks` ticks and when asked to stop (SIGTERM, e.g. TPU preemption,
or Ctrl-C: then raises `Interrupted`); reports through clu (TensorBoard event files and log lines)
and writes a fixed-z sample grid every `image_snapshot_ticks` ticks. One run at a time trains a
workdir (`sg2jax.checkpoint.WorkdirLock`); `config.json` is written once the run is accepted.

`_train` is the loop; each minibatch is a sequence of named steps (`_enter_stage`, `_train_step`,
`_next_batch`, `_minibatch`) and so is the end of each tick (`_end_tick`: the sample grid,
`_save`, `_run_hooks`, the report). Each takes what it reads as arguments and returns what it
changes: the `_Position` (state, counters, stage) and the `_Tick`; `_Run` holds what stays the
same for the whole run.
"""

import contextlib
import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from sg2jax import storage
from sg2jax.checkpoint import TrainCheckpoints, WorkdirInUseError, workdir_lock
from sg2jax.data.pipeline import BadImageError
from sg2jax.images import make_grid, save_image, to_uint8
from sg2jax.sharding import global_batch, replicated
from sg2jax.train.build import Experiment, build
from sg2jax.train.config import CONFIG_FILE
from sg2jax.train.programs import sample_grid_function
from sg2jax.train.schedule import Stage, optimizer_reset_due
from sg2jax.train.state import (AugmentedGANState, GANState, checkpoint_layout,
                                continue_augment, init_state, reset_optimizers)
from sg2jax.train.step import TrainStep

# A hook runs at every snapshot: (experiment, state, step, kimg) -> scalars to report.
SnapshotHook = Callable[[Experiment, GANState, int, float], dict[str, float]]


class StopRequest:
  """Turns SIGTERM / SIGINT into a flag the loop checks between steps (then saves and exits)."""

  def __init__(self):
    self.signal: Optional[int] = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    del frame
    self.signal = signum

  def requested(self) -> bool:
    """True on every process if any process got a signal."""
    flag = self.signal is not None
    if jax.process_count() > 1:
      flag = bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
    return flag


class Interrupted(Exception):
  """Training stopped on a signal after saving a checkpoint; the same command resumes it.

  `exit_code` is 128 + the signal (143 for SIGTERM, 130 for SIGINT), what shells report for a
  process a signal ended, so a scheduler does not take a pre-empted run for a finished one.
  """

  def __init__(self, signum: int, step: int, workdir: Path):
    self.signal, self.step, self.exit_code = signum, step, 128 + signum
    super().__init__(f'stopped by {signal.Signals(signum).name} at step {step} after saving a '
                     f'checkpoint in {workdir}; run the same command again to resume')


@contextlib.contextmanager
def _exclusive(workdir: Path):
  """Holds the workdir's lock for the run (process 0 takes it; every process fails if another
  run holds it)."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lock(workdir).acquire()
    except WorkdirInUseError as e:
      error = e
  if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(
      np.int32(error is None)):
    error = error or WorkdirInUseError(f'{workdir} is being trained by another run (process 0 '
                                       f'could not lock it)')
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def _initial_state(exp: Experiment, checkpoints: TrainCheckpoints, state_sharding):
  """A fresh state, or the newest checkpoint's that restores (with the data position).

  Returns:
    (state, stage_nimg): the image count at which the current schedule stage began (None for a
    fresh run).
  """
  augment_p = None if exp.augment is None else exp.augment.initial_p
  make = lambda networks, augment_p: init_state(exp.generator, exp.discriminator, exp.g_tx,
                                                exp.d_tx, exp.loop.seed, networks, augment_p)
  if not checkpoints.all_steps():  # fine-tuning starts from exp.transfer (resume_from)
    return jax.jit(make, static_argnums=1, out_shardings=state_sharding)(exp.transfer,
                                                                         augment_p), None
  expected = _architectures(json.loads(json.dumps(exp.network_configs())))
  workdir = checkpoints.directory.parent

  def check_networks(meta: dict) -> None:
    if _architectures(meta['networks']) != expected:
      raise ValueError(f'the checkpoint in {checkpoints.directory} was trained with other '
                       f'networks than this config builds; use a new --workdir, or resume with '
                       f'the run\'s own config: python -m sg2jax.main --workdir {workdir} (to '
                       f'change settings: --config {workdir / CONFIG_FILE} --config.KEY=VALUE)')

  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=state_sharding),
      jax.eval_shape(make, exp.transfer, 0.0))  # with an AugmentState, whatever the config
  _, meta, state = checkpoints.restore_newest(
      lambda step, meta: checkpoints.restore(step, checkpoint_layout(abstract,
                                                                     meta.get('augment', False))),
      check_networks)
  state = continue_augment(state, augment_p, exp.augment is not None and exp.augment.adaptive,
                           state_sharding)
  exp.data.set_state(meta['data'])
  logging.info('resumed from step %d (%.1f kimg)', meta['step'], meta['kimg'])
  return state, meta.get('stage_nimg', meta.get('phase_nimg'))  # 'phase_nimg': checkpoints in sg2jax 0.1.0's format


def _architectures(configs: dict[str, dict]) -> dict[str, dict]:
  """Network configs without `fused_modconv`, which says how G computes, not what: a run saved
  while the form of the modulated convolutions was a config key resumes whatever it was."""
  return {name: {k: v for k, v in config.items() if k != 'fused_modconv'}
          for name, config in configs.items()}


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
  """Per key, the mean over the steps where the key was reported."""
  history = jax.device_get(history)
  keys = sorted({k for h in history for k in h})
  return {k: float(np.mean([h[k] for h in history if k in h])) for k in keys}


def count_steps(schedule, total_nimg: int, repeats: int) -> int:
  """Minibatches until `total_nimg` images, following the schedule as the loop does."""
  if not schedule.progressive:
    return -(-total_nimg // schedule.at(0).batch_size)
  steps = nimg = 0
  while nimg < total_nimg:
    batch = schedule.at(nimg).batch_size
    steps += repeats
    nimg += repeats * batch
  return steps


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       hooks: Sequence[SnapshotHook] = ()) -> GANState:
  """Trains (or resumes) the run described by `config` in `workdir`; returns the final state.

  `hooks` run at every snapshot (`sg2jax.main` adds the `config.metrics` one).

  Raises:
    Interrupted: SIGTERM or SIGINT stopped the run (after saving a checkpoint).
    WorkdirInUseError: another run is training `workdir`.
    BadImageError: with `config.data.strict`, a bad image (after saving a checkpoint).
    ValueError: the workdir's checkpoints are of other networks (or none restores).
  """
  workdir = storage.as_path(workdir)
  exp = build(config)
  with _exclusive(workdir):
    return _train(exp, config, workdir, hooks)


class _Position(NamedTuple):
  """Where training is: the state, its minibatch and image counts, the schedule stage (None
  before the first minibatch of a fresh run) and the image count the stage began at."""
  state: GANState
  step: int
  nimg: int
  stage: Optional[Stage]
  stage_nimg: Optional[int]


class _Tick(NamedTuple):
  """The tick in progress: its number once it ends, when and at which image count it began,
  and its minibatches' metrics."""
  index: int
  start_time: float
  start_nimg: int
  history: list[dict[str, jax.Array]]


class _Run(NamedTuple):
  """What stays the same while a run trains: where it saves and reports, and what it made once."""
  checkpoints: TrainCheckpoints
  writer: metric_writers.MetricWriter
  progress: periodic_actions.ReportProgress
  samples: '_SampleGrid'
  hooks: Sequence[SnapshotHook]
  config_json: str  # the config as saved in every checkpoint's metadata
  reset: Callable  # (state, g_lr, d_lr) -> state with fresh optimizers
  train_steps: dict  # StepConfig -> TrainStep: one compiled set per stage setting, as needed
  state_sharding: Any


def _train(exp: Experiment, config: ml_collections.ConfigDict, workdir: Path,
           hooks: Sequence[SnapshotHook]) -> GANState:
  """Trains from the workdir's newest checkpoint (or from the start) to `total_nimg`, a tick at
  a time (`_end_tick`), saving on a stop request and at the end."""
  settings = exp.loop
  logging.info('derived hyperparameters: %s', json.dumps(dataclasses.asdict(exp.hyper),
                                                         sort_keys=True))
  logging.info('G: %s', exp.generator)
  logging.info('D: %s', exp.discriminator)
  state_sharding = replicated(exp.mesh)
  checkpoints = TrainCheckpoints(workdir, keep=settings.keep_checkpoints)
  state, stage_nimg = _initial_state(exp, checkpoints, state_sharding)
  if jax.process_index() == 0:  # only now: a run refused above leaves its config.json as it was
    storage.write_text(workdir / CONFIG_FILE, config.to_json_best_effort(indent=2))
  position = _Position(state, int(state.step), int(state.nimg),
                       None if stage_nimg is None else exp.schedule.at(stage_nimg), stage_nimg)
  run = _start_run(exp, config, workdir, checkpoints, hooks, state_sharding, position.step)
  tick_nimg = int(settings.kimg_per_tick * 1000)
  tick = _Tick(position.nimg // tick_nimg if tick_nimg else 0, time.time(), position.nimg, [])
  last_saved, stopped = None, False
  with StopRequest() as stop:
    while position.nimg < settings.total_nimg:
      position = _enter_stage(exp, run, position)
      train_step = _train_step(exp, run, position.stage)
      batch = _next_batch(exp, run, position, last_saved)
      position, metrics = _minibatch(train_step, position, batch)
      tick.history.append(metrics)
      run.progress(position.step)
      if (position.nimg >= tick.start_nimg + tick_nimg
          or position.nimg >= settings.total_nimg):
        tick, saved = _end_tick(exp, run, position, tick)
        if saved:
          last_saved = position.step
      if stop.requested():
        logging.warning('stop requested (signal %s): saving step %d and exiting', stop.signal,
                        position.step)
        stopped = True
        break
    if last_saved != position.step:
      _save(exp, run, position)
    _finish(run)
  if stopped:
    raise Interrupted(stop.signal or signal.SIGTERM, position.step, workdir)
  return position.state


def _start_run(exp: Experiment, config: ml_collections.ConfigDict, workdir: Path,
               checkpoints: TrainCheckpoints, hooks: Sequence[SnapshotHook], state_sharding,
               step: int) -> _Run:
  """The run's writer, progress report and sample grid (hyperparameters and the reals' grid
  written when it starts at step 0), and its optimizer reset."""
  is_main = jax.process_index() == 0
  reset = jax.jit(lambda state, g_lr, d_lr: reset_optimizers(state, exp.g_tx, exp.d_tx, g_lr,
                                                              d_lr),
                  out_shardings=state_sharding, donate_argnums=0)
  writer = storage.metric_writer(workdir, just_logging=not is_main, asynchronous=True)
  if step == 0:
    writer.write_hparams(dataclasses.asdict(exp.hyper))
  settings = exp.loop
  progress = periodic_actions.ReportProgress(
      num_train_steps=count_steps(exp.schedule, settings.total_nimg, settings.minibatch_repeats),
      writer=writer, every_secs=30)
  samples = _SampleGrid(exp, workdir / 'samples', settings.grid_size, settings.seed)
  if step == 0 and is_main:
    samples.save_reals(exp.data)
  return _Run(checkpoints, writer, progress, samples, tuple(hooks),
              config.to_json_best_effort(), reset, {}, state_sharding)


def _enter_stage(exp: Experiment, run: _Run, position: _Position) -> _Position:
  """`position` in the schedule's stage for its image count, evaluated at the first minibatch
  and, when growing, every `minibatch_repeats` minibatches; the optimizers start afresh when
  the stage's level of detail asks for it (`optimizer_reset_due`)."""
  if position.stage is not None and not (
      exp.schedule.progressive and position.step % exp.loop.minibatch_repeats == 0):
    return position
  stage = exp.schedule.at(position.nimg)
  state = position.state
  if optimizer_reset_due(None if position.stage is None else position.stage.lod, stage.lod):
    state = run.reset(state, stage.g_lr, stage.d_lr)
  return position._replace(state=state, stage=stage, stage_nimg=position.nimg)


def _train_step(exp: Experiment, run: _Run, stage: Stage) -> TrainStep:
  """The phases for the stage's settings, made the first time a stage needs them."""
  step_config = exp.step_config(stage)
  if step_config not in run.train_steps:
    run.train_steps[step_config] = TrainStep(exp.models, step_config, exp.mesh,
                                             run.state_sharding)
  return run.train_steps[step_config]


def _next_batch(exp: Experiment, run: _Run, position: _Position, last_saved: Optional[int]):
  """The next minibatch of reals, sharded over the mesh. A bad image with `config.data.strict`
  saves the step (unless it is saved already) and stops the run."""
  try:
    return global_batch(exp.data.next_batch(position.stage.batch_size), exp.mesh)
  except BadImageError as e:  # keep everything trained so far
    if last_saved != position.step:
      _save(exp, run, position)
    run.checkpoints.close()
    raise BadImageError(f'{e}; saved step {position.step}: fix or remove the image, then run '
                        f'again to resume') from None


def _minibatch(train_step: TrainStep, position: _Position,
               batch) -> tuple[_Position, dict[str, jax.Array]]:
  """One minibatch: the phases due at this step; the position after it and its metrics."""
  stage = position.stage
  state, metrics = train_step(position.state, batch, position.step, stage.lod)
  metrics = {**metrics, 'Progress/lod': stage.lod, 'Progress/resolution': stage.resolution}
  return position._replace(state=state, step=position.step + 1,
                           nimg=position.nimg + stage.batch_size), metrics


def _end_tick(exp: Experiment, run: _Run, position: _Position,
              tick: _Tick) -> tuple[_Tick, bool]:
  """Ends a tick: its scalars, the sample grid every `image_snapshot_ticks`, a snapshot (save
  and hooks) every `snapshot_ticks`, both at the end of training; the next tick and whether
  this one saved."""
  settings = exp.loop
  index, kimg = tick.index + 1, position.nimg / 1000
  elapsed = time.time() - tick.start_time
  tick_kimg = (position.nimg - tick.start_nimg) / 1000
  finished = position.nimg >= settings.total_nimg
  scalars = _mean_metrics(tick.history)
  scalars.update({
      'Progress/kimg': kimg, 'Progress/tick': index, 'Timing/sec_per_tick': elapsed,
      'Timing/sec_per_kimg': elapsed / max(tick_kimg, 1e-9),
      'Timing/images_per_sec': tick_kimg * 1000 / max(elapsed, 1e-9),
      'Data/skipped_images': exp.data.skipped_images})
  if index % settings.image_snapshot_ticks == 0 or finished:
    run.samples.write(position.state, position.step, run.writer, position.stage)
  snapshot = index % settings.snapshot_ticks == 0 or finished
  if snapshot:
    _save(exp, run, position)
    scalars.update(_run_hooks(exp, run, position, kimg))
  run.writer.write_scalars(position.step, scalars)
  logging.info('tick %d kimg %.1f lod %.2f sec/tick %.1f sec/kimg %.2f G %.3f D %.3f', index,
               kimg, position.stage.lod, elapsed, scalars['Timing/sec_per_kimg'],
               scalars.get('Loss/G/loss', np.nan), scalars.get('Loss/D/loss', np.nan))
  return _Tick(index, time.time(), position.nimg, []), snapshot


def _run_hooks(exp: Experiment, run: _Run, position: _Position, kimg: float) -> dict[str, float]:
  """The snapshot hooks' scalars (the metrics), in the order the hooks were given."""
  scalars = {}
  for hook in run.hooks:
    scalars.update(hook(exp, position.state, position.step, kimg))
  return scalars


def _save(exp: Experiment, run: _Run, position: _Position) -> None:
  """A checkpoint of `position`: the state, and what resuming needs to go on from it."""
  meta = {'step': position.step, 'kimg': position.nimg / 1000,
          'stage_nimg': position.stage_nimg,
          'augment': isinstance(position.state, AugmentedGANState),  # has an AugmentState
          'networks': exp.network_configs(), 'data': exp.data.get_state(),
          'config': json.loads(run.config_json)}
  run.checkpoints.save(position.step, position.state, meta)


def _finish(run: _Run) -> None:
  """Waits for the last checkpoint and report to be written."""
  run.checkpoints.close()
  run.writer.flush()
  run.writer.close()


class _SampleGrid:
  """Images of G_ema for fixed latents (const noise, no truncation), as PNG and TensorBoard;
  with progressive growing, at the current level of detail."""

  def __init__(self, exp: Experiment, directory: Path, count: int, seed: int):
    self.directory = directory
    self.function = sample_grid_function(exp, count, seed)
    self.z, self.c = self.function.latents()
    self.count = count

  def save_reals(self, source) -> None:
    self.directory.mkdir(parents=True, exist_ok=True)
    images = np.stack([source[i]['image'] for i in range(min(self.count, len(source)))])
    save_image(self.directory / 'reals.png', make_grid(images))

  def write(self, state: GANState, step: int, writer, stage) -> None:
    images = jax.device_get(self.function.jitted(state.g_ema, self.z, self.c,
                                                 jnp.float32(stage.lod), stage.resolution))
    grid = make_grid(to_uint8(images))
    if jax.process_index() == 0:
      self.directory.mkdir(parents=True, exist_ok=True)
      save_image(self.directory / f'fakes{step:07d}.png', grid)
    writer.write_images(step, {'samples': grid[None]})
