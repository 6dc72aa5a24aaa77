"""Train StyleGAN2: `python -m sg2jax.main --config experiments/lsun_car.py --workdir DIR`.

Starting on a workdir that has checkpoints resumes from the newest one that restores (a damaged
one is moved aside). `--workdir DIR` alone resumes with the run's own config (DIR/config.json);
`--config DIR/config.json` takes a saved config with overrides. `--config` names a file relative
to the current directory or, failing that, to the installed `experiments` package (`--config
demo.py` or `--config experiments/demo.py` from any directory). Config values are overridden with
`--config.KEY=VALUE` (e.g. `--config.data.path=cars.zip --config.total_kimg=500`); an unknown key
or a value out of its range is an error. SIGTERM (e.g. preemption) or Ctrl-C saves a checkpoint
and exits with status 143 (130): run the same command to resume. A second run on a busy workdir
is refused. Errors are one line; `--debug` shows the traceback. Multi-host: pass `--distributed`
on TPU pods / SLURM (auto-detected), or `--coordinator_address`, `--num_processes` and
`--process_id`.
This file is intentionally short: the library is `sg2jax.train`.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from sg2jax.cli import DEBUG_HELP, find_config, load_config, run, take_flag  # noqa: F401

_WORKDIR = flags.DEFINE_string('workdir', None, 'directory for checkpoints, logs and samples')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False,
                                 'call jax.distributed.initialize() (auto-detected clusters)')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'index of this process')
_DEBUG = flags.DEFINE_bool('debug', False, DEBUG_HELP)
flags.mark_flags_as_required(['workdir'])
CONFIG_HELP = ('experiment config: FILE.py[:ARG] (relative to the current directory or the '
               'experiments package) or a run\'s config.json; default: WORKDIR/config.json')


def metric_hooks(config, workdir) -> list:
  """The snapshot hook of `config.metrics` (sg2jax.eval's metrics), or none. Names and weight
  files are checked now, before training starts."""
  from sg2jax.train.build import metric_settings
  settings = metric_settings(config)
  if not settings.names:
    return []
  from sg2jax.metrics.evaluate import make_training_hook
  return [make_training_hook(settings.names, workdir=workdir, inception_path=settings.inception,
                             vgg16_path=settings.vgg16, classifiers_path=settings.classifiers,
                             num_samples=settings.num_samples)]


def main(argv):
  del argv
  config = flags.FLAGS.config
  from sg2jax.cli import configure_jax, initialize_distributed
  configure_jax(config.precision, config.compile_cache)
  if _DISTRIBUTED.value or _COORDINATOR.value:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from sg2jax.train.loop import Interrupted, train_and_evaluate
  try:
    train_and_evaluate(config, _WORKDIR.value, hooks=metric_hooks(config, _WORKDIR.value))
  except Interrupted as stop:
    print(f'sg2jax.main: {stop}', file=sys.stderr, flush=True)
    return stop.exit_code
  return 0


def parse_flags(argv):
  """absl flag parsing, with the config loaded by `load_config` (`--config` or the workdir's),
  and a bad `--config.KEY=VALUE` reported in one line. ml_collections' parser assigns each
  `--config.KEY=VALUE` to the config, which records KEY as set, next to the keys the experiments
  file set (`sg2jax.train.config`): `build` reads that record when fine-tuning."""
  spec, rest = take_flag(argv, 'config')
  workdir, _ = take_flag(rest, 'workdir')
  if spec is None and workdir is None and any(a.startswith(('--help', '-h', '-?')) for a in rest):
    return flags.FLAGS(rest)  # help without a config
  config = load_config(spec, workdir)
  try:
    config_flags.DEFINE_config_dict('config', config, CONFIG_HELP, lock_config=True,
                                    sys_argv=rest)
    return flags.FLAGS(rest)
  except flags.Error as e:
    raise SystemExit(f'error: {e}') from None
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # from config overrides
    text = ' '.join(str(e).replace('\\n', ' ').replace("\\'", '').strip('\'"').split())
    raise SystemExit(f'error: bad --config override: {text}') from None


if __name__ == '__main__':
  from sg2jax.cli import quiet_library_logs
  quiet_library_logs()  # before TensorFlow (clu's writer) is imported
  run(lambda: app.run(main, flags_parser=parse_flags))
