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
"""

from pathlib import Path
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from sg2jax.formats.official import load_official_pickle
from sg2jax.networks.weights import (NetworkWeights, abstract_variables, build_network,
                                     check_variables)

NETWORK_ITEMS = ('networks', 'variables')
TRAIN_ITEMS = ('state', 'meta')
CHECKPOINT_DIR = 'checkpoints'


class TrainCheckpoints:
  """The checkpoints of a training run in `workdir/checkpoints`.

  Saves are asynchronous; orbax writes each into a temporary directory and renames it when
  complete, and removes old checkpoints only after that, so killing the process at any moment
  (even with SIGKILL during a save) leaves the previous checkpoint loadable.
  """

  def __init__(self, workdir: str | Path, keep: int = 5, asynchronous: bool = True):
    self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                             enable_async_checkpointing=asynchronous),
        item_names=TRAIN_ITEMS)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

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
    """The state as nested dicts of arrays, without a target (for tools: no optimizer needed)."""
    return self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def is_training_workdir(path: str | Path) -> bool:
  return (Path(path) / CHECKPOINT_DIR).is_dir()


def load_training_networks(workdir: str | Path, step: Optional[int] = None
                           ) -> dict[str, NetworkWeights]:
  """G, D and G_ema of a training run (latest checkpoint, or `step`)."""
  checkpoints = TrainCheckpoints(workdir, asynchronous=False)
  step = checkpoints.latest_step() if step is None else step
  if step is None:
    raise ValueError(f'{workdir} has no finished checkpoint yet')
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


def _checkpointer() -> ocp.Checkpointer:
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(
      networks=ocp.JsonCheckpointHandler(), variables=ocp.StandardCheckpointHandler()))


def save_networks(directory: str | Path, networks: dict[str, NetworkWeights],
                  overwrite: bool = False) -> Path:
  """Writes networks (config + variables) as an orbax checkpoint at `directory`.

  Raises:
    FileExistsError: `directory` exists and `overwrite` is False.
  """
  directory = Path(directory).absolute()
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
  path = Path(path)
  return path.is_dir() and all((path / item).is_dir() for item in NETWORK_ITEMS)


def load_network_checkpoint(directory: str | Path) -> dict[str, NetworkWeights]:
  """Reads a checkpoint written by `save_networks`, checking every shape against its config."""
  directory = Path(directory).absolute()
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
  path = Path(path)
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
