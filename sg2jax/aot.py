"""Compile a training run for a Cloud TPU slice on this host, and say whether it fits.

  python -m sg2jax.aot --topology v5e-8 --config experiments/ffhq.py [--config.KEY=VALUE ...]
  python -m sg2jax.aot --topology v5e-1 --config experiments/ffhq.py --max-batch --json

Every program the run would compile on that slice — each training phase at every stage of the
schedule (configs A-D: every resolution), the snapshot grid, and the metric programs of
`config.metrics` — is compiled by the real TPU compiler (libtpu: `pip install -e ".[tpu]"`) for
compile-only devices: nothing runs, no TPU is needed, and nothing leaves this host. Per program
and per chip it prints the HBM the program needs (arguments + outputs + temporaries - aliased)
against the chip's capacity, whether it fits, XLA's GFLOP per call and the compile time.
`--max-batch` finds the largest per-chip batch that fits for each phase (each try is a
compile, aimed where the HBM figures so far say memory runs out). These are the compiler's
facts, not run times.

Exit status 1 when a program fails to compile or does not fit, with one line naming it and what
to change. The programs compile in a child process: where libtpu crashes on one (it aborts the
process it runs in on a failed internal check), that program is reported as failed with the
compiler's message and a new child compiles the rest (`--debug` compiles in this process).
The same libtpu version and XLA flags must be used at run time for the verdicts to
carry over (docs/TPU.md).
"""

import argparse
import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
from typing import Callable, Optional, Sequence

from sg2jax.cli import add_debug_flag, load_config, override_config, run

PHASES = ('g_main', 'g_reg', 'd_main', 'd_reg', 'ema', 'ada')  # train/step.py PHASE_NAMES
PROGRAMS = PHASES + ('samples', 'metrics')
IN_CHILD_FLAG = '--in-child'  # compile and print JSON lines; the parent reports (main)
_COMPILING = re.compile(r'^compiling (\S+) for ')  # print_progress's line before each compile


def parse_args(argv: Optional[Sequence[str]] = None):
  p = argparse.ArgumentParser(prog='python -m sg2jax.aot', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--topology', required=True,
                 help='Cloud TPU slice: v5e-1, v5e-8, v5e-256, v6e-8, v4-8, v5p-8, ...')
  p.add_argument('--config', required=True,
                 help="experiment config: FILE.py[:ARG] or a run's config.json; keys with "
                      '--config.KEY=VALUE')
  p.add_argument('--programs', default='',
                 help=f'comma-separated subset of {",".join(PROGRAMS)} (default: all the run '
                      f'compiles)')
  p.add_argument('--max-batch', action='store_true',
                 help='also find the largest per-chip batch that fits, per training phase')
  p.add_argument('--json', action='store_true', help='one JSON line per program')
  p.add_argument(IN_CHILD_FLAG, action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--skip', default='', help=argparse.SUPPRESS)  # report names done already
  add_debug_flag(p)
  args, overrides = p.parse_known_args(argv)
  return args, overrides


def parse_programs(text: str) -> Optional[list[str]]:
  names = [n.strip() for n in text.split(',') if n.strip()]
  unknown = [n for n in names if n not in PROGRAMS]
  if unknown:
    raise ValueError(f'--programs: unknown {", ".join(unknown)}; choose from '
                     f'{", ".join(PROGRAMS)}')
  return names or None


def data_shape(config) -> tuple[int, int, int]:
  """(resolution, channels, label dimensions) of the run: from its dataset when
  `config.data.path` names one that is here, else `config.resolution`, RGB, unconditional."""
  from sg2jax.data.sources import image_shape
  from sg2jax.train.build import dataset_spec
  spec = dataset_spec(config)
  if config.data.source == 'shapes' or (config.data.path and _exists(config.data.path)):
    source = spec.open()
    height, _, channels = image_shape(source)
    return config.resolution or height, channels, source.label_dim if config.cond else 0
  if not config.resolution:
    raise ValueError('the run\'s resolution is unknown: set --config.resolution=R (or '
                     '--config.data.path to a dataset on this host)')
  if config.cond:
    raise ValueError('a conditional run (config.cond) needs its dataset to know the number of '
                     'classes: set --config.data.path to it')
  return config.resolution, 3, 0


def _exists(path: str) -> bool:
  from pathlib import Path
  return Path(path).expanduser().exists()


def build_for(config, mesh, shape):
  """The run's `Experiment` on `mesh` (networks, optimizers, schedule; no data)."""
  from sg2jax.train.build import build_models, load_transfer, validate
  validate(config)
  transfer = load_transfer(config.resume_from) if config.resume_from else None
  resolution, channels, c_dim = shape
  return build_models(config, resolution, channels, c_dim, mesh, transfer)


def compile_run(config, slice_, devices, names: Optional[Sequence[str]], max_batch: bool,
                progress=None, skip: Sequence[str] = (),
                on_report: Optional[Callable] = None) -> list:
  """Compiles the run's programs for the slice's `devices`; `ProgramReport`s in order, each
  also passed to `on_report` as it is made. Programs whose report name is in `skip` are left
  out."""
  from sg2jax import topology
  from sg2jax.sharding import make_mesh
  from sg2jax.train.programs import training_programs
  mesh = make_mesh(devices)
  capacity = topology.hbm_capacity(devices[0])
  shape = data_shape(config)
  exp = build_for(config, mesh, shape)
  programs = training_programs(exp, shape[1], shape[2], config.grid_size, config.seed,
                               names=names)
  reports = []
  for program in programs:
    if program.name in skip:
      continue
    if progress:
      progress(f'compiling {program.name} for {slice_.name} ...')
    per_call = program.images if program.name.startswith('samples') else program.stage.batch_size
    per_chip = max(1, per_call // slice_.chips)
    report = topology.compile_report(program.name, program.lower, capacity, per_chip)
    report.extra.update(_context(slice_, devices, config, program))
    if report.gflop is not None:
      report.extra['gflop_per_image'] = round(report.gflop * slice_.chips / program.images, 3)
    if max_batch and program.name.split('@')[0] in PHASES:
      report.extra['max_batch_per_chip'], report.extra['max_batch_tries'] = largest_batch(
          config, mesh, shape, program, capacity, slice_, progress, first=report)
    reports.append(report)
    if on_report:
      on_report(report)
  if names is None or 'metrics' in names:
    reports += metric_reports(config, exp, mesh, capacity, slice_, devices, progress, skip,
                              on_report)
  return reports


def _context(slice_, devices, config, program) -> dict:
  return {'topology': slice_.name, 'chip': devices[0].device_kind, 'chips': slice_.chips,
          'resolution': program.stage.resolution, 'batch': program.stage.batch_size,
          'images': program.images, 'dtype': config.G.dtype, 'precision': config.precision,
          'remat': config.remat}


def largest_batch(config, mesh, shape, program, capacity, slice_, progress,
                  first=None) -> tuple[Optional[int], list[dict]]:
  """The largest per-chip batch with which `program`'s phase fits (its stage's batch replaced;
  `batch_gpu` kept where it divides the per-chip batch, else the per-chip batch; a multiple of
  the minibatch-stddev group, or fewer images than one group), and the search's tries in order
  (`per_chip`, `ok`, `fits`, `hbm_gib`, `refused`: `ProgramReport.refused`), the figures the
  answer rests on.
  `first`: `program`'s own report, the search's first try when its batch splits evenly over the
  chips."""
  from sg2jax import topology
  from sg2jax.train.programs import training_programs
  phase = program.name.split('@')[0]
  start = max(1, program.stage.batch_size // slice_.chips)

  def compile_with(per_chip: int):
    if first is not None and per_chip * slice_.chips == program.stage.batch_size:
      return first
    trial = _with_batch(config, program.stage.resolution, per_chip * slice_.chips, per_chip)
    exp = build_for(trial, mesh, shape)
    candidates = [p for p in training_programs(exp, shape[1], shape[2], 1, names=[phase])
                  if p.stage.resolution == program.stage.resolution]
    report = topology.compile_report(phase, candidates[0].lower, capacity, per_chip)
    if progress:
      verdict = (f'failed to compile: {report.error}' if not report.ok
                 else f'fits ({report.hbm_gib} GiB)' if report.fits
                 else f'does not fit ({report.hbm_gib} GiB)' if report.hbm_gib is not None
                 else f'does not fit ({report.error})')
      progress(f'  {program.name}: {per_chip} per chip {verdict}')
    return report

  fixed = {}  # what a compile that fitted needed besides temporaries
  tries = []

  def measure(per_chip: int) -> tuple[bool, Optional[float]]:
    report = compile_with(per_chip)
    tries.append({'per_chip': per_chip, 'ok': report.ok, 'fits': report.fits,
                  'hbm_gib': report.hbm_gib,
                  'refused': report.refused})
    hbm = report.hbm_gib if report.ok else None
    if report.ok and report.fits and report.temp_gib is not None:
      fixed['gib'] = report.hbm_gib - report.temp_gib
    elif hbm is not None and report.refused:  # the temporaries alone: add the fixed part
      hbm += fixed.get('gib', 0.0)
    return report.ok and report.fits, hbm

  step = batch_step(config.D.get('mbstd_group_size'), program.stage.batch_gpu)
  return topology.largest_fitting(measure, start, capacity / 2 ** 30, step=step), tries


def batch_step(mbstd_group_size: Optional[int], batch_gpu: int) -> int:
  """The per-chip batches `_with_batch` can compile are the multiples of this (and any batch
  smaller): minibatch stddev forms groups of min(mbstd_group_size, batch_gpu) images, and
  batch_gpu becomes the per-chip batch where it does not divide it. Without a group size (the
  whole per-GPU batch is one group) every batch compiles."""
  return min(mbstd_group_size, batch_gpu) if mbstd_group_size else 1


def _with_batch(config, resolution: int, batch: int, per_chip: int):
  """A copy of `config` whose minibatch at `resolution` is `batch` (growing runs: that
  resolution's entry)."""
  trial = config.copy_and_resolve_references()
  with trial.unlocked():
    if trial.G.type == 'Generator':
      trial.batch_size = batch
      if per_chip % trial.batch_gpu:
        trial.batch_gpu = per_chip
    else:
      sizes = dict(trial.growing.batch_sizes)
      gpus = dict(trial.growing.batch_gpus)
      sizes[resolution] = batch
      if per_chip % gpus.get(resolution, trial.batch_gpu):
        gpus[resolution] = per_chip
      trial.growing.batch_sizes = tuple(sorted(sizes.items()))
      trial.growing.batch_gpus = tuple(sorted(gpus.items()))
  return trial


def metric_reports(config, exp, mesh, capacity, slice_, devices, progress, skip=(),
                   on_report=None) -> list:
  """The programs `config.metrics` runs at every snapshot (none when it names no metric)."""
  from sg2jax import topology
  from sg2jax.metrics.programs import metric_programs
  reports = []
  for name, lower, images in metric_programs(list(config.metrics), exp.generator, mesh,
                                             config.batch_size, exp.generator.img_channels):
    if name in skip:
      continue
    if progress:
      progress(f'compiling {name} for {slice_.name} ...')
    report = topology.compile_report(name, lower, capacity,
                                     max(1, config.batch_size // slice_.chips))
    report.extra.update({'topology': slice_.name, 'chip': devices[0].device_kind,
                         'chips': slice_.chips, 'batch': images, 'dtype': 'float32',
                         'precision': config.precision})
    reports.append(report)
    if on_report:
      on_report(report)
  return reports


def format_table(reports) -> str:
  """The human-readable table: one row per program."""
  header = ('program', 'images', 'per chip', 'HBM GiB', 'of', 'verdict', 'GFLOP', 'compile s',
            'largest per chip')
  rows = []
  for r in reports:
    if not r.ok:
      rows.append((r.program, '', '', '', '', f'FAILED: {r.error}', '', '', ''))
      continue
    hbm = '?' if r.hbm_gib is None else f'{r.hbm_gib:.2f}'
    if r.refused and r.hbm_gib is not None:
      hbm = f'>{hbm}'  # the temporaries alone
    rows.append((r.program, str(r.extra.get('images', '')), str(r.batch_per_chip), hbm,
                 f'{r.capacity_gib:.2f}', 'fits' if r.fits else 'DOES NOT FIT',
                 '' if r.gflop is None else f'{r.gflop:.1f}', f'{r.compile_seconds:.0f}',
                 str(r.extra.get('max_batch_per_chip', ''))))
  widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
  lines = ['  '.join(cell.ljust(w) if i in (0, 5) else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
           for row in [header] + rows]
  return '\n'.join(lines)


def problems(reports) -> list[str]:
  """One line per program that failed to compile or does not fit, saying what to change."""
  lines = []
  for r in reports:
    if not r.ok:
      lines.append(f'{r.program} failed to compile for {r.extra.get("topology")}: {r.error}')
    elif not r.fits:
      at_least = 'at least ' if r.refused else ''
      needs = 'more memory' if r.hbm_gib is None else f'{at_least}{r.hbm_gib:.2f} GiB'
      said = f' ({r.error})' if r.hbm_gib is None else ''
      lines.append(
          f'{r.program} needs {needs} per chip on {r.extra.get("chip")}, '
          f'which has {r.capacity_gib} GiB, at {r.batch_per_chip} images per chip{said}: lower '
          f'--config.batch_size (--max-batch finds the largest that fits), or try '
          f'--config.remat=blocks (blocks_ordered on one chip), --config.G.dtype=bfloat16 '
          f'--config.D.dtype=bfloat16, or a slice with more chips')
  return lines


def print_progress(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def report_from_dict(row: dict):
  """A `ProgramReport` from its JSON line (`as_dict`)."""
  from sg2jax.topology import ProgramReport
  fields = {f.name for f in dataclasses.fields(ProgramReport)} - {'extra'}
  return ProgramReport(**{k: v for k, v in row.items() if k in fields},
                       extra={k: v for k, v in row.items() if k not in fields})


def compile_in_children(command: Callable[[list[str]], list[str]],
                        on_report: Callable = lambda report: None,
                        on_line: Callable[[str], None] = print_progress) -> tuple[list, int]:
  """Runs `command(skip)` (a child that compiles every program not in `skip`, printing one
  JSON line per report and `compiling NAME for ...` on stderr before each) until it finishes;
  when the child is killed by a signal (libtpu aborting on a failed check) the program it was
  compiling becomes a failed report and a new child compiles the rest. The child's other
  stderr lines go to `on_line`. Returns the reports and an exit status: 0, or the child's own
  when it failed otherwise (its error line already passed to `on_line`)."""
  from sg2jax import topology
  reports, skip = [], []
  while True:
    child = subprocess.Popen(command(skip), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, bufsize=1)
    compiling, checks = [], []

    def read_stderr():
      for line in child.stderr:
        line = line.rstrip('\n')
        match = _COMPILING.match(line)
        if match:
          compiling.append(match.group(1))
        check = topology.failed_check(line)
        if check and not checks:
          checks.append(check)
        on_line(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    for line in child.stdout:
      if line.startswith('{'):
        report = report_from_dict(json.loads(line))
        reports.append(report)
        skip.append(report.program)
        on_report(report)
    status = child.wait()
    reader.join()
    if status >= 0:
      return reports, status
    crashed = compiling[-1] if compiling and compiling[-1] not in skip else None
    if crashed is None:  # not while compiling a program: nothing to skip and try again
      return reports, 1
    try:
      name = signal.Signals(-status).name
    except ValueError:
      name = f'signal {-status}'
    why = checks[0] if checks else 'no message'
    context = reports[-1].extra if reports else {}
    report = topology.ProgramReport(
        crashed, ok=False, fits=False, hbm_gib=None,
        capacity_gib=reports[-1].capacity_gib if reports else None, gflop=None,
        compile_seconds=0.0, error=(f'the TPU compiler (libtpu {topology.libtpu_version()}) '
                                    f'crashed ({name}): {why}')[:500],
        extra={k: context[k] for k in ('topology', 'chip', 'chips') if k in context})
    reports.append(report)
    skip.append(crashed)
    on_report(report)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args, overrides = parse_args(argv)
  from sg2jax import topology
  topology.prepare_environment()  # before libtpu or a JAX backend starts
  config = override_config(load_config(args.config, None), overrides)
  names = parse_programs(args.programs)
  slice_ = topology.parse_slice(args.topology)
  print_json = lambda report: print(json.dumps(report.as_dict()), flush=True)
  if args.in_child or args.debug:
    from sg2jax.cli import configure_jax
    configure_jax(config.precision, compile_cache='none')
    devices = topology.compile_only_devices(slice_)
    reports = compile_run(config, slice_, devices, names, max_batch=args.max_batch,
                          progress=print_progress if args.in_child or not args.json else None,
                          skip=[n for n in args.skip.split(',') if n],
                          on_report=print_json if args.in_child or args.json else None)
    if args.in_child:
      return 0
  else:
    topology.require_libtpu()  # its absence in one line here, not from a child
    command = lambda skip: [sys.executable, '-m', 'sg2jax.aot', *argv, IN_CHILD_FLAG,
                            '--skip', ','.join(skip)]
    relay = (lambda line: None if _COMPILING.match(line) else print_progress(line)) if (
        args.json) else print_progress
    reports, status = compile_in_children(
        command, print_json if args.json else (lambda report: None), relay)
    if status:
      return status
  if not args.json:
    first = next((r.extra for r in reports if r.ok), {})
    print(f'{slice_.name}: {slice_.chips} x {first.get("chip", "TPU")}, {config.G.dtype}, '
          f'precision {config.precision}, remat {config.remat}')
    print(format_table(reports), flush=True)
  lines = problems(reports)
  for line in lines:
    print(f'error: {line}', file=sys.stderr)
  return 1 if lines else 0


if __name__ == '__main__':
  run(main)
