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

A file can only make its reader allocate memory in proportion to its own size (`AllocationBudget`):
every length a pickle opcode declares is checked against the bytes that follow it before the
unpickler runs (CPython allocates a `BINBYTES8` object of the declared size before reading it),
and every storage, tensor and array is charged against `ALLOCATION_FACTOR` times the file's size
(plus `ALLOCATION_SLACK`) before it is allocated. A crafted or corrupt file that claims more is
refused with `AllocationError` instead of allocating gigabytes or dying in a MemoryError.
"""

import _compat_pickle
import functools
import io
import math
import pickle
import pickletools
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

# What reading a file may allocate in all (storages, tensors, arrays): this many times the file's
# size, plus ALLOCATION_SLACK. Real files need about 2x (each storage, then the tensors copied out
# of it) and 3x with bfloat16 storages (tensors widened to float32).
ALLOCATION_FACTOR = 4
ALLOCATION_SLACK = 16 << 20


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global outside the allow-list."""


class AllocationError(pickle.UnpicklingError):
  """The file claims more data than it holds (corrupt or crafted): refused before allocating."""


class AllocationBudget:
  """The bytes a file may make its reader allocate: `ALLOCATION_FACTOR x size + ALLOCATION_SLACK`.

  Args:
    file_bytes: the size of the file (or of the bytes) being read.
    source: the file's name, for messages.
  """

  def __init__(self, file_bytes: int, source: str):
    self.file_bytes = int(file_bytes)
    self.limit = ALLOCATION_FACTOR * self.file_bytes + ALLOCATION_SLACK
    self.used = 0
    self.source = source

  def charge(self, nbytes: int, what: str) -> None:
    """Counts `nbytes` about to be allocated for `what`; AllocationError past the limit."""
    nbytes = int(nbytes)
    if nbytes < 0 or self.used + nbytes > self.limit:
      raise AllocationError(
          f'{self.source}: {what} claims {nbytes:,} bytes, more than a file of '
          f'{self.file_bytes:,} bytes can hold (corrupt or crafted file); refusing to allocate it')
    self.used += nbytes


def _file_size(file: BinaryIO) -> int:
  """Bytes from the current position to the end of a seekable file."""
  start = file.tell()
  end = file.seek(0, io.SEEK_END)
  file.seek(start)
  return end - start


class _Bounded:
  """A read-only view of a file whose `read(n)` never asks for more than is left, so scanning a
  length that a pickle claims allocates at most what the file holds."""

  def __init__(self, file: BinaryIO):
    self.file = file
    self.end = file.tell() + _file_size(file)

  def read(self, n: int = -1) -> bytes:
    left = self.end - self.file.tell()
    return self.file.read(left if n is None or n < 0 else min(n, left))

  def readline(self) -> bytes:
    return self.file.readline()

  def tell(self) -> int:
    return self.file.tell()


def check_declared_lengths(file: BinaryIO, source: str) -> None:
  """Walks one pickle's opcodes (from the file's position to STOP; the position is restored) and
  raises AllocationError if one declares more bytes than follow it or the pickle is cut short.

  CPython's unpickler allocates a `BINBYTES8` / `BYTEARRAY8` object of the declared size before
  reading it, so a 20-byte pickle can ask for gigabytes; this check runs first.
  """
  start = file.tell()
  try:
    for _ in pickletools.genops(_Bounded(file)):
      pass
  except ValueError as e:  # pickletools: a length past the end, an unknown opcode, no STOP
    raise AllocationError(f'{source}: not a complete pickle ({e})') from None
  finally:
    file.seek(start)


def _count(shape: Any, what: str, budget: AllocationBudget) -> tuple[int, ...]:
  """A shape as non-negative ints (its product is what gets allocated)."""
  try:
    shape = tuple(int(n) for n in shape)
  except (TypeError, ValueError):
    raise pickle.UnpicklingError(f'{budget.source}: {what} has a malformed shape '
                                 f'{shape!r}') from None
  if any(n < 0 for n in shape):
    raise pickle.UnpicklingError(f'{budget.source}: {what} has a negative size {shape}')
  return shape


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
                    *unused: Any, budget: AllocationBudget) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)`.

  The tensor is copied out of its storage after its bytes are charged to `budget` (a tensor
  with zero strides can claim any number of elements of a one-element storage).
  """
  if not isinstance(storage, Storage):
    raise pickle.UnpicklingError('tensor without a storage: not a torch-serialized tensor')
  data = storage.data
  if data is None:
    return None  # first pass over a legacy file: the bytes are not read yet
  size, stride = _count(size, 'a tensor', budget), _count(stride, 'a tensor\'s stride', budget)
  storage_offset = int(storage_offset)
  if len(size) != len(stride) or storage_offset < 0:
    raise pickle.UnpicklingError(f'{budget.source}: malformed tensor (size {size}, stride '
                                 f'{stride}, offset {storage_offset})')
  widened = 4 if storage.bfloat16 else data.dtype.itemsize
  budget.charge(math.prod(size) * widened, f'a tensor of size {list(size)}')
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


class _NdarrayClass:
  """What the global `numpy.ndarray` resolves to: a marker for `_reconstruct`, not the class, so a
  pickle cannot call `numpy.ndarray(shape)` to allocate an array of any size."""


_NDARRAY = _NdarrayClass()


def _numpy_reconstruct(subtype: Any, shape: Any, dtype_code: Any, *,
                       budget: AllocationBudget) -> np.ndarray:
  """`numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`; the state comes via BUILD."""
  if subtype is not _NDARRAY:
    raise UnsafePickleError('refusing a numpy array subclass')
  shape = _count(shape if isinstance(shape, (tuple, list)) else (shape,), 'a numpy array', budget)
  dtype = np.dtype(dtype_code)
  if dtype.hasobject:
    raise UnsafePickleError('refusing a numpy array of object dtype')
  budget.charge(math.prod(shape) * dtype.itemsize, f'a numpy array of shape {list(shape)}')
  return np.ndarray.__new__(np.ndarray, shape, dtype)


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
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('numpy', 'dtype'): np.dtype,
    ('numpy', 'ndarray'): _NDARRAY,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
}
for _name in list(STORAGE_DTYPES) + [_BFLOAT16]:
  _BASE_GLOBALS[('torch', _name)] = StorageType(_name)
# Globals that allocate: bound to the unpickler's AllocationBudget.
_ALLOCATING_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('numpy.core.multiarray', '_reconstruct'): _numpy_reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _numpy_reconstruct,
}


class RestrictedUnpickler(pickle.Unpickler):
  """An Unpickler that resolves only allow-listed globals and never imports anything, and
  allocates only in proportion to the file's size.

  Args:
    file: binary file object (seekable: its opcodes are checked before it is read).
    extra_globals: `(module, name) -> object` added to the base allow-list (torch tensors and
      storages, numpy arrays and scalars, OrderedDict, set).
    persistent_load: handler for persistent ids (torch storages), or None to refuse them.
    source: file name for error messages.
    budget: what the file may allocate; None for one made from the file's remaining size.
  """

  def __init__(self, file: BinaryIO, extra_globals: Optional[dict] = None,
               persistent_load: Optional[Callable[[Any], Any]] = None, source: str = 'pickle',
               budget: Optional[AllocationBudget] = None):
    super().__init__(file)
    self._file = file
    self.budget = budget if budget is not None else AllocationBudget(_file_size(file), source)
    self._globals = dict(_BASE_GLOBALS)
    self._globals.update({key: functools.partial(fn, budget=self.budget)
                          for key, fn in _ALLOCATING_GLOBALS.items()})
    self._globals.update(extra_globals or {})
    self._persistent_load = persistent_load
    self._source = source

  def load(self) -> Any:
    """Checks the declared lengths of the next pickle in the file, then unpickles it."""
    check_declared_lengths(self._file, self._source)
    return super().load()

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


class _TorchUnpickler(RestrictedUnpickler):
  """A RestrictedUnpickler whose budget is its reader's while it runs (so the torch storages
  embedded in the pickle are charged to the outer file)."""

  def __init__(self, reader: 'TorchReader', *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.reader = reader

  def load(self) -> Any:
    previous, self.reader.budget = self.reader.budget, self.budget
    try:
      return super().load()
    finally:
      self.reader.budget = previous


class TorchReader:
  """Reads torch-serialized objects (zip, legacy, or embedded bytes) with tensors as numpy.

  Everything read during one top-level `load` (or one `unpickler(...).load()`), embedded storages
  included, is charged to one `AllocationBudget` made from the outer file's size.
  """

  def __init__(self, extra_globals: Optional[dict] = None):
    self.extra_globals = dict(extra_globals or {})
    self.extra_globals[('torch.storage', '_load_from_bytes')] = self.load_bytes
    self.budget: Optional[AllocationBudget] = None  # the running load's

  def unpickler(self, file: BinaryIO, persistent_load=None, source: str = 'pickle'):
    return _TorchUnpickler(self, file, self.extra_globals, persistent_load, source, self.budget)

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
    previous = self.budget
    if self.budget is None:
      self.budget = AllocationBudget(_file_size(file), source)
    try:
      start = file.tell()
      head = file.read(4)
      file.seek(start)
      if head.startswith(b'PK'):
        return self._load_zip(file, source)
      return self._load_legacy(file, source)
    finally:
      self.budget = previous

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
          name = f'{prefix}data/{key}'
          self.budget.charge(archive.getinfo(name).file_size, f'storage {name}')
          raw = archive.read(name)
          storages[key] = Storage(np.frombuffer(raw, dtype=dtype).copy(), bf16)
        return storages[key]

      self.budget.charge(archive.getinfo(pkl_names[0]).file_size, pkl_names[0])
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
      self.budget.charge(count * dtype.itemsize, f'storage {key} of {count:,} elements')
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
