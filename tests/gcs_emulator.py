"""A real Cloud Storage emulator for tests: `gcp-storage-emulator`'s server on 127.0.0.1.

The emulator lacks two behaviours of Cloud Storage that sg2jax and TensorStore rely on, which
`_add_generations` gives its object handlers: downloads carry the object's generation
(`x-goog-generation`, which TensorStore reads to version what it caches and rewrites), and
requests with `ifGenerationMatch` / `ifGenerationNotMatch` are answered 412 / 304 as Cloud
Storage answers them (the lock's "create only if absent" and TensorStore's conditional writes).

`Emulator.start()` serves a fresh in-memory bucket and points the standard variable
`STORAGE_EMULATOR_HOST` at it (sg2jax derives TensorStore's own variables from it; subprocesses
inherit it). The variables through which the Google clients find a metadata server are pointed at
a closed port on 127.0.0.1, so a credentials lookup that should not happen fails instead of
leaving the machine; and every connection made from Python in this process is recorded, so a
test can assert that none went anywhere but 127.0.0.1 (`outside()`).
"""

import os
import socket
import sys
import threading

from http import HTTPStatus

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.server import create_server

BUCKET = 'sg2jax-test'
# A closed port: a metadata request fails fast, on this machine.
_NOWHERE = '127.0.0.1:9'
_METADATA_VARIABLES = {'GCE_METADATA_HOST': _NOWHERE, 'GCE_METADATA_IP': _NOWHERE,
                       'GCE_METADATA_ROOT': _NOWHERE, 'NO_GCE_CHECK': 'True'}

_connections: list = []
_hooked = threading.Lock()
_hook_installed = False


def _audit(event: str, args) -> None:
  if event == 'socket.connect':
    address = args[1]
    if isinstance(address, tuple):
      _connections.append(address[:2])


def _object_name(request) -> str:
  if 'object_id' in request.params:
    return request.params['object_id']
  if 'name' in request.query:
    return request.query['name'][0]
  data = request.data
  return data['meta'].get('name', '') if isinstance(data, dict) and 'meta' in data else ''


def _generation(storage, bucket: str, name: str) -> str:
  """The object's generation; '0' when there is none (Cloud Storage's "does not exist")."""
  try:
    return str(storage.get_file_obj(bucket, name)['generation'])
  except NotFound:
    return '0'


def _conditional(handler, download: bool = False):
  def handle(request, response, storage, *args, **kwargs):
    bucket, name = request.params.get('bucket_name'), _object_name(request)
    query = request.query
    if name and ('ifGenerationMatch' in query or 'ifGenerationNotMatch' in query):
      current = _generation(storage, bucket, name)
      if 'ifGenerationMatch' in query and query['ifGenerationMatch'][0] != current:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return None
      if 'ifGenerationNotMatch' in query and query['ifGenerationNotMatch'][0] == current:
        response.status = HTTPStatus.NOT_MODIFIED
        response['x-goog-generation'] = current
        return None
    result = handler(request, response, storage, *args, **kwargs)
    if download and name and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      response['x-goog-generation'] = _generation(storage, bucket, name)
    return result
  handle.sg2jax_conditional = True
  return handle


def _add_generations() -> None:
  """Wraps the emulator's object handlers (once per process; see the module docstring)."""
  for _, handlers in emulator_server.HANDLERS:
    for method, handler in list(handlers.items()):
      if getattr(handler, 'sg2jax_conditional', False):
        continue
      if handler in (objects.download, objects.get):
        handlers[method] = _conditional(handler, download=handler is objects.download)
      elif handler in (objects.insert, objects.delete):
        handlers[method] = _conditional(handler)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Emulator:
  """One emulator server with one bucket; `url` is its address, `gs(path)` a path in it."""

  def __init__(self, bucket: str = BUCKET):
    self.bucket, self.port = bucket, free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    self._server = None
    self._saved: dict = {}

  def start(self) -> 'Emulator':
    global _hook_installed
    with _hooked:
      if not _hook_installed:  # audit hooks cannot be removed: one for the session
        sys.addaudithook(_audit)
        _add_generations()
        _hook_installed = True
    self._server = create_server('127.0.0.1', self.port, in_memory=True,
                                 default_bucket=self.bucket)
    self._server.start()
    settings = {'STORAGE_EMULATOR_HOST': self.url, **_METADATA_VARIABLES}
    self._saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    return self

  def stop(self) -> None:
    for key, value in self._saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    self._server.stop()

  def gs(self, path: str = '') -> str:
    return f'gs://{self.bucket}/{path}'

  def objects(self, prefix: str = '') -> list[str]:
    """Names of the bucket's objects under `prefix` (read with sg2jax's own client)."""
    from sg2jax import storage
    fs = storage.filesystem()
    fs.invalidate_cache()
    root = f'{self.bucket}/{prefix}'.rstrip('/')
    return sorted(p[len(self.bucket) + 1:] for p in fs.find(root))


def outside() -> list:
  """Addresses this process connected to that are not on 127.0.0.1 (should be none)."""
  return sorted({a for a in _connections if a[0] not in ('127.0.0.1', 'localhost')})
