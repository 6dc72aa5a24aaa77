"""The compiles behind the README's TPU tables: `sg2jax.aot` over TPU slices, resolutions and
numeric settings (`benchmarks/readme_tables.py` makes the tables from the lines written here).

  python benchmarks/tpu_compile.py --slices v5e-8 --resolutions 256,1024 \\
      --settings bfloat16/default --out benchmarks/results/tpu_compile.jsonl

Each combination compiles the training phases of a config (default: the ffhq preset, config F)
at a resolution, with `batch_gpu` (the official per-GPU batch, 4) images per chip, for the
slice's compile-only devices, and appends one JSON line per program (`sg2jax.aot`'s report,
with the command, commit, date and machine). A combination already in `--out` is skipped, so an
interrupted run continues where it stopped. `--max-batch` also searches the largest per-chip
batch of each phase (one compile per try). These are the TPU compiler's facts about memory and
arithmetic, not run times.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import results  # noqa: E402  (benchmarks/results.py)

PHASES = ('g_main', 'g_reg', 'd_main', 'd_reg')


def combination_key(row: dict) -> tuple:
  return (row['config'], row['topology'], row['resolution_setting'], row['dtype'],
          row['precision'], row.get('remat', 'none'), row.get('batch_gpu'),
          row.get('max_batch', False))


def newest(rows: list[dict]) -> list[dict]:
  """Of each program of a combination compiled by several runs (by other commits), the newest
  run's row."""
  key = lambda row: combination_key(row) + (row['program'],)
  runs: dict[tuple, str] = {}
  for row in rows:
    runs[key(row)] = max(runs.get(key(row), ''), row.get('run', row['date']))
  return [row for row in rows if row.get('run', row['date']) == runs[key(row)]]


def compiled_config(config, chips: int, resolution: int, dtype: str, precision: str, remat: str):
  """`config` as a combination compiles it: `batch_gpu` images per chip (JAX configured for
  `precision`)."""
  from sg2jax.cli import configure_jax
  config.resolution = resolution
  config.batch_size = config.batch_gpu * chips
  config.G.dtype = config.D.dtype = dtype
  config.precision = precision
  config.remat = remat
  configure_jax(precision, compile_cache='none')
  return config


def run(args) -> None:
  from sg2jax import aot, topology
  topology.prepare_environment()
  from sg2jax.cli import load_config, override_config
  record = results.provenance()
  # An interrupted run continues with the programs it has not compiled; a new commit compiles
  # every program again.
  done = {combination_key(row) + (row['program'],) for row in results.read(args.out)
          if row.get('commit') == record['commit']}
  record['run'] = record['date']
  for name in args.slices.split(','):
    slice_ = topology.parse_slice(name)
    devices = None
    for resolution in (int(r) for r in args.resolutions.split(',')):
      for setting in args.settings.split(','):
        dtype, precision = setting.split('/')
        config = compiled_config(override_config(load_config(args.config, None), args.override),
                                 slice_.chips, resolution, dtype, precision, args.remat)
        tags = {'config': args.config, 'topology': slice_.name, 'resolution_setting': resolution,
                'dtype': dtype, 'precision': precision, 'remat': args.remat,
                'batch_gpu': config.batch_gpu, 'max_batch': args.max_batch}
        for program in args.programs.split(','):
          if combination_key(tags) + (program,) in done:
            print(f'done already: {program} {tags}', file=sys.stderr)
            continue
          devices = devices or topology.compile_only_devices(slice_)
          print(f'compiling {program} {tags} ...', file=sys.stderr, flush=True)
          # One program at a time, each line written as soon as it is compiled.
          reports = aot.compile_run(
              config, slice_, devices, [program], max_batch=args.max_batch,
              progress=lambda line: print(line, file=sys.stderr, flush=True))
          results.append(args.out, ({**record, **tags, **r.as_dict()} for r in reports))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', default='experiments/ffhq.py')
  p.add_argument('--slices', default='v5e-8')
  p.add_argument('--resolutions', default='256,512,1024')
  p.add_argument('--settings', default='float32/highest,float32/default,bfloat16/default')
  p.add_argument('--programs', default=','.join(PHASES))
  p.add_argument('--remat', default='none')
  p.add_argument('--max-batch', action='store_true')
  p.add_argument('--out', default=str(results.RESULTS / 'tpu_compile.jsonl'))
  args, override = p.parse_known_args()
  args.override = override
  run(args)


if __name__ == '__main__':
  main()
