"""The device mesh and how arrays lie on it: batches split over a 'data' axis, state replicated.

Works the same on one CPU, one GPU, a TPU slice or several hosts (after
`jax.distributed.initialize`): every process feeds its own part of the batch and
`jax.make_array_from_process_local_data` assembles the global array.
"""

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh over all (or the given) devices, axis 'data'.

  Axis type Auto: XLA propagates shardings through the networks (JAX 0.10 defaults to Explicit).
  """
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> int:
  """Returns the per-device batch; a one-line error if the devices do not divide the batch."""
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(
        f'{what} {batch_size} is not divisible by the {devices} devices; use a multiple of '
        f'{devices} (e.g. --config.batch_size={max(devices, batch_size // devices * devices)})')
  if batch_size % jax.process_count():
    raise ValueError(f'{what} {batch_size} is not divisible by the {jax.process_count()} '
                     f'processes')
  return batch_size // devices


def global_batch(host_batch: Any, mesh: Mesh) -> Any:
  """Host-local numpy batch (this process's rows) -> global arrays split over 'data'."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf, identical on all processes, on all devices."""
  sharding = replicated(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
