"""Checkpoints with orbax: training runs, exported networks, and one loader for every network
source a tool accepts (official pickle, exported checkpoint, training workdir).

A training workdir holds `checkpoints/<step>/` written by `TrainCheckpoints` (orbax
`CheckpointManager`, async, keeping the last N): item `state` (the whole `GANState`) and item
`meta` (JSON: step, kimg, network configs, data-iterator position, the run's config).

An exported network checkpoint is an orbax directory with two items:
- `networks`: JSON `{name: config}` (`sg2jax.networks.weights.network_config`);
- `variables`: `{name: {'params': ..., 'stats': ..., 'buffers': ...}}` arrays.
Names are `G`, `D` and `G_ema`. Orbax writes into a temporary directory and renames it when
complete, so an interrupted save never leaves a half-written checkpoint under the final name.

A checkpoint damaged afterwards (a data file missing or truncated, metadata missing) does not
block a run: `TrainCheckpoints.restore_newest` reports it in one line, moves it aside as
`checkpoints/<step>.damaged-<time>` (never deleting it) and restores the previous one. A workdir
is trained by one run at a time: `WorkdirLock` holds an exclusive `flock` on `workdir/.lock`.

On Cloud Storage (`gs://`, `sg2jax.storage`) orbax writes a checkpoint under its final name and
marks it complete last (`commit_success.txt`): until then it is not a checkpoint. One left
without the mark by a killed run is moved aside as `<step>.unfinished-<time>` when the next run
opens the workdir, so that step can be saved again. The lock is then `BucketLock`: an object
created only if absent, with a heartbeat.
"""

import datetime
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import quote

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from sg2jax import storage
from sg2jax.formats.official import load_official_pickle
from sg2jax.networks.weights import (NetworkWeights, abstract_variables, build_network,
                                     check_variables)

NETWORK_ITEMS = ('networks', 'variables')
TRAIN_ITEMS = ('state', 'meta')
CHECKPOINT_DIR = 'checkpoints'
LOCK_FILE = '.lock'
DAMAGED = 'damaged'  # `checkpoints/<step>.damaged-<time>`: a checkpoint that did not restore
UNFINISHED = 'unfinished'  # `checkpoints/<step>.unfinished-<time>`: a save a kill cut short
MAX_UNFINISHED = 64  # moved aside per start (more are left for the next start)


def _all_processes_agree(ok: bool) -> bool:
  """True if `ok` on every process (the local value with one process)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


class TrainCheckpoints:
  """The checkpoints of a training run in `workdir/checkpoints`.

  Saves are asynchronous; orbax writes each into a temporary directory and renames it when
  complete, and removes old checkpoints only after that, so killing the process at any moment
  (even with SIGKILL during a save) leaves the previous checkpoint loadable.
  """

  def __init__(self, workdir: str | Path, keep: int = 5, asynchronous: bool = True,
               repair: bool = True):
    """`repair`: move unfinished saves aside (training; tools only read finished ones)."""
    self.directory = storage.absolute(workdir) / CHECKPOINT_DIR
    if repair and storage.is_remote(self.directory):
      self._move_aside_unfinished()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                             enable_async_checkpointing=asynchronous),
        item_names=TRAIN_ITEMS)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """The finished checkpoints' steps, oldest first."""
    return sorted(self.manager.all_steps())

  def move_aside(self, step: int, why: str = DAMAGED) -> Path:
    """Renames checkpoint `step` to `<step>.<why>-<time>` in the same folder (never deletes
    it), so the run resumes from the previous one and can save `step` again; returns the new
    path (process 0's name). Only process 0 renames; every process then forgets the step."""
    source = self.directory / str(step)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    target = self.directory / f'{step}.{why}-{stamp}'
    if jax.process_index() == 0:
      suffix = 0
      while target.exists():
        suffix += 1
        target = self.directory / f'{step}.{why}-{stamp}-{suffix}'
      storage.move_tree(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'sg2jax: checkpoint {step} moved aside')
    if hasattr(self, 'manager'):  # not yet made when `__init__` moves unfinished saves aside
      self.manager.reload()
    return target

  def _move_aside_unfinished(self) -> None:
    """Moves aside step folders without orbax's commit mark (object storage: a save cut short
    writes under the final name), reporting each; locally orbax's temporary folders hold those."""
    unfinished = []
    if self.directory.exists():
      unfinished = sorted(int(p.name) for p in self.directory.iterdir()
                          if p.name.isdigit() and not ocp.step.is_checkpoint_finalized(p))
    if jax.process_count() > 1:  # every process moves (process 0 renames) the same steps
      padded = np.full(MAX_UNFINISHED, -1, np.int64)  # a broadcast needs one shape everywhere
      padded[:len(unfinished[:MAX_UNFINISHED])] = unfinished[:MAX_UNFINISHED]
      unfinished = [int(s) for s in multihost_utils.broadcast_one_to_all(padded) if s >= 0]
    for step in unfinished:
      moved = self.move_aside(step, UNFINISHED)
      logging.warning('checkpoint %s was not finished (its save was cut short); moved it aside '
                      'to %s', self.directory / str(step), moved.name)

  def restore_newest(self, read_state: Optional[Callable[[int, dict], Any]] = None,
                     check_meta: Optional[Callable[[dict], None]] = None,
                     move_damaged: bool = True) -> Optional[tuple[int, dict, Any]]:
    """The newest checkpoint that restores: `(step, meta, state)`, or None without checkpoints.

    A checkpoint whose files do not read (a data file missing or truncated, metadata missing or
    unreadable) is reported in one warning line and, with `move_damaged`, moved aside
    (`move_aside`); the previous one is tried next. A checkpoint whose files read but whose
    state `read_state` cannot take (e.g. another structure) is not damage: that error
    propagates, as does any error of `check_meta(meta)` (e.g. a run of other networks).

    Args:
      read_state: `(step, meta) -> state` (e.g. `lambda step, meta: self.restore(step,
        abstract_state)`); None for the raw state (nested dicts of arrays, what tools need).
      check_meta: called with each checkpoint's meta before its state is read.
      move_damaged: rename damaged checkpoints (training); tools only skip them.

    Raises:
      ValueError: there are checkpoints but none restores (each was reported, and moved aside).
    """
    read_state = read_state or (lambda step, meta: self.restore_raw_state(step))
    damaged = []
    for step in reversed(self.all_steps()):
      try:
        meta, error = self.restore_meta(step), None
      except Exception as e:  # orbax / json / tensorstore: the files do not read
        meta, error = None, e
      if _all_processes_agree(error is None):
        if check_meta is not None:
          check_meta(meta)
        try:
          state, error = read_state(step, meta), None
        except Exception as e:
          state, error = None, e
          if self._raw_state_reads(step):
            raise  # the files are intact: the state does not fit what `read_state` expects
        if _all_processes_agree(error is None):
          return step, meta, state
      message = (' '.join(f'{type(error).__name__}: {error}'.split())[:300] if error
                 else 'unreadable on another process')
      if move_damaged:
        moved = self.move_aside(step)
        damaged.append(str(moved))
        logging.warning('checkpoint %s is damaged (%s); moved it aside to %s and trying the '
                        'previous one', self.directory / str(step), message, moved.name)
      else:
        damaged.append(str(self.directory / str(step)))
        logging.warning('checkpoint %s is damaged (%s); using the previous one',
                        self.directory / str(step), message)
    if damaged:
      where = 'moved aside to' if move_damaged else 'damaged:'
      raise ValueError(f'no checkpoint in {self.directory} restores ({where} '
                       f'{", ".join(damaged)}); ' + (
                           'run again to start this run over from step 0, or use a new --workdir'
                           if move_damaged else 'resume the training to repair the workdir'))
    return None

  def _raw_state_reads(self, step: int) -> bool:
    """Whether the state of `step` reads without a target (its files are intact)."""
    try:
      self.restore_raw_state(step)
      return True
    except Exception:
      return False

  def save(self, step: int, state, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)))

  def restore_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step: int, abstract_state):
    """The state at `step`, laid out as `abstract_state` (shapes, dtypes and shardings)."""
    return self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))['state']

  def restore_raw_state(self, step: int) -> dict:
    """The state as nested dicts of arrays, without a target (for tools: no optimizer needed),
    on this process's first device whatever devices saved it (a slice's checkpoint is read on
    one VM)."""
    stored = ocp.StandardCheckpointer().metadata(self.directory / str(step) / 'state')
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device)
        if hasattr(m, 'shape') else m, stored.item_metadata.tree)
    return self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))['state']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def is_training_workdir(path: str | Path) -> bool:
  return (storage.as_path(path) / CHECKPOINT_DIR).is_dir()


def load_training_networks(workdir: str | Path, step: Optional[int] = None
                           ) -> dict[str, NetworkWeights]:
  """G, D and G_ema of a training run: its newest checkpoint that restores (a damaged one is
  reported and skipped, not moved: only training repairs a workdir), or `step`."""
  checkpoints = TrainCheckpoints(workdir, asynchronous=False, repair=False)
  if step is None:
    newest = checkpoints.restore_newest(move_damaged=False)
    if newest is None:
      raise ValueError(f'{workdir} has no finished checkpoint yet')
    step, meta, raw = newest
  else:
    meta = checkpoints.restore_meta(step)
    raw = checkpoints.restore_raw_state(step)
  checkpoints.close()
  out = {}
  for name, key in (('G', 'g'), ('D', 'd'), ('G_ema', 'g_ema')):
    config = meta['networks'][name]
    network = build_network(config)
    variables = jax.tree.map(np.asarray, raw[key])
    check_variables(network, variables, f'{workdir} step {step} [{name}]')
    out[name] = NetworkWeights(config, variables)
  return out


class WorkdirInUseError(ValueError):
  """Another process holds the workdir's lock."""


class WorkdirLock:
  """An exclusive lock on a training workdir, held while a run trains it.

  `fcntl.flock` on `workdir/.lock`: the operating system releases it when the process exits,
  however it exits (even `kill -9`), so a crashed run never leaves the workdir locked. The file
  says who holds it (pid, host, start time) for the error a second run gets. flock is reliable
  on local file systems; on network file systems it depends on the server (NFS v4 supports it).
  """

  def __init__(self, workdir: str | Path):
    self.workdir = Path(workdir)
    self.path = self.workdir / LOCK_FILE
    self._file = None

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or raises WorkdirInUseError naming the process that holds it."""
    self.workdir.mkdir(parents=True, exist_ok=True)
    file = open(self.path, 'a+')
    try:
      fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held by another open file description
      file.seek(0)
      holder = file.read().strip()
      file.close()
      try:
        info = json.loads(holder)
        who = f'pid {info["pid"]} on {info["host"]}, started {info["started"]}'
      except (ValueError, KeyError, TypeError):
        who = 'a process that has not yet written its name'
      raise WorkdirInUseError(f'{self.workdir} is being trained by another process ({who}); '
                              f'wait for it to finish or stop it, or use another --workdir'
                              ) from None
    file.seek(0)
    file.truncate()
    file.write(json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                           'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}) + '\n')
    file.flush()
    self._file = file
    return self

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


LOCK_TIMEOUT_ENV = 'SG2JAX_LOCK_TIMEOUT'  # seconds without a heartbeat before a lock is stale
LOCK_TIMEOUT = 600.0
HEARTBEAT_SECONDS = 60.0


def lock_timeout() -> float:
  return float(os.environ.get(LOCK_TIMEOUT_ENV, LOCK_TIMEOUT))


def _lock_record(token: str, started: str) -> bytes:
  return json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'started': started,
                     'heartbeat': time.time(), 'token': token}).encode()


def is_stale(record: dict, now: float, timeout: float) -> bool:
  """A lock whose owner has not renewed it for `timeout` seconds (killed, or its host gone)."""
  return now - float(record.get('heartbeat', 0)) > timeout


class BucketLock:
  """The one-run-per-workdir lock on Cloud Storage, which has no flock.

  `workdir/.lock` is an object created only if absent (upload precondition
  `ifGenerationMatch=0`: of two runs starting at once, exactly one gets it). It holds the
  owner's host, pid and a heartbeat time that a thread renews every `heartbeat` seconds, each
  renewal conditional on the generation the owner wrote last, so an owner notices a takeover.
  A run that finds a lock whose heartbeat is older than `timeout` seconds (`SG2JAX_LOCK_TIMEOUT`,
  default 600: a killed run's, which nothing released) deletes it, on the condition that it is
  still that generation, and creates its own. `release` deletes the lock if it is still ours.
  """

  def __init__(self, workdir: str | Path, timeout: Optional[float] = None,
               heartbeat: float = HEARTBEAT_SECONDS):
    self.workdir = storage.as_path(workdir)
    self.path = self.workdir / LOCK_FILE
    self.timeout = lock_timeout() if timeout is None else timeout
    self.heartbeat = min(heartbeat, self.timeout / 4)
    self.token = f'{socket.gethostname()}-{os.getpid()}-{time.time_ns()}'
    self.started = time.strftime('%Y-%m-%d %H:%M:%S %Z')
    self.generation: Optional[str] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self._fs = storage.filesystem()
    self._bucket, _, self._key = os.fspath(self.path)[len(storage.GS):].partition('/')

  def _object_url(self) -> str:
    return f'{self._fs._location}/storage/v1/b/{self._bucket}/o/{quote(self._key, safe="")}'

  def _upload(self, if_generation: str) -> str:
    """Writes our record if the object's generation is `if_generation` ('0': absent); returns
    the new generation. Raises FileExistsError when the precondition fails."""
    out = self._fs.call(
        'POST', f'{self._fs._location}/upload/storage/v1/b/{self._bucket}/o',
        uploadType='media', name=self._key, ifGenerationMatch=if_generation,
        data=_lock_record(self.token, self.started), json_out=True)
    return str(out['generation'])

  def _read(self) -> Optional[tuple[str, dict]]:
    """(generation, record) of the lock object, or None without one."""
    try:
      info = self._fs.call('GET', self._object_url(), json_out=True)
      _, data = self._fs.call('GET', self._object_url(), alt='media',
                              generation=info['generation'])
    except FileNotFoundError:
      return None
    try:
      record = json.loads(data)
    except ValueError:
      record = {}
    return str(info['generation']), record

  def _refuse(self, record: dict, now: float) -> WorkdirInUseError:
    age = now - float(record.get('heartbeat', now))
    who = (f'pid {record.get("pid")} on {record.get("host")}, started {record.get("started")}, '
           f'last heartbeat {age:.0f} s ago')
    return WorkdirInUseError(
        f'{self.workdir} is being trained by another process ({who}); wait for it to finish or '
        f'stop it, or use another --workdir. A lock whose heartbeat is older than '
        f'{self.timeout:.0f} s ({LOCK_TIMEOUT_ENV}) is taken over')

  def acquire(self) -> 'BucketLock':
    """Takes the lock (a stale one over), or raises WorkdirInUseError naming its owner."""
    storage.require_bucket(self.workdir)
    for _ in range(3):  # another run may take or drop the lock between our requests
      found = self._read()
      if found is not None:
        generation, record = found
        now = time.time()
        if not is_stale(record, now, self.timeout):
          raise self._refuse(record, now)
        logging.warning('taking over the lock of %s: its owner (pid %s on %s) sent no heartbeat '
                        'for %.0f s (more than %s=%.0f)', self.workdir, record.get('pid'),
                        record.get('host'), now - float(record.get('heartbeat', 0)),
                        LOCK_TIMEOUT_ENV, self.timeout)
        try:
          self._fs.call('DELETE', self._object_url(), ifGenerationMatch=generation)
        except (FileExistsError, FileNotFoundError):
          continue  # someone else changed or removed it first: look again
      try:
        self.generation = self._upload('0')
      except FileExistsError:
        continue
      self._thread = threading.Thread(target=self._beat, daemon=True, name='sg2jax-lock')
      self._thread.start()
      return self
    found = self._read()
    raise self._refuse(found[1] if found else {}, time.time())

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat):
      try:
        self.generation = self._upload(self.generation)
      except FileExistsError:
        logging.error('the lock of %s was taken over by another run; this run no longer owns '
                      'the workdir', self.workdir)
        return
      except Exception as e:  # a network error: try again at the next beat
        logging.warning('could not renew the lock of %s: %s', self.workdir, e)

  def release(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    try:
      self._fs.call('DELETE', self._object_url(), ifGenerationMatch=self.generation)
    except (FileExistsError, FileNotFoundError):
      pass  # taken over: not ours to delete

  def __enter__(self) -> 'BucketLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def workdir_lock(workdir: str | Path) -> 'WorkdirLock | BucketLock':
  """The lock for `workdir`: an flock locally, a `BucketLock` on Cloud Storage."""
  return BucketLock(workdir) if storage.is_remote(workdir) else WorkdirLock(workdir)


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      networks=ocp.JsonCheckpointHandler(), variables=ocp.StandardCheckpointHandler()))


def save_networks(directory: str | Path, networks: dict[str, NetworkWeights],
                  overwrite: bool = False) -> Path:
  """Writes networks (config + variables) as an orbax checkpoint at `directory`.

  Raises:
    FileExistsError: `directory` exists and `overwrite` is False.
  """
  directory = storage.absolute(directory)
  if directory.exists() and not overwrite:
    raise FileExistsError(f'{directory} already exists; choose a new output directory or pass '
                          f'--overwrite')
  configs = {name: dict(net.config) for name, net in networks.items()}
  variables = {name: jax.tree.map(np.asarray, dict(net.variables))
               for name, net in networks.items()}
  _checkpointer().save(
      directory,
      ocp.args.Composite(networks=ocp.args.JsonSave(configs),
                         variables=ocp.args.StandardSave(variables)),
      force=overwrite)
  return directory


def is_network_checkpoint(path: str | Path) -> bool:
  path = storage.as_path(path)
  return path.is_dir() and all((path / item).is_dir() for item in NETWORK_ITEMS)


def load_network_checkpoint(directory: str | Path) -> dict[str, NetworkWeights]:
  """Reads a checkpoint written by `save_networks`, checking every shape against its config."""
  directory = storage.absolute(directory)
  checkpointer = _checkpointer()
  configs = checkpointer.restore(
      directory, ocp.args.Composite(networks=ocp.args.JsonRestore()))['networks']
  stored = checkpointer.metadata(directory).item_metadata['variables'].tree
  abstract = {}
  for name, config in configs.items():
    network = build_network(config)
    abstract[name] = abstract_variables(network)
    if name not in stored:
      raise ValueError(f'{directory}: network {name} has a config but no variables')
    check_variables(network, stored[name], f'checkpoint {directory} [{name}]', abstract[name])
  restored = checkpointer.restore(
      directory, ocp.args.Composite(variables=ocp.args.StandardRestore(abstract)))['variables']
  return {name: NetworkWeights(configs[name], restored[name]) for name in configs}


def load_networks(path: str | Path) -> dict[str, NetworkWeights]:
  """Loads networks from an official pickle (ADA or TF), a sg2jax network checkpoint or a
  training workdir (its latest checkpoint).

  Returns:
    `{'G': ..., 'D': ..., 'G_ema': ...}` (those present) of `NetworkWeights(config, variables)`.
  """
  path = storage.as_path(path)
  if not path.exists():
    raise FileNotFoundError(f'network {path} not found; pass an official .pkl, a directory '
                            f'written by `python -m sg2jax.convert`, or a training workdir')
  if path.is_file():
    return load_official_pickle(path)
  if is_network_checkpoint(path):
    return load_network_checkpoint(path)
  if is_training_workdir(path):
    return load_training_networks(path)
  raise ValueError(f'{path} is neither a network pickle, a sg2jax network checkpoint (a '
                   f'directory with {" and ".join(NETWORK_ITEMS)}) nor a training workdir')


def select_generator(networks: dict[str, NetworkWeights],
                     source: Optional[str] = None) -> tuple[str, NetworkWeights]:
  """The generator tools sample from: `G_ema` when present (as the official tools), else `G`."""
  for name in ('G_ema', 'G'):
    if name in networks:
      return name, networks[name]
  raise ValueError(f'{source or "network"} holds no generator (found {sorted(networks)})')
