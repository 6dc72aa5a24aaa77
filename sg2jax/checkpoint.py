"""Network checkpoints with orbax, and one loader for every network source a tool accepts.

A network checkpoint is an orbax directory with two items:
- `networks`: JSON `{name: config}` (`sg2jax.networks.config.network_config`);
- `variables`: `{name: {'params': ..., 'stats': ..., 'buffers': ...}}` arrays.
Names are `G`, `D` and `G_ema`. Orbax writes into a temporary directory and renames it when
complete, so an interrupted save never leaves a half-written checkpoint under the final name.
"""

from pathlib import Path
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from sg2jax.networks.config import (NetworkWeights, abstract_variables, build_network,
                                    check_variables)
from sg2jax.tools.official import load_official_pickle

NETWORK_ITEMS = ('networks', 'variables')


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
  """Loads networks from an official pickle (ADA or TF) or a sg2jax network checkpoint.

  Returns:
    `{'G': ..., 'D': ..., 'G_ema': ...}` (those present) of `NetworkWeights(config, variables)`.
  """
  path = Path(path)
  if not path.exists():
    raise FileNotFoundError(f'network {path} not found; pass an official .pkl or a directory '
                            f'written by `python -m sg2jax.convert`')
  if path.is_file():
    return load_official_pickle(path)
  if is_network_checkpoint(path):
    return load_network_checkpoint(path)
  raise ValueError(f'{path} is neither a network pickle nor a sg2jax network checkpoint (a '
                   f'directory with {" and ".join(NETWORK_ITEMS)})')


def select_generator(networks: dict[str, NetworkWeights],
                     source: Optional[str] = None) -> tuple[str, NetworkWeights]:
  """The generator tools sample from: `G_ema` when present (as the official tools), else `G`."""
  for name in ('G_ema', 'G'):
    if name in networks:
      return name, networks[name]
  raise ValueError(f'{source or "network"} holds no generator (found {sorted(networks)})')
