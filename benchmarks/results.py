"""Where benchmark numbers are kept: JSON lines in `benchmarks/results/`, each with what produced
it (command, commit, date, machine), so that every figure the README quotes can be checked."""

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

RESULTS = Path(__file__).parent / 'results'


def commit() -> str:
  """The checked-out commit, with '+changes' when the work tree differs from it (result files
  excepted: another run may be appending to them)."""
  root = Path(__file__).parent.parent
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=root, capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--', '.',
                            ':(exclude)benchmarks/results'], cwd=root,
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
  return head + ('+changes' if dirty else '')


def machine() -> dict[str, Any]:
  """This host: CPU model, its vector extensions of note, cores, Python and jax versions."""
  model, flags = platform.processor() or platform.machine(), set()
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      key, _, value = line.partition(':')
      if key.strip() == 'model name':
        model = value.strip()
      elif key.strip() == 'flags':
        flags = set(value.split())
  except OSError:
    pass
  info = {'cpu': model, 'cores': os.cpu_count(),
          'cpu_flags': sorted(flags & {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16'}),
          'python': platform.python_version()}
  try:
    import jax
    info['jax'] = jax.__version__
  except ImportError:
    pass
  return info


def portable(text: str) -> str:
  """`text` without this machine's paths: the repository's own paths relative to its root, the
  temporary directory as `$TMPDIR`, other absolute paths outside the repository without their
  first directory, under `$OUTSIDE/` (a checkout or virtualenv of another project)."""
  root = str(Path(__file__).resolve().parent.parent)
  text = text.replace(root + '/', '').replace(root, '.')
  temp = tempfile.gettempdir()
  text = re.sub(re.escape(temp) + r'(?=/)', '$TMPDIR', text)
  return re.sub(r'(?<![\w$.])/[\w.-]+/((?:[\w.-]+/)*[\w.-]+)', r'$OUTSIDE/\1', text)


def provenance(argv: Optional[list[str]] = None) -> dict[str, Any]:
  """The fields every result line carries: command (with `portable` paths), commit, date
  (UTC), machine."""
  argv = sys.argv if argv is None else argv
  command = portable(' '.join(['python'] + [str(a) for a in argv]))
  return {'command': command, 'commit': commit(),
          'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
          'machine': machine()}


def append(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
  """Appends `rows` as JSON lines (flushed line by line: a long run keeps what it finished)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('a') as f:
    for row in rows:
      f.write(json.dumps(row, sort_keys=True) + '\n')
      f.flush()


def read(path: str | Path) -> list[dict[str, Any]]:
  """Every JSON line of a results file."""
  path = Path(path)
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Recorder:
  """Prints each result line and, given a file, also appends it there with the run's provenance
  and a `run` id (the start time), so the lines of one run can be told from earlier runs'."""

  def __init__(self, out: Optional[str | Path] = None, argv: Optional[list[str]] = None):
    self.out = out
    self.record = provenance(argv)
    self.record['run'] = self.record['date']

  def __call__(self, row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)
    if self.out:
      append(self.out, [{**self.record, **row}])


def latest_run(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
  """The rows of the newest run among `rows` whose fields equal `match`."""
  rows = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
  if not rows:
    return []
  newest = max(r['run'] for r in rows)
  return [r for r in rows if r['run'] == newest]
