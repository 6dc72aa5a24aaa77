"""The host loop: `train_and_evaluate(config, workdir)`.

Resumes by itself from the workdir's latest checkpoint; saves every `snapshot_ticks` ticks and when
asked to stop (SIGTERM, e.g. TPU preemption, or Ctrl-C); reports through clu (TensorBoard event
files and log lines) and writes a fixed-z sample grid every `image_snapshot_ticks` ticks.
"""

import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from sg2jax.checkpoint import TrainCheckpoints
from sg2jax.images import make_grid, save_image, to_uint8
from sg2jax.sharding import global_batch, replicated
from sg2jax.train.build import Experiment, build
from sg2jax.train.schedule import optimizer_reset_due
from sg2jax.train.state import GANState, init_state, reset_optimizers
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


def _initial_state(exp: Experiment, checkpoints: TrainCheckpoints, state_sharding):
  """A fresh state, or the latest checkpoint's (with the data position).

  Returns:
    (state, stage_nimg): the image count at which the current schedule stage began (None for a
    fresh run).
  """
  make = lambda: init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx, exp.loop.seed)
  latest = checkpoints.latest_step()
  if latest is None:
    return jax.jit(make, out_shardings=state_sharding)(), None
  meta = checkpoints.restore_meta(latest)
  expected = exp.network_configs()
  if meta['networks'] != json.loads(json.dumps(expected)):
    raise ValueError(f'the checkpoint in {checkpoints.directory} was trained with other networks '
                     f'than this config builds; use a new --workdir or the run\'s own config '
                     f'(saved in config.json)')
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=state_sharding),
      jax.eval_shape(make))
  state = checkpoints.restore(latest, abstract)
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
  """
  workdir = Path(workdir)
  exp = build(config)
  hyper, schedule, settings = exp.hyper, exp.schedule, exp.loop
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2))
  logging.info('derived hyperparameters: %s', json.dumps(dataclasses.asdict(hyper),
                                                         sort_keys=True))
  logging.info('G: %s', exp.generator)
  logging.info('D: %s', exp.discriminator)

  state_sharding = replicated(exp.mesh)
  checkpoints = TrainCheckpoints(workdir, keep=settings.keep_checkpoints)
  state, stage_nimg = _initial_state(exp, checkpoints, state_sharding)
  step, nimg = int(state.step), int(state.nimg)
  stage = schedule.at(stage_nimg) if stage_nimg is not None else None
  reset = jax.jit(lambda state, g_lr, d_lr: reset_optimizers(state, exp.g_tx, exp.d_tx, g_lr,
                                                              d_lr),
                  out_shardings=state_sharding, donate_argnums=0)
  train_steps: dict = {}  # StepConfig -> TrainStep: one compiled set per stage setting
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main,
                                                asynchronous=True)
  total_nimg = settings.total_nimg
  repeats = settings.minibatch_repeats
  if step == 0:
    writer.write_hparams(dataclasses.asdict(hyper))
  progress = periodic_actions.ReportProgress(
      num_train_steps=count_steps(schedule, total_nimg, repeats), writer=writer, every_secs=30)
  samples = _SampleGrid(exp, workdir / 'samples', settings.grid_size, settings.seed)
  if step == 0 and is_main:
    samples.save_reals(exp.data.source)
  tick_nimg = int(settings.kimg_per_tick * 1000)

  def save(step: int) -> None:
    meta = {'step': step, 'kimg': nimg / 1000, 'stage_nimg': stage_nimg,
            'networks': exp.network_configs(), 'data': exp.data.get_state(),
            'config': json.loads(config.to_json_best_effort())}
    checkpoints.save(step, state, meta)

  history: list[dict[str, jax.Array]] = []
  tick = nimg // tick_nimg if tick_nimg else 0
  tick_start, tick_start_nimg, last_saved = time.time(), nimg, None
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
      batch = global_batch(exp.data.next_batch(stage.batch_size), exp.mesh)
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
            'Timing/images_per_sec': tick_kimg * 1000 / max(elapsed, 1e-9)})
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
        break
    if last_saved != step:
      save(step)
    checkpoints.close()
    writer.flush()
    writer.close()
  return state


class _SampleGrid:
  """Images of G_ema for fixed latents (const noise, no truncation), as PNG and TensorBoard;
  with progressive growing, at the current level of detail."""

  def __init__(self, exp: Experiment, directory: Path, count: int, seed: int):
    self.directory = directory
    g = exp.generator
    self.z = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 0x5A3), (count, g.z_dim))
    self.c = None
    if g.c_dim > 0:
      self.c = jax.nn.one_hot(jnp.arange(count) % g.c_dim, g.c_dim)
    self.generate = jax.jit(
        lambda v, z, c, lod, resolution: g.apply(v, z, c, noise_mode='const', lod=lod,
                                                 resolution=resolution),
        static_argnums=4, out_shardings=replicated(exp.mesh))
    self.count = count

  def save_reals(self, source) -> None:
    self.directory.mkdir(parents=True, exist_ok=True)
    images = np.stack([source[i]['image'] for i in range(min(self.count, len(source)))])
    save_image(self.directory / 'reals.png', make_grid(images))

  def write(self, state: GANState, step: int, writer, stage) -> None:
    images = jax.device_get(self.generate(state.g_ema, self.z, self.c, jnp.float32(stage.lod),
                                          stage.resolution))
    grid = make_grid(to_uint8(images))
    if jax.process_index() == 0:
      self.directory.mkdir(parents=True, exist_ok=True)
      save_image(self.directory / f'fakes{step:07d}.png', grid)
    writer.write_images(step, {'samples': grid[None]})
