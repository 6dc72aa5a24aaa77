"""The accelerator and Winograd benchmarks run end to end at tiny size on the CPU (their JSON
lines)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / 'benchmarks'


@pytest.mark.slow  # compiles the five phases: ~1 min on 2 cores
def test_accelerator_benchmark_runs_at_tiny_size():
  out = subprocess.run([sys.executable, str(BENCHMARKS / 'accelerator.py'), '--tiny',
                        '--settings', 'float32/highest'],
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
  assert [line['what'] for line in lines] == ['setup'] + ['phase'] * 5 + ['minibatch']
  phases = {line['phase']: line for line in lines if line['what'] == 'phase'}
  assert set(phases) == {'g_main', 'g_reg', 'd_main', 'd_reg', 'ema'}
  assert all(line['seconds'] > 0 for line in phases.values())
  assert phases['d_main']['gflop'] > phases['ema']['gflop']
  minibatch = lines[-1]
  weighted = sum(w * phases[n]['seconds'] for n, w in
                 {'g_main': 1, 'g_reg': 1 / 4, 'd_main': 1, 'd_reg': 1 / 16, 'ema': 1}.items())
  assert abs(minibatch['seconds'] - weighted) < 1e-3 * weighted + 1e-5
  assert minibatch['images_per_s'] > 0 and minibatch['tflops'] > 0
  assert minibatch['mfu'] is None  # no peak known for a CPU
  assert set(minibatch['generate_images_per_s']) == {'fused', 'unfused'}


def test_winograd_benchmark_times_layers_at_tiny_size():
  out = subprocess.run([sys.executable, str(BENCHMARKS / 'winograd_benchmark.py'), '--layers',
                        '--channels', '4', '256', '--sizes', '32', '--batch', '8',
                        '--repeats', '1'], capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
  assert [(row['channels'], row['size']) for row in rows] == [(4, 32), (256, 32)]
  assert [row['winograd_applies'] for row in rows] == [False, True]
  for row in rows:
    for name in ('forward', 'weight_gradient'):
      assert row[f'{name}_direct_s'] > 0 and row[f'{name}_winograd_s'] > 0
      assert row[f'{name}_ratio'] > 0


@pytest.mark.slow  # compiles the demo generator's two explorer views (~10 s on 2 busy cores)
def test_explore_benchmark_times_both_views(tmp_path):
  """`benchmarks/explore_benchmark.py` at tiny size (the demo generator, one timed frame per view),
  in this process."""
  sys.path.insert(0, str(BENCHMARKS))
  import explore_benchmark
  rows = explore_benchmark.benchmark('demo', frames=1)
  assert [(r['view'], r['shape']) for r in rows] == [('image', [32, 32, 3]),
                                                     ('preview', [16, 16, 3])]
  assert all(r['ms_per_frame'] > 0 and r['with_png_ms_per_frame'] >= r['ms_per_frame']
             for r in rows)


def test_the_readme_explore_table_comes_from_its_results_file():
  sys.path.insert(0, str(BENCHMARKS))
  import readme_tables
  readme = (BENCHMARKS.parent / 'README.md').read_text()
  assert f'<!-- table: explore_frames -->\n{readme_tables.explore_frames()}\n' in readme
