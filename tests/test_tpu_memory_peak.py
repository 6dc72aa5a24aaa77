"""`benchmarks/tpu_memory_peak.py`: what occupies a TPU program's temporaries at their peak, read
from the compiler's dump of a real compile (the tiny networks' D main for one v5e chip)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / 'benchmarks'))

import tpu_memory_peak  # noqa: E402


def value(offset, size, start, end, name='v'):
  return tpu_memory_peak.Value(name, size, offset, 'f32[1]', start, end)


def test_the_peak_counts_bytes_values_share_once():
  """Two values over the same bytes (a result written over its operand) occupy them once; the
  peak is the point where the most bytes are occupied, not where the most values live."""
  values = [value(0, 100, 0, 10), value(0, 100, 5, 12),  # the same bytes, overlapping in time
            value(100, 50, 11, 20), value(150, 10, 11, 20), value(160, 30, 11, 11)]
  occupied, at, live = tpu_memory_peak.occupied_peak(values)
  assert (occupied, at) == (190, 11)
  assert sorted(v.offset for v in live) == [0, 100, 150, 160]
  assert tpu_memory_peak.occupied_peak(values[:2])[:2] == (100, 0)


@pytest.fixture(scope='module')
def report():
  env = {**os.environ, 'PYTHONPATH': str(ROOT / 'tests')}
  out = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'tpu_memory_peak.py'), '--topology', 'v5e-1',
       '--config', str(ROOT / 'tests' / 'tiny_experiment.py'), '--program', 'd_main',
       '--config.batch_size=8', '--top', '5'],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  [line] = [line for line in out.stdout.splitlines() if line.startswith('{')]
  return json.loads(line)


def test_the_peak_of_a_compiled_program_names_the_operations_holding_it(report):
  assert report['program'] == 'd_main' and report['topology'] == 'v5e-1'
  assert report['batch_per_chip'] == 8 and report['hbm_gib'] > report['temp_gib'] > 0
  # the values occupy no more than the allocation holding them, and something at the peak
  assert 0 < report['occupied_peak_gib'] <= report['temp_gib']
  assert 0 < report['peak_at'] < report['instructions'] and report['values'] > 10
  largest = report['largest_at_peak']
  assert 0 < len(largest) <= 5
  assert [v['mib'] for v in largest] == sorted((v['mib'] for v in largest), reverse=True)
  for v in largest:
    assert v['live'][0] <= report['peak_at'] <= v['live'][1]
    assert v['shape'].startswith(('f32[', 'bf16[', 's32[', 'u32[', 'pred[', '('))
  # the JAX operations that made them, as the program's metadata names them
  assert any('Discriminator' in v['defined_by'] for v in largest), largest


def test_a_dump_without_the_program_is_one_line_error(tmp_path):
  out = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'tpu_memory_peak.py'), '--dump', str(tmp_path),
       '--program', 'g_main'], capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.startswith('error: no TPU buffer assignment for g_main') and 'Traceback' not in out.stderr
