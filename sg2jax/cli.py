"""What every command-line entry point does first (the only place jax.config is touched)."""

import sys
from typing import Callable, Optional

import jax

# Errors that mean "bad input": printed as one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


def configure_jax(precision: str = 'highest') -> None:
  """Threefry keys that stay local under sharding, and the matmul/conv precision.

  'highest' keeps float32 convolutions exact on GPUs (no TF32) and TPUs (no single bf16 pass),
  so tools reproduce the official images; 'default' lets the backend trade precision for speed.
  """
  jax.config.update('jax_threefry_partitionable', True)
  jax.config.update('jax_default_matmul_precision', precision)


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
