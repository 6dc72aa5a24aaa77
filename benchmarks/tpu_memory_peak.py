"""Where a TPU program's temporaries go: the values that occupy them at their peak, read from the
TPU compiler's own dump.

  python benchmarks/tpu_memory_peak.py --topology v5e-1 --config experiments/ffhq.py \\
      --program g_main --config.G.dtype=bfloat16 --config.D.dtype=bfloat16 \\
      --config.precision=default --config.remat=blocks --out benchmarks/results/tpu_memory_peak.jsonl
  python benchmarks/tpu_memory_peak.py --dump DIR --program g_main   # a dump made before

Compiles one program with `sg2jax.aot` (with `XLA_FLAGS=--xla_dump_to=` a temporary folder) and
reads three files the compiler writes after its optimizations: the buffer assignment (every
value's size as laid out on the chip, padding to the tiles included, and its offset in the one
allocation that holds the temporaries), the live ranges (where in the program's schedule each
value is defined and last used) and the optimized HLO (the JAX operation each instruction comes
from, its `op_name`). It reports the size of that allocation (`temp_gib`), the most of it that
live values occupy at any point of the schedule (`occupied_peak_gib`: the rest is room the
compiler's packing could not use), and the largest values occupying it at that point: their
shape and layout, the JAX operation that defines each and the one that last uses it, and for how
many of the program's instructions each stays alive. One JSON line per program. These are
compiler facts, not run times.
"""

import argparse
import bisect
import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import results  # noqa: E402  (benchmarks/results.py)


@dataclasses.dataclass(frozen=True)
class Value:
  name: str  # HLO instruction, with its tuple index where it has one: 'fusion.12{1}'
  size: int  # bytes, as laid out on the chip
  offset: int  # in the temporaries' allocation
  shape: str
  start: int  # positions in the program's schedule
  end: int


def _dump_files(dump: Path, program: str) -> tuple[Path, Path, Path]:
  """The TPU program's three files (a dump also holds the host's small CPU programs, which are
  named `cpu_after_optimizations`)."""
  found = sorted(glob.glob(str(dump / f'*.jit_{program}.*after_optimizations-buffer-assignment.txt')))
  found = [f for f in found if 'cpu_after' not in f]
  if not found:
    raise SystemExit(f'error: no TPU buffer assignment for {program} in {dump}: compile it with '
                     f'XLA_FLAGS=--xla_dump_to={dump}, or leave out --dump')
  stem = found[-1][:-len('-buffer-assignment.txt')]
  return Path(found[-1]), Path(stem + '-live-range.txt'), Path(stem + '.txt')


def _temporaries(buffer_assignment: Path) -> tuple[int, list[tuple[str, int, int, str]]]:
  """The allocation holding the temporaries (`preallocated-temp`): its size, and its values."""
  allocations, current = [], None
  for line in buffer_assignment.read_text().splitlines():
    m = re.match(r'allocation \d+: size (\d+)(.*)', line)
    if m:
      current = (int(m.group(1)), m.group(2), [])
      allocations.append(current)
      continue
    m = re.match(r' value: <\d+ (\S+) @\d+> \(size=(\d+),offset=(\d+)\): (.*)', line)
    if m and current is not None:
      current[2].append((m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)))
  temps = [a for a in allocations if 'preallocated-temp' in a[1]]
  if not temps:
    raise SystemExit(f'error: {buffer_assignment} has no preallocated-temp allocation')
  size, _, values = max(temps, key=lambda a: a[0])
  return size, values


def _live_ranges(live_range: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
  """Each value's (first, last) position in the schedule, and the schedule's instructions."""
  ranges, schedule, section = {}, [], None
  for line in live_range.read_text().splitlines():
    if line.startswith('  InstructionSequence'):
      section = 'sequence'
    elif line.startswith('  BufferLiveRange'):
      section = 'ranges'
    elif line.startswith('  Live ranges at'):
      break
    elif section == 'sequence' and (m := re.match(r'\s+\d+:(\S+)$', line)):
      schedule.append(m.group(1))
    elif section == 'ranges' and (m := re.match(r'\s+(\S+):(\d+)-(\d+)$', line)):
      ranges[m.group(1)] = (int(m.group(2)), int(m.group(3)))
  return ranges, schedule


def _op_names(hlo: Path) -> dict[str, str]:
  """Instruction -> the JAX operation it comes from (its metadata's op_name)."""
  names = {}
  for line in hlo.read_text().splitlines():
    m = re.match(r'\s+(?:ROOT )?%(\S+) = .*?op_name="([^"]+)"', line)
    if m:
      names[m.group(1)] = m.group(2)
  return names


def _occupied(values: list[Value]) -> int:
  """Bytes of the allocation the values cover (values sharing bytes, as an instruction's result
  written in place over its operand, counted once)."""
  total, reach = 0, -1
  for lo, hi in sorted((v.offset, v.offset + v.size) for v in values):
    if hi > reach:
      total += hi - max(lo, reach)
      reach = hi
  return total


def occupied_peak(values: list[Value]) -> tuple[int, int, list[Value]]:
  """The most bytes live values occupy at one point of the schedule, that point, and the values
  live there (the peak is where some value starts)."""
  starts = sorted(values, key=lambda v: v.start)
  keys = [v.start for v in starts]
  best = (0, 0, [])
  for t in sorted(set(keys)):
    live = [v for v in starts[:bisect.bisect_right(keys, t)] if v.end >= t]
    occupied = _occupied(live)
    if occupied > best[0]:
      best = (occupied, t, live)
  return best


def analyse(dump: Path, program: str, top: int = 12) -> dict:
  buffer_assignment, live_range, hlo = _dump_files(dump, program)
  temp_bytes, assigned = _temporaries(buffer_assignment)
  ranges, schedule = _live_ranges(live_range)
  op_names = _op_names(hlo)
  values = []
  for name, size, offset, shape in assigned:
    key = name if '{' in name else name + '{}'
    if key in ranges:
      values.append(Value(name, size, offset, shape, *ranges[key]))
  occupied, at, live = occupied_peak(values)
  prefix = f'jit({program})/'

  def op(instruction: str) -> str:  # the HLO instruction's own name where it has no op_name
    base = re.sub(r'\{.*', '', instruction)
    return op_names.get(base, f'HLO {base}').removeprefix(prefix)

  largest = sorted(live, key=lambda v: -v.size)[:top]
  return {
      'program': program, 'temp_gib': round(temp_bytes / 2 ** 30, 3),
      'occupied_peak_gib': round(occupied / 2 ** 30, 3), 'peak_at': at,
      'instructions': len(schedule), 'values': len(values),
      'largest_at_peak': [{
          'mib': round(v.size / 2 ** 20, 1), 'shape': v.shape, 'live': [v.start, v.end],
          'defined_by': op(v.name),
          'last_used_by': op(schedule[v.end]) if v.end < len(schedule) else 'the end'}
                          for v in largest]}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--program', required=True, help='g_main, g_reg, d_main, d_reg, ...')
  p.add_argument('--topology', default=None,
                 help='the slice to compile for (default v5e-1); with --dump, the one it was for')
  p.add_argument('--config', help='experiment config, as sg2jax.aot takes it')
  p.add_argument('--dump', help='read this dump instead of compiling')
  p.add_argument('--top', type=int, default=12)
  p.add_argument('--out', default=None)
  args, overrides = p.parse_known_args()
  record = results.Recorder(args.out)
  if args.dump:
    record({'topology': args.topology, **analyse(Path(args.dump), args.program, args.top)})
    return
  if not args.config:
    raise SystemExit('error: give --config (and --topology) to compile, or --dump DIR to read a dump')
  args.topology = args.topology or 'v5e-1'
  with tempfile.TemporaryDirectory() as dump:
    env = {**os.environ, 'XLA_FLAGS': f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}"}
    compiled = subprocess.run(
        [sys.executable, '-m', 'sg2jax.aot', '--topology', args.topology, '--config', args.config,
         '--programs', args.program, '--json', *overrides], env=env, stdout=subprocess.PIPE, text=True)
    reports = [line for line in compiled.stdout.splitlines() if line.startswith('{')]
    if not reports:
      raise SystemExit(f'error: sg2jax.aot did not compile {args.program} (exit status '
                       f'{compiled.returncode}); its message is above')
    report = json.loads(reports[-1])
    record({'topology': args.topology, 'hbm_gib': report.get('hbm_gib'),
            'batch_per_chip': report.get('batch_per_chip'),
            **analyse(Path(dump), args.program, args.top)})


if __name__ == '__main__':
  main()
