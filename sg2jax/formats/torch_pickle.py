"""Reading torch-serialized tensors with numpy only, through a restricted unpickler.

Covers what published StyleGAN2 / metric weights use:
- `torch.save` zip files (torch >= 1.6): `<archive>/data.pkl` + `<archive>/data/<key>` blobs;
- legacy `torch.save` files (torch < 1.6, e.g. pytorch-fid's Inception weights): five pickles
  (magic number, protocol version, sys info, the object, the storage keys), then per storage an
  int64 element count and the raw little-endian data;
- `torch.storage._load_from_bytes(b)` inside other pickles (how ADA snapshots embed each
  tensor): `b` is a legacy `torch.save` of one storage.

Only an allow-list of globals resolves; anything else - a pickle that would import a module or
call a function - is refused before it runs. Tensors come back as numpy arrays.
"""

import _compat_pickle
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
    'UntypedStorage': np.uint8,
}
# bfloat16 has no numpy dtype: read as uint16 and widened to float32 on rebuild.
_BFLOAT16 = 'BFloat16Storage'


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global outside the allow-list."""


class StorageType:
  """Stand-in for `torch.FloatStorage` & co. inside persistent ids."""

  def __init__(self, name: str):
    self.name = name

  def __repr__(self) -> str:
    return f'torch.{self.name}'


class Storage:
  """A flat typed buffer (what a torch storage holds); `data` is None until it is read."""

  def __init__(self, data: Optional[np.ndarray], bfloat16: bool = False,
               dtype: Optional[np.dtype] = None):
    self.data = data
    self.bfloat16 = bfloat16
    self.dtype = data.dtype if data is not None else dtype


def _rebuild_tensor(storage: Storage, storage_offset: int, size, stride,
                    *unused: Any) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)`."""
  if not isinstance(storage, Storage):
    raise pickle.UnpicklingError('tensor without a storage: not a torch-serialized tensor')
  data = storage.data
  if data is None:
    return None  # first pass over a legacy file: the bytes are not read yet
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if not size:
    out = np.array(data[storage_offset])
  else:
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if min(size) > 0 and needed > data.size:
      raise pickle.UnpicklingError(f'tensor of size {size} does not fit its storage of '
                                   f'{data.size} elements (truncated file?)')
    itemsize = data.dtype.itemsize
    out = np.lib.stride_tricks.as_strided(
        data[storage_offset:], shape=size, strides=[s * itemsize for s in stride]).copy()
  if storage.bfloat16:
    out = (out.astype(np.uint32) << 16).view(np.float32)
  return out


def _rebuild_parameter(data: np.ndarray, requires_grad: bool = False, *unused: Any) -> np.ndarray:
  """`torch._utils._rebuild_parameter(data, requires_grad, backward_hooks[, state])`."""
  return data


def _numpy_scalar(dtype: np.dtype, data: bytes = b'') -> Any:
  """`numpy.core.multiarray.scalar(dtype, bytes)` for plain (non-object) dtypes."""
  if not isinstance(dtype, np.dtype) or dtype.hasobject:
    raise UnsafePickleError('refusing a numpy scalar of object dtype')
  return np.frombuffer(data, dtype=dtype, count=1)[0]


def _numpy_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
  """`numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`; the state comes via BUILD."""
  if subtype is not np.ndarray:
    raise UnsafePickleError('refusing a numpy array subclass')
  return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _latin1_encode(text: str, encoding: str = 'latin1') -> bytes:
  """`_codecs.encode(text, 'latin1')`: how protocol-2 pickles store bytes (nothing else allowed)."""
  if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
    raise UnsafePickleError(f'refusing _codecs.encode with encoding {encoding!r}')
  return text.encode('latin1')


_BASE_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('builtins', 'slice'): slice,
    ('builtins', 'complex'): complex,
    ('_codecs', 'encode'): _latin1_encode,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('numpy', 'dtype'): np.dtype,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy.core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _numpy_reconstruct,
}
for _name in list(STORAGE_DTYPES) + [_BFLOAT16]:
  _BASE_GLOBALS[('torch', _name)] = StorageType(_name)


class RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler that resolves only allow-listed globals and never imports anything.

  Args:
    file: binary file object.
    extra_globals: `(module, name) -> object` added to the base allow-list (torch tensors and
      storages, numpy arrays and scalars, OrderedDict, set).
    persistent_load: handler for persistent ids (torch storages), or None to refuse them.
    source: file name for error messages.
  """

  def __init__(self, file: BinaryIO, extra_globals: Optional[dict] = None,
               persistent_load: Optional[Callable[[Any], Any]] = None, source: str = 'pickle'):
    super().__init__(file)
    self._globals = dict(_BASE_GLOBALS)
    self._globals.update(extra_globals or {})
    self._persistent_load = persistent_load
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    # Protocol < 3 pickles name Python 2 modules (`__builtin__ set`), as the stdlib maps them.
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[module, name]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in self._globals:
      return self._globals[module, name]
    raise UnsafePickleError(
        f'{self._source}: refusing to load global {module}.{name}: it is not on sg2jax\'s '
        f'allow-list of what StyleGAN2 network and weight files contain (a pickle that names '
        f'other globals may run code when loaded)')

  def persistent_load(self, pid: Any) -> Any:
    if self._persistent_load is None:
      raise pickle.UnpicklingError(f'{self._source}: unexpected persistent id {pid!r}')
    return self._persistent_load(pid)


def _storage_dtype(storage_type: Any, pid: Any) -> tuple[np.dtype, bool]:
  if not isinstance(storage_type, StorageType):
    raise pickle.UnpicklingError(f'unsupported storage type in persistent id {pid!r}')
  if storage_type.name == _BFLOAT16:
    return np.dtype('<u2'), True
  return np.dtype(STORAGE_DTYPES[storage_type.name]).newbyteorder('<'), False


class TorchReader:
  """Reads torch-serialized objects (zip, legacy, or embedded bytes) with tensors as numpy."""

  def __init__(self, extra_globals: Optional[dict] = None):
    self.extra_globals = dict(extra_globals or {})
    self.extra_globals[('torch.storage', '_load_from_bytes')] = self.load_bytes

  def unpickler(self, file: BinaryIO, persistent_load=None, source: str = 'pickle'):
    return RestrictedUnpickler(file, self.extra_globals, persistent_load, source)

  def load_bytes(self, data: bytes) -> Any:
    """`torch.storage._load_from_bytes`: a legacy (or zip) torch.save held in memory."""
    return self.load(io.BytesIO(bytes(data)), source='embedded torch storage')

  def load(self, file: Union[str, Path, BinaryIO], source: Optional[str] = None) -> Any:
    """Loads a `torch.save` file (zip or legacy format) with tensors as numpy arrays."""
    if isinstance(file, (str, Path)):
      source = source or str(file)
      with open(file, 'rb') as f:
        return self.load(io.BytesIO(f.read()), source)
    source = source or 'torch file'
    start = file.tell()
    head = file.read(4)
    file.seek(start)
    if head.startswith(b'PK'):
      return self._load_zip(file, source)
    return self._load_legacy(file, source)

  def _load_zip(self, file: BinaryIO, source: str) -> Any:
    with zipfile.ZipFile(file) as archive:
      pkl_names = [n for n in archive.namelist() if n.endswith('data.pkl')]
      if len(pkl_names) != 1:
        raise pickle.UnpicklingError(f'{source}: a torch zip file holds one data.pkl, '
                                     f'found {len(pkl_names)}')
      prefix = pkl_names[0][:-len('data.pkl')]
      storages: dict[str, Storage] = {}

      def persistent_load(pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
          raise pickle.UnpicklingError(f'{source}: unexpected persistent id {pid!r}')
        _, storage_type, key, _location, numel = pid[:5]
        if key not in storages:
          dtype, bf16 = _storage_dtype(storage_type, pid)
          raw = archive.read(f'{prefix}data/{key}')
          storages[key] = Storage(np.frombuffer(raw, dtype=dtype).copy(), bf16)
        return storages[key]

      with archive.open(pkl_names[0]) as f:
        return self.unpickler(io.BytesIO(f.read()), persistent_load, source).load()

  def _load_legacy(self, file: BinaryIO, source: str) -> Any:
    plain = lambda: self.unpickler(file, None, source).load()
    try:
      magic = plain()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
      raise pickle.UnpicklingError(f'{source}: not a torch file ({e})') from None
    if magic != LEGACY_MAGIC_NUMBER:
      raise pickle.UnpicklingError(f'{source}: not a torch file (bad magic number)')
    if plain() != LEGACY_PROTOCOL_VERSION:
      raise pickle.UnpicklingError(f'{source}: unsupported torch legacy protocol version')
    sys_info = plain()
    if isinstance(sys_info, dict) and not sys_info.get('little_endian', True):
      raise pickle.UnpicklingError(f'{source}: big-endian torch files are not supported')
    # The storages' bytes follow the object's pickle, but tensors are rebuilt while it is read.
    # Pass 1 reads the object with empty storages to learn each storage's dtype and find where
    # the data starts; pass 2 reads it again with the storages filled.
    object_start = file.tell()
    storages: dict[str, Storage] = {}

    def persistent_load(pid):
      if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
        raise pickle.UnpicklingError(f'{source}: unexpected persistent id {pid!r}')
      if len(pid) > 5 and pid[5] is not None:
        raise pickle.UnpicklingError(f'{source}: storage views are not supported')
      key = pid[2]
      if key not in storages:
        dtype, bf16 = _storage_dtype(pid[1], pid)
        storages[key] = Storage(None, bf16, dtype)
      return storages[key]

    self.unpickler(file, persistent_load, source).load()
    for key in plain():
      count_bytes = file.read(8)
      if len(count_bytes) != 8:
        raise pickle.UnpicklingError(f'{source}: truncated storage data')
      (count,) = struct.unpack('<q', count_bytes)
      if key not in storages:
        raise pickle.UnpicklingError(f'{source}: storage {key} is listed but never used')
      dtype = storages[key].dtype
      raw = file.read(count * dtype.itemsize)
      if len(raw) != count * dtype.itemsize:
        raise pickle.UnpicklingError(f'{source}: truncated storage data')
      storages[key].data = np.frombuffer(raw, dtype=dtype).copy()
    missing = sorted(k for k, v in storages.items() if v.data is None)
    if missing:
      raise pickle.UnpicklingError(f'{source}: storages {missing} have no data (truncated file?)')
    end = file.tell()
    file.seek(object_start)
    obj = self.unpickler(file, lambda pid: storages[pid[2]], source).load()
    file.seek(end)
    return obj
