"""The host loop: `train_and_evaluate(config, workdir)`.

Resumes by itself from the workdir's latest checkpoint that restores (a damaged one is moved
aside); saves every `snapshot_ticks` ticks and when asked to stop (SIGTERM, e.g. TPU preemption,
or Ctrl-C: then raises `Interrupted`); reports through clu (TensorBoard event files and log lines)
and writes a fixed-z sample grid every `image_snapshot_ticks` ticks. One run at a time trains a
workdir (`sg2jax.checkpoint.WorkdirLock`); `config.json` is written once the run is accepted.
"""

import contextlib
import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import periodic_actions
from jax.experimental import multihost_utils

from sg2jax import storage
from sg2jax.checkpoint import TrainCheckpoints, WorkdirInUseError, workdir_lock
from sg2jax.data.pipeline import BadImageError
from sg2jax.images import make_grid, save_image, to_uint8
from sg2jax.sharding import global_batch, replicated
from sg2jax.train.build import CONFIG_FILE, Experiment, build
from sg2jax.train.programs import sample_grid_function
from sg2jax.train.schedule import optimizer_reset_due
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
  expected = json.loads(json.dumps(exp.network_configs()))
  workdir = checkpoints.directory.parent

  def check_networks(meta: dict) -> None:
    if meta['networks'] != expected:
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
  return state, meta.get('stage_nimg', meta.get('phase_nimg'))  # 'phase_nimg': sg2jax 0.1.0


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


def _train(exp: Experiment, config: ml_collections.ConfigDict, workdir: Path,
           hooks: Sequence[SnapshotHook]) -> GANState:
  hyper, schedule, settings = exp.hyper, exp.schedule, exp.loop
  is_main = jax.process_index() == 0
  logging.info('derived hyperparameters: %s', json.dumps(dataclasses.asdict(hyper),
                                                         sort_keys=True))
  logging.info('G: %s', exp.generator)
  logging.info('D: %s', exp.discriminator)

  state_sharding = replicated(exp.mesh)
  checkpoints = TrainCheckpoints(workdir, keep=settings.keep_checkpoints)
  state, stage_nimg = _initial_state(exp, checkpoints, state_sharding)
  if is_main:  # only now: a run refused above leaves the workdir's config.json as it was
    storage.write_text(workdir / CONFIG_FILE, config.to_json_best_effort(indent=2))
  step, nimg = int(state.step), int(state.nimg)
  stage = schedule.at(stage_nimg) if stage_nimg is not None else None
  reset = jax.jit(lambda state, g_lr, d_lr: reset_optimizers(state, exp.g_tx, exp.d_tx, g_lr,
                                                              d_lr),
                  out_shardings=state_sharding, donate_argnums=0)
  train_steps: dict = {}  # StepConfig -> TrainStep: one compiled set per stage setting
  writer = storage.metric_writer(workdir, just_logging=not is_main, asynchronous=True)
  total_nimg = settings.total_nimg
  repeats = settings.minibatch_repeats
  if step == 0:
    writer.write_hparams(dataclasses.asdict(hyper))
  progress = periodic_actions.ReportProgress(
      num_train_steps=count_steps(schedule, total_nimg, repeats), writer=writer, every_secs=30)
  samples = _SampleGrid(exp, workdir / 'samples', settings.grid_size, settings.seed)
  if step == 0 and is_main:
    samples.save_reals(exp.data)
  tick_nimg = int(settings.kimg_per_tick * 1000)

  def save(step: int) -> None:
    meta = {'step': step, 'kimg': nimg / 1000, 'stage_nimg': stage_nimg,
            'augment': isinstance(state, AugmentedGANState),  # the state has an AugmentState
            'networks': exp.network_configs(), 'data': exp.data.get_state(),
            'config': json.loads(config.to_json_best_effort())}
    checkpoints.save(step, state, meta)

  history: list[dict[str, jax.Array]] = []
  tick = nimg // tick_nimg if tick_nimg else 0
  tick_start, tick_start_nimg, last_saved, stopped = time.time(), nimg, None, False
  with StopRequest() as stop:
    while nimg < total_nimg:
      if stage is None or (schedule.progressive and step % repeats == 0):
        new_stage = schedule.at(nimg)
        if optimizer_reset_due(None if stage is None else stage.lod, new_stage.lod):
          state = reset(state, new_stage.g_lr, new_stage.d_lr)
        stage, stage_nimg = new_stage, nimg
      step_config = exp.step_config(stage)
      if step_config not in train_steps:
        train_steps[step_config] = TrainStep(exp.models, step_config, exp.mesh,
                                             state_sharding)
      try:
        batch = global_batch(exp.data.next_batch(stage.batch_size), exp.mesh)
      except BadImageError as e:  # config.data.strict: keep everything trained so far
        if last_saved != step:
          save(step)
        checkpoints.close()
        raise BadImageError(f'{e}; saved step {step}: fix or remove the image, then run again '
                            f'to resume') from None
      state, metrics = train_steps[step_config](state, batch, step, stage.lod)
      metrics = {**metrics, 'Progress/lod': stage.lod, 'Progress/resolution': stage.resolution}
      step += 1
      nimg += stage.batch_size
      history.append(metrics)
      progress(step)
      if nimg >= tick_start_nimg + tick_nimg or nimg >= total_nimg:
        tick += 1
        kimg = nimg / 1000
        elapsed = time.time() - tick_start
        tick_kimg = (nimg - tick_start_nimg) / 1000
        scalars = _mean_metrics(history)
        scalars.update({
            'Progress/kimg': kimg, 'Progress/tick': tick, 'Timing/sec_per_tick': elapsed,
            'Timing/sec_per_kimg': elapsed / max(tick_kimg, 1e-9),
            'Timing/images_per_sec': tick_kimg * 1000 / max(elapsed, 1e-9),
            'Data/skipped_images': exp.data.skipped_images})
        if tick % settings.image_snapshot_ticks == 0 or nimg >= total_nimg:
          samples.write(state, step, writer, stage)
        if tick % settings.snapshot_ticks == 0 or nimg >= total_nimg:
          save(step)
          last_saved = step
          for hook in hooks:
            scalars.update(hook(exp, state, step, kimg))
        writer.write_scalars(step, scalars)
        logging.info('tick %d kimg %.1f lod %.2f sec/tick %.1f sec/kimg %.2f G %.3f D %.3f', tick,
                     kimg, stage.lod, elapsed, scalars['Timing/sec_per_kimg'],
                     scalars.get('Loss/G/loss', np.nan), scalars.get('Loss/D/loss', np.nan))
        history, tick_start, tick_start_nimg = [], time.time(), nimg
      if stop.requested():
        logging.warning('stop requested (signal %s): saving step %d and exiting', stop.signal, step)
        stopped = True
        break
    if last_saved != step:
      save(step)
    checkpoints.close()
    writer.flush()
    writer.close()
  if stopped:
    raise Interrupted(stop.signal or signal.SIGTERM, step, workdir)
  return state


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
