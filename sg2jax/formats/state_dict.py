"""Reading a torch `state_dict` file of a feature network and checking it against the module.

The loaders in `inception.py`, `vgg16.py` and `lpips.py` read their file with numpy only
(`sg2jax.formats.torch_pickle`: torch zip and legacy formats, plain pickles), then check every key
and shape against the module (`param_shapes`) before changing any layout, so a wrong file fails
with one line that names what does not fit.
"""

import pickle
import struct
from pathlib import Path
from typing import Iterable, Mapping

import flax.linen as nn
import jax
import numpy as np

from sg2jax.formats.torch_pickle import TorchReader, UnsafePickleError

# Names listed in an error message before "... and N more".
_MAX_NAMES = 8


def _names(names: list[str]) -> str:
  shown = ', '.join(names[:_MAX_NAMES])
  return shown + (f' ... and {len(names) - _MAX_NAMES} more' if len(names) > _MAX_NAMES else '')


def param_shapes(module: nn.Module, *inputs) -> dict[str, tuple[int, ...]]:
  """`{'a/b/weight': shape}` of a module's params in the order the module declares them.

  Computed with `jax.eval_shape` (nothing allocated). Declaration order is the torch state_dict
  order for modules written in torch's order, so error messages list entries as the file does
  (`jax.tree` flattening would sort them).
  """
  paths = []

  def init_leaves(key):
    leaves = []

    def walk(node, prefix):
      for name, value in node.items():
        if isinstance(value, Mapping):
          walk(value, f'{prefix}{name}/')
        else:
          paths.append(prefix + name)
          leaves.append(value)

    walk(module.init(key, *inputs)['params'], '')
    return leaves

  shapes = jax.eval_shape(init_leaves, jax.random.key(0))
  return {path: tuple(leaf.shape) for path, leaf in zip(paths, shapes)}


def read_state_dict(path: str | Path, what: str, where_to_get: str) -> dict[str, np.ndarray]:
  """Reads a `torch.save`d state_dict (zip or legacy format) as `{name: numpy array}`.

  Args:
    path: the `.pth` file.
    what: what the file should hold, for messages (`"FID Inception weights"`).
    where_to_get: how users get the file, appended to the not-found message.

  Returns:
    The state_dict in file order, tensors as numpy arrays.

  Raises:
    FileNotFoundError: no such file (the message says where to get it).
    UnsafePickleError: the pickle names a global outside the allow-list.
    ValueError: the file is not a readable torch state_dict (also when it claims more data than
      it holds: `torch_pickle.AllocationError`, refused before allocating).
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{what} file {path} not found; {where_to_get}')
  try:
    state_dict = TorchReader().load(path)
  except UnsafePickleError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, struct.error, OSError) as e:
    raise ValueError(f'{path.name} is not a readable torch.save file of {what} '
                     f'({type(e).__name__}: {e})') from None
  except MemoryError:
    raise ValueError(f'{path.name}: reading it as {what} ran out of memory; it is not the '
                     f'expected file ({where_to_get})') from None
  if not isinstance(state_dict, Mapping) or not all(
      isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state_dict.items()):
    raise ValueError(f'{path.name} does not hold a state_dict (names -> tensors) of {what}; got '
                     f'{type(state_dict).__name__}')
  return dict(state_dict)


def check_state_dict(state_dict: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                     source: str, what: str, optional: Iterable[str] = ()) -> None:
  """Raises one ValueError naming every missing, unknown and wrongly shaped entry.

  Args:
    state_dict: names -> arrays, as read from the file.
    expected: names -> shapes in the file's layout (e.g. OIHW); floating-point values expected.
    source: file name for the message.
    what: what the file should hold, for the message.
    optional: further names that may be present or not and are not used (e.g. BatchNorm's
      `num_batches_tracked`); when present they must be integer scalars.

  Raises:
    ValueError: `<source> does not hold <what>: missing ...; unknown ...; wrong shape ...;
      wrong dtype ...` (long lists end with `... and N more`).
  """
  optional = [k for k in optional if k not in expected]
  present = [k for k in expected if k in state_dict]
  missing = [k for k in expected if k not in state_dict]
  unknown = [k for k in state_dict if k not in expected and k not in optional]
  wrong_shape = [f'{k} {list(state_dict[k].shape)} (expected {list(expected[k])})'
                 for k in present if tuple(state_dict[k].shape) != tuple(expected[k])]
  wrong_dtype = [f'{k} ({state_dict[k].dtype})'
                 for k in present if not np.issubdtype(state_dict[k].dtype, np.floating)]
  for k in optional:
    value = state_dict.get(k)
    if value is not None and (value.shape != () or not np.issubdtype(value.dtype, np.integer)):
      wrong_dtype.append(f'{k} ({value.dtype}{list(value.shape)}, expected an integer scalar)')
  problems = [f'{label} {_names(names)}' for label, names in (
      ('missing', missing), ('unknown', unknown), ('wrong shape', wrong_shape),
      ('wrong dtype', wrong_dtype)) if names]
  if problems:
    raise ValueError(f'{source} does not hold {what}: ' + '; '.join(problems))
