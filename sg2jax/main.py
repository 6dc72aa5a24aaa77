"""Train StyleGAN2: `python -m sg2jax.main --config experiments/lsun_car.py --workdir DIR`.

Starting on a workdir that has checkpoints resumes from the latest one. Config values are
overridden with `--config.KEY=VALUE` (e.g. `--config.data.path=cars.zip --config.total_kimg=500`);
an unknown key is an error. Multi-host: pass `--distributed` on TPU pods / SLURM (auto-detected),
or `--coordinator_address`, `--num_processes` and `--process_id`.
This file is intentionally short: the library is `sg2jax.train`.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'experiment config file',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'directory for checkpoints, logs and samples')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'call jax.distributed.initialize() (auto-detected clusters)')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'index of this process')
flags.mark_flags_as_required(['config', 'workdir'])


def metric_hooks(config, workdir) -> list:
  """The snapshot hook of `config.metrics` (sg2jax.eval's metrics), or none. Names and weight
  files are checked now, before training starts."""
  from sg2jax.train.build import metric_settings
  settings = metric_settings(config)
  if not settings.names:
    return []
  from sg2jax.metrics.evaluate import make_training_hook
  return [make_training_hook(settings.names, workdir=workdir, inception_path=settings.inception,
                             vgg16_path=settings.vgg16, num_samples=settings.num_samples)]


def main(argv):
  del argv
  from sg2jax.cli import configure_jax, initialize_distributed
  configure_jax(_CONFIG.value.precision, _CONFIG.value.compile_cache)
  if _DISTRIBUTED.value or _COORDINATOR.value:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from sg2jax.train.loop import train_and_evaluate
  train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                     hooks=metric_hooks(_CONFIG.value, _WORKDIR.value))


def parse_flags(argv):
  """absl flag parsing, with a bad `--config.KEY=VALUE` reported in one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise SystemExit(f'error: {e}') from None
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # from config overrides
    text = ' '.join(str(e).replace('\\n', ' ').replace("\\'", '').strip('\'"').split())
    raise SystemExit(f'error: bad --config override: {text}') from None


if __name__ == '__main__':
  from sg2jax.cli import USER_ERRORS
  try:
    app.run(main, flags_parser=parse_flags)
  except USER_ERRORS as e:
    raise SystemExit(f'error: {e}') from None
