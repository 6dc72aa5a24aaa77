"""Test setup (before jax starts its backend; subprocesses inherit it through the environment):
- JAX on the CPU only, and libtpu (installed for `sg2jax.aot`'s compile-only TPU devices) kept
  off the network: without `JAX_PLATFORMS=cpu` JAX would start libtpu as a backend, and libtpu
  asks the cloud metadata server which TPU it runs on unless `TPU_SKIP_MDS_QUERY=1`;
- sg2jax's own XLA flags (`sg2jax.cli.add_xla_flags`), as every sg2jax command sets them;
- 4 forced host CPU devices, for the sharding tests;
- XLA backend optimization level 0: tests run tiny networks, where compiling dominates;
- a persistent compilation cache for this session, so identical programs built by different
  tests or subprocesses compile once.
"""

import atexit
import os
import shutil
import sys
import tempfile
import types

# `benchmarks/` builds some of what the tests check (the phases as the benchmarks time them);
# `pytest` (unlike `python -m pytest`) does not put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ['TPU_SKIP_MDS_QUERY'] = '1'
os.environ['TPU_WORKER_HOSTNAMES'] = 'localhost'
os.environ['ALLOW_MULTIPLE_LIBTPU_LOAD'] = '1'  # test workers compile for TPUs side by side
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4'
                           ' --xla_backend_optimization_level=0').strip()
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='sg2jax-test-jit-')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
# jax reads the JAX_* variables when it is imported: set them first.
from sg2jax.cli import add_xla_flags  # noqa: E402  (imports jax; its backend starts later)

add_xla_flags()

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

jax.config.update('jax_threefry_partitionable', True)


import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sg2jax.networks import weights  # noqa: E402


@pytest.fixture(scope='session')
def random_variables():
  """`make(network, seed)`: variables with N(0, 1) values in the network's tree (affine biases 1),
  `sg2jax.networks.weights.random_variables`: tests that only need *some* weights skip compiling
  the network's initializer."""
  return weights.random_variables


@pytest.fixture
def fake_tf_network(monkeypatch):
  """Registers `dnnlib.tflib.network.Network` so a test can write a real-format TF pickle."""
  module = types.ModuleType('dnnlib.tflib.network')

  class Network:
    def __init__(self, state):
      self.state = state

    def __getstate__(self):
      return self.state

    def __setstate__(self, state):
      self.state = state

  Network.__module__ = 'dnnlib.tflib.network'
  Network.__qualname__ = 'Network'
  module.Network = Network
  for name in ('dnnlib', 'dnnlib.tflib'):
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
  monkeypatch.setitem(sys.modules, 'dnnlib.tflib.network', module)
  return Network


@pytest.fixture
def fake_persistence(monkeypatch):
  """Registers `torch_utils.persistence._reconstruct_persistent_obj` so tests can write
  ADA-format pickles without ADA; returns a factory of picklable persistent objects."""
  module = types.ModuleType('torch_utils.persistence')

  def _reconstruct_persistent_obj(meta):
    raise AssertionError('never called when writing')

  _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
  _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
  module._reconstruct_persistent_obj = _reconstruct_persistent_obj
  monkeypatch.setitem(sys.modules, 'torch_utils', types.ModuleType('torch_utils'))
  monkeypatch.setitem(sys.modules, 'torch_utils.persistence', module)

  class Persistent:
    def __init__(self, class_name, state, module_src=''):
      self.meta = dict(type='class', version=6, module_src=module_src, class_name=class_name,
                       state=state)

    def __reduce__(self):
      return (_reconstruct_persistent_obj, (self.meta,))

  return Persistent


_IMAGES_BEFORE = pytest.StashKey[int]()


def pytest_runtest_setup(item):
  import pixels
  item.stash[_IMAGES_BEFORE] = len(pixels.RECORDS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  """Image comparisons a test made (tests/pixels.py) travel with its report (also from xdist
  workers) as the user property `image_comparison`."""
  import pixels
  outcome = yield
  if call.when == 'call':
    before = item.stash.get(_IMAGES_BEFORE, len(pixels.RECORDS))
    outcome.get_result().user_properties.extend(
        ('image_comparison', r) for r in pixels.RECORDS[before:])


def pytest_terminal_summary(terminalreporter):
  """The worst difference between images that two programs computed (tests/pixels.py)."""
  from pixels import summary
  records = [tuple(value) for reports in terminalreporter.stats.values() for report in reports
             for name, value in getattr(report, 'user_properties', ())
             if name == 'image_comparison']
  line = summary(records)
  if line:
    terminalreporter.write_line(line)


@pytest.fixture(scope='session')
def explore_server(tmp_path_factory):
  """`python -m sg2jax.explore`'s server on a free loopback port, in a thread: the tiny ADA
  snapshot (copied, so GANSpace caches land beside the copy) and a folder with one projected w.
  Yields `(server, base_url)`; shared by the explorer's tests, so each view compiles once."""
  import shutil
  import threading
  from sg2jax.cli import configure_jax
  from sg2jax.explore.server import make_server
  # As `python -m sg2jax.explore` (and `generate`, which tests call in-process) sets it: jit
  # caches depend on the matmul precision, so a later change would compile every view again.
  configure_jax('highest')
  from goldens import DATA
  root = tmp_path_factory.mktemp('explore')
  network = root / 'net.pkl'
  shutil.copy(DATA / 'ada_snapshot_tiny.pkl', network)
  projected = root / 'projected' / 'shape0'
  projected.mkdir(parents=True)
  w = np.random.RandomState(1).randn(1, 8, 32).astype(np.float32) * 0.5
  np.savez(projected / 'projected_w.npz', w=w)
  server = make_server(str(network), '127.0.0.1', 0, str(root / 'projected'),
                       ganspace_samples=64)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server, f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()
