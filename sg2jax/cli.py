"""What every command-line entry point does first (the only place jax.config is touched)."""

import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import jax

# Errors that mean "bad input": printed as one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)

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


def run(main: Callable[[], int]) -> None:
  """Runs a command's `main`, turning bad-input errors into a one-line message and exit code 1."""
  try:
    sys.exit(main())
  except USER_ERRORS as e:
    sys.exit(f'error: {e}')


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """`jax.distributed.initialize` (arguments auto-detected on TPU pods and SLURM when None).

  CPU processes exchange data through gloo (the CPU backend has no other collectives).
  """
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
