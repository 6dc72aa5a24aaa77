"""Where sg2jax reads and writes: local paths and Cloud Storage (`gs://bucket/path`), one layer.

Every path a user gives (workdir, dataset, network, output) goes through `as_path`: a local path
stays a `pathlib.Path` (behaving exactly as before), a `gs://` one becomes an `etils.epath.Path`,
the path type orbax itself uses, so checkpoints, sample grids, configs and datasets share one
client. epath is told to reach Cloud Storage through fsspec/gcsfs, not TensorFlow's gfile: gfile
has its own HTTP client with fixed Google endpoints, so it can neither be tested against an
emulator nor share credentials handling with the rest; gcsfs follows the standard
`STORAGE_EMULATOR_HOST`. Checkpoint arrays go from orbax to TensorStore, which has its own
variables: `configure` sets them from `STORAGE_EMULATOR_HOST`, in this one place.

Object storage has no rename and no append, and an object is only visible once its upload is
complete: whole files are written in one upload (`write_bytes`, `append_text` reads and
rewrites), so a reader never sees half of one.
"""

import io
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional, Union

from etils import epath

GS = 'gs://'
AnyPath = Union[Path, epath.Path]
# What a user may pass: a str, a pathlib.Path or an epath.Path.
PathLike = Union[str, os.PathLike]

_configured = None  # the STORAGE_EMULATOR_HOST `configure` last saw


def is_remote(path: PathLike) -> bool:
  """True for a Cloud Storage path (`gs://...`)."""
  return os.fspath(path).startswith(GS)


def configure() -> None:
  """Sets the variables the storage clients read, before any of them is used (idempotent).

  - epath uses fsspec/gcsfs for `gs://` (see the module docstring), and gcsfs skips its probe
    for zonal buckets (a gRPC call to Google, which waits a minute when Google is out of reach).
  - With `STORAGE_EMULATOR_HOST` (an emulator, or a proxy), TensorStore is pointed at the same
    address and given a fixed token, and gcsfs goes anonymous: nothing looks for credentials,
    so nothing asks a metadata server.
  """
  global _configured
  emulator = os.environ.get('STORAGE_EMULATOR_HOST', '')
  if _configured == emulator:
    return
  if _configured is not None:  # another emulator (tests): forget clients made for the last one
    from etils.epath import backend
    backend.fsspec_backend._get_filesystem.cache_clear()
    if 'gcsfs' in sys.modules:
      sys.modules['gcsfs'].GCSFileSystem.clear_instance_cache()
  _configured = emulator
  os.environ.setdefault('EPATH_USE_TF', 'false')
  # epath caches its "use TensorFlow?" answer the first time any path (a local one too) picks a
  # backend: ask again now that the variable is set.
  from etils.epath import gpath
  gpath._is_tf_installed.cache_clear()
  os.environ.setdefault('GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT', 'false')
  import fsspec
  options = fsspec.config.conf.setdefault('gs', {})
  # Listings are not cached: other hosts and TensorStore write the same workdir.
  options['use_listings_cache'] = False
  if emulator:
    url = emulator if emulator.startswith(('http://', 'https://')) else f'http://{emulator}'
    os.environ['TENSORSTORE_GCS_HTTP_URL'] = url.rstrip('/')
    os.environ.setdefault('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'emulator')
    options['token'] = 'anon'
  else:
    options.pop('token', None)


def as_path(path: PathLike) -> AnyPath:
  """`gs://...` -> `epath.Path` (storage configured first); anything else -> `pathlib.Path`."""
  if isinstance(path, epath.Path) and not is_remote(path):
    return Path(os.fspath(path))
  if is_remote(path):
    configure()
    return epath.Path(os.fspath(path))
  return Path(path)


def absolute(path: PathLike) -> AnyPath:
  """The absolute path (a `gs://` path already is)."""
  path = as_path(path)
  return path if is_remote(path) else path.absolute()


def filesystem():
  """The gcsfs file system epath uses (for what epath does not offer: preconditions)."""
  configure()
  from etils.epath import backend
  return backend.fsspec_backend.fs(GS)


def open_read(path: PathLike, block_size: int = 1 << 22):
  """A binary file for reading; on Cloud Storage one that fetches byte ranges as they are read
  (a read-ahead block at a time: zips and pickles are read in many small pieces). gcsfs's
  default cache starts a background prefetcher, which hung on such reads here."""
  path = as_path(path)
  if not is_remote(path):
    return path.open('rb')
  return filesystem().open(os.fspath(path), 'rb', cache_type='readahead',
                           block_size=block_size)


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes a whole file so that no reader sees part of it: locally through a temporary file
  renamed over `path`; on Cloud Storage in one upload (an object appears only when complete)."""
  path = as_path(path)
  if is_remote(path):
    path.write_bytes(data)
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
  try:
    tmp.write_bytes(data)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def write_text(path: PathLike, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(path, text.encode())


def append_text(path: PathLike, text: str) -> None:
  """Appends `text`: locally in place; on Cloud Storage by rewriting the object (no append
  there), whole, so a reader sees the old or the new content. One writer at a time."""
  path = as_path(path)
  if not is_remote(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('a') as f:
      f.write(text)
    return
  old = path.read_bytes() if path.exists() else b''
  path.write_bytes(old + text.encode())


def save_npz(path: PathLike, arrays: dict) -> None:
  """`np.savez` to any path, written whole (`write_bytes`)."""
  import numpy as np
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_bytes(path, buffer.getvalue())


def size_and_mtime(path: PathLike) -> tuple[int, int]:
  """`(bytes, modification time in ns)`: what identifies a file's version for caches."""
  path = as_path(path)
  if not is_remote(path):
    st = path.stat()
    return st.st_size, st.st_mtime_ns
  st = path.stat()
  return int(st.length), int(st.mtime * 1e9)


def remove_tree(path: PathLike) -> None:
  """Removes a file or folder (and everything under it) if it exists."""
  path = as_path(path)
  if is_remote(path):
    if path.exists():
      path.rmtree() if path.is_dir() else path.unlink()
    return
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path)
  elif path.exists() or path.is_symlink():
    path.unlink()


def _objects(path: PathLike) -> list[str]:
  """`bucket/key` of every object under a `gs://` folder path."""
  return filesystem().find(os.fspath(path)[len(GS):].rstrip('/') + '/')


def remote_files(folder: PathLike) -> list[str]:
  """Names (relative, '/'-separated) of every object under a `gs://` folder, in one listing
  (epath refuses recursive globs on Cloud Storage)."""
  prefix = os.fspath(folder)[len(GS):].rstrip('/') + '/'
  return [name[len(prefix):] for name in _objects(folder)]


def copy_tree(source: PathLike, target: PathLike) -> None:
  """Copies every object under `source` to the same names under `target` (server-side
  copies; the objects are only listed, never downloaded)."""
  fs = filesystem()
  prefix = os.fspath(source)[len(GS):].rstrip('/') + '/'
  destination = os.fspath(target)[len(GS):].rstrip('/') + '/'
  for name in _objects(source):
    fs.cp_file(name, destination + name[len(prefix):])


def move_tree(source: PathLike, target: PathLike) -> None:
  """Renames a folder: locally a rename; on Cloud Storage, which has no rename, every object is
  copied, then the originals are deleted, so a crash in between leaves `source` whole."""
  if not is_remote(source):
    as_path(source).rename(as_path(target))
    return
  copy_tree(source, target)
  filesystem().rm(_objects(source))


def upload(local: Path, remote: PathLike) -> None:
  """Copies a local file or folder to `remote` (each file one upload)."""
  remote = as_path(remote)
  if local.is_dir():
    for file in sorted(p for p in local.rglob('*') if p.is_file()):
      upload(file, remote / str(file.relative_to(local)).replace(os.sep, '/'))
    return
  filesystem().put_file(str(local), os.fspath(remote))


class LocalStaging:
  """A local folder standing in for `target` while a tool writes files a library insists on
  writing itself (TensorFlow, zip writers): `target` itself when it is local, else a temporary
  folder whose files `commit()` uploads (and the folder is removed on `close()`)."""

  def __init__(self, target: PathLike, prefix: str = 'sg2jax-'):
    self.target = as_path(target)
    self.remote = is_remote(self.target)
    self.local = Path(tempfile.mkdtemp(prefix=prefix)) if self.remote else self.target

  def commit(self) -> None:
    if self.remote:
      upload(self.local, self.target)

  def close(self) -> None:
    if self.remote:
      shutil.rmtree(self.local, ignore_errors=True)


def metric_writer(logdir: PathLike, just_logging: bool = False, asynchronous: bool = True,
                  upload_every_secs: float = 60.0):
  """clu's default writer (TensorBoard event files + log lines) for `logdir`.

  TensorFlow writes the event files, and its own Cloud Storage client cannot be pointed at an
  emulator or share gcsfs's settings; for a `gs://` logdir the files are written in a local
  folder and uploaded whole (`_MirroredWriter`): at most every `upload_every_secs`, at `flush()`
  and at `close()`. TensorBoard reads the bucket directly (`tensorboard --logdir gs://...`).
  """
  from clu import metric_writers  # imports TensorFlow: only when writing
  if just_logging or not is_remote(logdir):
    return metric_writers.create_default_writer(logdir, just_logging=just_logging,
                                                asynchronous=asynchronous)
  return _MirroredWriter(logdir, asynchronous, upload_every_secs)


class _MirroredWriter:
  """A clu writer on a local staging folder whose files are uploaded to a `gs://` logdir."""

  def __init__(self, logdir: PathLike, asynchronous: bool, upload_every_secs: float):
    from clu import metric_writers
    self._staging = LocalStaging(logdir, prefix='sg2jax-events-')
    self._writer = metric_writers.create_default_writer(
        str(self._staging.local), asynchronous=asynchronous)
    self._every, self._last = upload_every_secs, time.monotonic()

  def __getattr__(self, name):  # write_images, write_hparams, ...: the local writer's
    return getattr(self._writer, name)

  def write_scalars(self, step, scalars) -> None:
    self._writer.write_scalars(step, scalars)
    if time.monotonic() - self._last >= self._every:
      self.flush()

  def flush(self) -> None:
    self._writer.flush()
    self._staging.commit()
    self._last = time.monotonic()

  def close(self) -> None:
    self._writer.close()
    self._staging.commit()
    self._staging.close()


def bucket_of(path: PathLike) -> str:
  return os.fspath(path)[len(GS):].split('/', 1)[0]


def cloud_error_line(error: BaseException, path: PathLike = '') -> Optional[str]:
  """What to do about a Cloud Storage error, in one line; None if `error` is not one of the
  errors a user fixes outside sg2jax (credentials, permission, a missing bucket)."""
  text = f'{type(error).__name__}: {error}'
  bucket = f'gs://{bucket_of(path)}' if path and is_remote(path) else 'the bucket'
  if 'DefaultCredentialsError' in text or 'RefreshError' in text or '401' in text.split(':')[0]:
    return (f'no Google Cloud credentials to reach {bucket}: run `gcloud auth application-default '
            f'login` (on a Cloud TPU VM its service account is used), or set '
            f'GOOGLE_APPLICATION_CREDENTIALS to a service-account key file')
  if 'Forbidden' in text or 'PERMISSION_DENIED' in text or ' 403' in text:
    return (f'no permission for {bucket}: give the account (`gcloud auth list`; on a TPU VM its '
            f'service account) the role roles/storage.objectAdmin on it: `gcloud storage buckets '
            f'add-iam-policy-binding {bucket} --member=serviceAccount:ACCOUNT '
            f'--role=roles/storage.objectAdmin`')
  return None


def require_bucket(path: PathLike) -> None:
  """Checks that the bucket of a `gs://` path exists and can be read, before anything is
  written, so that the error is one line saying what to do (nothing for a local path)."""
  if not is_remote(path):
    return
  bucket = bucket_of(path)
  fs = filesystem()
  try:
    # Listing needs only storage.objects.list (in the object roles), reading the bucket's
    # own metadata would need storage.buckets.get.
    fs.call('GET', f'{fs._location}/storage/v1/b/{bucket}/o', maxResults=1, json_out=True)
  except FileNotFoundError:
    raise FileNotFoundError(
        f'bucket gs://{bucket} does not exist: create it with `gcloud storage buckets create '
        f'gs://{bucket} --location=REGION` (the region of the TPUs), or fix the path') from None
  except Exception as e:
    line = cloud_error_line(e, path)
    if line is None:
      raise
    raise PermissionError(line) from None
