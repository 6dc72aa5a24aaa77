"""What every command-line entry point does first (the only place jax.config is touched), and
how every command reports bad input: one line, no traceback (`--debug` shows the traceback)."""

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax
import ml_collections
from absl import logging as absl_logging

from sg2jax.formats.torch_pickle import UnsafePickleError

# Errors that mean "bad input": printed as one line, without a traceback (unless --debug).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, UnsafePickleError)
DEBUG_FLAG = '--debug'
DEBUG_HELP = 'show the full traceback of an error instead of one line'

# XLA flags with which sg2jax's programs run fastest on XLA:CPU (jaxlib 0.10.2; README "Training
# speed"): convolutions go to XLA's Eigen kernels instead of YNNPACK, which ran stride-2
# convolutions 2x and weight gradients 4-5x slower; matrix products stay on YNNPACK. The flag
# concerns only the CPU backend.
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=individual_dot',)

COMPILE_CACHE_ENV = 'SG2JAX_COMPILE_CACHE'


def add_xla_flags(flags: Sequence[str] = CPU_XLA_FLAGS) -> str:
  """Appends `flags` to the `XLA_FLAGS` environment variable, except a flag the user already set
  there (the user's value wins). XLA reads the variable once, when the first backend starts, so
  this must run before anything runs on a device. Returns the new `XLA_FLAGS`."""
  current = os.environ.get('XLA_FLAGS', '').split()
  names = {flag.split('=', 1)[0] for flag in current}
  added = [flag for flag in flags if flag.split('=', 1)[0] not in names]
  os.environ['XLA_FLAGS'] = ' '.join(current + added)
  return os.environ['XLA_FLAGS']


def default_compile_cache() -> Path:
  """`$XDG_CACHE_HOME/sg2jax/jax` (`~/.cache/sg2jax/jax`)."""
  root = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
  return Path(root) / 'sg2jax' / 'jax'


def compile_cache_dir(setting: Optional[str] = 'auto') -> Optional[Path]:
  """Where compiled programs persist between runs, or None for nowhere.

  `setting`: a directory; `'none'` or `''` to turn the cache off; `'auto'` for the
  `SG2JAX_COMPILE_CACHE` environment variable (a directory, or `none`), else JAX's own
  `JAX_COMPILATION_CACHE_DIR`, else `default_compile_cache()`.
  """
  setting = 'none' if setting is None else str(setting).strip()
  if setting == 'auto':
    setting = os.environ.get(COMPILE_CACHE_ENV, '').strip() or 'auto'
  if setting == 'auto':
    jax_dir = os.environ.get('JAX_COMPILATION_CACHE_DIR', '').strip()
    return Path(jax_dir) if jax_dir else default_compile_cache()
  if setting.lower() in ('', 'none', 'off', 'false'):
    return None
  return Path(setting).expanduser()


def configure_jax(precision: str = 'highest', compile_cache: Optional[str] = 'auto') -> None:
  """sg2jax's XLA flags, threefry keys that stay local under sharding, the matmul/conv
  precision and the persistent compilation cache.

  'highest' keeps float32 convolutions exact on GPUs (no TF32) and TPUs (no single bf16 pass),
  so tools reproduce the official images; 'default' lets the backend trade precision for speed.
  With a compilation cache, a second start of the same program loads it instead of compiling
  (`compile_cache_dir` says where; every program is cached, however fast it compiled).
  """
  add_xla_flags()
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.update('jax_default_matmul_precision', precision)
  directory = compile_cache_dir(compile_cache)
  jax.config.update('jax_compilation_cache_dir', None if directory is None else str(directory))
  if directory is not None:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def error_line(error: BaseException) -> str:
  """`error: <message>` on one line (a message's own line breaks become spaces)."""
  text = ' '.join(line.strip() for line in str(error).splitlines() if line.strip())
  return f'error: {text or type(error).__name__}'


def run(main: Callable[[], Optional[int]], argv: Optional[Sequence[str]] = None) -> None:
  """Runs a command's `main` and exits with its status, turning bad input (`USER_ERRORS`) and
  running out of memory into a one-line message and exit status 1.

  With `--debug` among the arguments (`argv`, default `sys.argv[1:]`; each command's parser
  accepts the flag through `add_debug_flag`), errors propagate with their traceback.
  """
  debug = DEBUG_FLAG in (sys.argv[1:] if argv is None else argv)
  try:
    status = main()
  except USER_ERRORS as e:
    if debug:
      raise
    sys.exit(error_line(e))
  except MemoryError as e:
    if debug:
      raise
    sys.exit(f'error: out of memory ({str(e) or "MemoryError"}); use smaller inputs or batches, '
             f'or a machine with more memory ({DEBUG_FLAG} shows where)')
  except Exception as e:  # Cloud Storage: credentials, permission
    from sg2jax.storage import cloud_error_line
    line = None if debug else cloud_error_line(e)
    if line is None:
      raise
    sys.exit(f'error: {line}')
  sys.exit(status)


def quiet_library_logs() -> Callable[[logging.LogRecord], bool]:
  """Keeps absl's log (where training reports) to sg2jax's own lines.

  Other libraries' INFO lines are dropped (orbax logs every stage of every checkpoint save, jax
  its backend probing, clu each scalar already in sg2jax's tick line); warnings and errors from
  anyone stay. TensorFlow's C++ INFO lines (TensorFlow comes with clu's TensorBoard writer) are
  turned off through `TF_CPP_MIN_LOG_LEVEL=1` unless the variable is set; this must run before
  TensorFlow is imported. Returns the filter added to absl's handler.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  package = str(Path(__file__).parent) + os.sep

  def keep(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.pathname.startswith(package)

  absl_logging.get_absl_handler().addFilter(keep)
  return keep


def add_debug_flag(parser) -> None:
  """Adds `--debug` (read by `run`) to an argparse parser, so `--help` lists it."""
  parser.add_argument(DEBUG_FLAG, action='store_true', help=DEBUG_HELP)


def output_dir(path: str | Path, flag: str = '--outdir') -> Path:
  """Creates the output folder `path` (and its parents) and returns it.

  Raises:
    ValueError: `path`, or a folder above it, is an existing file (one line naming it).
  """
  from sg2jax import storage
  if storage.is_remote(path):  # a bucket has no folders to create; objects make them
    storage.require_bucket(path)
    return storage.as_path(path)
  path = Path(path)
  for part in (path, *path.parents):
    if part.exists() and not part.is_dir():
      what = f'{flag} {path}' if part == path else f'{part} (above {flag} {path})'
      raise ValueError(f'{what} is a file, not a folder; pass a folder path for {flag}')
  path.mkdir(parents=True, exist_ok=True)
  return path


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """`jax.distributed.initialize` (arguments auto-detected on TPU pods and SLURM when None).

  CPU processes exchange data through gloo (the CPU backend has no other collectives).
  """
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


# ---- Experiment configs: `--config FILE.py[:ARG]` and `--config.KEY=VALUE` ----------------

def find_config(name: str) -> Path:
  """The file `--config NAME` means: NAME relative to the current directory (or absolute), else
  relative to the installed `experiments` package (`demo.py`, `experiments/demo.py`; found
  without importing it: library code does not depend on the experiments).

  Raises:
    FileNotFoundError: none exists (one line listing where it looked).
  """
  spec = importlib.util.find_spec('experiments')
  package = Path(spec.submodule_search_locations[0]) if spec else None
  path = Path(name).expanduser()
  candidates = [path]
  if not path.is_absolute() and package is not None:
    candidates.append(package / path)
    if len(path.parts) > 1 and path.parts[0] == package.name:
      candidates.append(package.joinpath(*path.parts[1:]))
  for candidate in candidates:
    if candidate.is_file():
      return candidate
  looked = ', '.join(dict.fromkeys(str(c.absolute()) for c in candidates))
  raise FileNotFoundError(f'--config {name} not found; looked for {looked}')


def load_config(spec: Optional[str], workdir: Optional[str]) -> ml_collections.ConfigDict:
  """The run's config from `--config` (`spec`: `FILE.py[:ARG]`, whose `get_config(ARG)` makes
  it, or a saved `config.json`), or without `--config` the workdir's own `config.json`.

  The keys an experiments file assigns are recorded in the config as set; a saved `config.json`
  sets none (`sg2jax.train.config`). `--config.KEY=VALUE` applied afterwards (`override_config`,
  `sg2jax.main.parse_flags`) adds its keys to the record.
  """
  from sg2jax.train.config import CONFIG_FILE, load_run_config
  if spec is None:
    from sg2jax.storage import as_path
    if workdir and (as_path(workdir) / CONFIG_FILE).is_file():
      return load_run_config(workdir)
    where = f'{workdir} has no {CONFIG_FILE} to resume with' if workdir else 'nor --workdir'
    raise ValueError(f'pass --config: an experiments file (e.g. --config demo.py) or a run\'s '
                     f'{CONFIG_FILE} ({where})')
  name, _, arg = spec.partition(':')
  path = find_config(name)
  if path.suffix == '.json':
    if arg:
      raise ValueError(f'--config {spec}: a saved {CONFIG_FILE} takes no :ARGUMENT; change keys '
                       f'with --config.KEY=VALUE')
    return load_run_config(path)
  module_spec = importlib.util.spec_from_file_location(f'sg2jax_config_{path.stem}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not callable(getattr(module, 'get_config', None)):
    raise ValueError(f'--config {path} has no get_config(): not an experiments file')
  return module.get_config(arg) if arg else module.get_config()


def take_flag(argv: Sequence[str], name: str) -> tuple[Optional[str], list[str]]:
  """(the last value of `--NAME VALUE` / `--NAME=VALUE` in argv or None, argv without them)."""
  value, rest, i = None, [], 0
  while i < len(argv):
    arg = argv[i]
    if arg == '--':
      rest.extend(argv[i:])
      break
    if arg in (f'--{name}', f'-{name}'):
      if i + 1 == len(argv):
        raise ValueError(f'--{name} needs a value')
      value, i = argv[i + 1], i + 2
      continue
    if arg.startswith((f'--{name}=', f'-{name}=')):
      value, i = arg.split('=', 1)[1], i + 1
      continue
    rest.append(arg)
    i += 1
  return value, rest


def override_config(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """`config` with `--config.KEY=VALUE` arguments applied (as `sg2jax.main` applies them, through
  ml_collections' flag parser, on a flag registry of its own). The parser assigns each KEY, so
  the config records it as set (`sg2jax.train.config.assigned_keys`).

  Raises:
    ValueError: an argument that is not `--config.KEY=VALUE`, an unknown key or a value of the
      wrong type (one line).
  """
  from absl import flags
  from ml_collections import config_flags
  for arg in overrides:
    if not arg.startswith('--config.'):
      raise ValueError(f'unknown argument {arg}; config keys are set with --config.KEY=VALUE')
  registry, argv = flags.FlagValues(), ['sg2jax'] + list(overrides)
  try:
    config_flags.DEFINE_config_dict('config', config, lock_config=True, flag_values=registry,
                                    sys_argv=argv)
    registry(argv)
  except flags.Error as e:
    raise ValueError(f'bad --config override: {e}') from None
  except (AttributeError, KeyError, TypeError) as e:
    text = ' '.join(str(e).replace('\\n', ' ').replace("\\'", '').strip('\'"').split())
    raise ValueError(f'bad --config override: unknown key or wrong value ({text})') from None
  return registry.config
