"""The README's measured tables are the ones their committed result files give
(`benchmarks/readme_tables.py`), and every result line says what produced it."""

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / 'benchmarks'))

import readme_tables  # noqa: E402  (benchmarks/ is not a package)
import results  # noqa: E402

PROVENANCE = ('command', 'commit', 'date', 'machine', 'run')


def test_every_readme_table_equals_its_result_file():
  assert readme_tables.differences(readme_tables.README.read_text()) == []


def test_a_changed_number_or_a_table_without_its_source_is_caught():
  text = readme_tables.README.read_text()
  measured = [(name, start) for name, start, _ in readme_tables.readme_tables(text)
              if name in readme_tables.TABLES]
  assert measured, 'the README quotes no result file'
  lines = text.splitlines()
  name, start = measured[0]
  row = start + 2  # the first data row
  lines[row] = lines[row].replace('.', ',', 1) if '.' in lines[row] else lines[row] + ' 1 |'
  problems = readme_tables.differences('\n'.join(lines))
  assert len(problems) == 1 and f'table {name} differs' in problems[0]
  problems = readme_tables.differences('intro\n\n| a | b |\n|---|---|\n| 1 | 2 |\n')
  assert len(problems) == 1 and 'without' in problems[0]


def test_every_quoted_result_file_is_committed_with_its_provenance():
  text = readme_tables.README.read_text()
  quoted = {source for name, _, _ in readme_tables.readme_tables(text)
            if name in readme_tables.TABLES
            for source in readme_tables.TABLES[name][0].split(', ')}
  for name in quoted:
    path = results.RESULTS / name
    assert path.is_file(), f'{path} is quoted by the README but missing'
    for number, line in enumerate(path.read_text().splitlines(), 1):
      row = json.loads(line)
      missing = [key for key in PROVENANCE if key not in row]
      assert not missing, f'{path}:{number} lacks {missing}'
      assert {'cpu', 'cores'} <= set(row['machine']), f'{path}:{number}'
      assert not re.search(r'(^|[\s=])/', line), f'{path}:{number} names a path of one machine'


def test_result_lines_name_no_path_of_one_machine():
  root = str(results.RESULTS.parent.parent)
  command = f'python x.py --out {root}/benchmarks/results/x.jsonl --peer /opt/peer --tmp {tempfile.gettempdir()}/r'
  assert results.portable(command) == ('python x.py --out benchmarks/results/x.jsonl '
                                       '--peer $OUTSIDE/peer --tmp $TMPDIR/r')


def test_the_tpu_table_shows_the_largest_batch_a_max_batch_run_found(monkeypatch):
  """A `--max-batch` run's lines give their phase's line the largest per-chip batch (with the
  search's commit where it differs); a search newer than the plain compile, or without one,
  is the phase's line."""
  def line(program, commit, max_batch=False, largest=None, resolution=256):
    return {'config': 'experiments/ffhq.py', 'topology': 'v5e-8', 'resolution_setting': resolution,
            'dtype': 'bfloat16', 'precision': 'default', 'remat': 'none', 'batch_gpu': 4,
            'max_batch': max_batch, 'program': program, 'ok': True, 'fits': True,
            'hbm_gib': 5.5, 'argument_gib': 0.5, 'capacity_gib': 15.75, 'gflop': 100.0,
            'gflop_per_image': 3.0, 'compile_seconds': 60.0, 'batch_per_chip': 32,
            'commit': commit, 'date': '2026-12-07', 'run': f'2026-12-07T{commit}',
            **({'max_batch_per_chip': largest} if max_batch else {})}
  rows = [line('g_main', 'bbb'), line('d_reg', 'aaa'), line('g_reg', 'aaa'),
          line('g_main', 'aaa', max_batch=True, largest=88),
          line('d_reg', 'aaa', max_batch=True, largest=None),
          line('g_reg', 'bbb', max_batch=True, largest=64),
          line('d_main', 'bbb', max_batch=True, largest=70, resolution=512)]
  monkeypatch.setattr(readme_tables, '_rows', lambda name: rows)
  table = readme_tables.tpu_phases().splitlines()
  assert 'largest images per chip' in table[0]
  cells = {(row[2], row[5]): row for row in
           ([c.strip() for c in text.split('|')] for text in table[2:])}
  assert cells[('256', 'G main')][10] == '88 (aaa)' and cells[('256', 'G main')][-2] == 'bbb'
  assert cells[('256', 'D reg (R1)')][10] == 'none'
  assert cells[('256', 'G reg (path length)')][10] == '64'
  assert cells[('256', 'G reg (path length)')][-2] == 'bbb'
  assert cells[('512', 'D main')][10] == '70' and cells[('512', 'D main')][-2] == 'bbb'
  assert len(table) == 2 + 4


def test_the_tpu_table_marks_refusals_with_what_the_compiler_named(monkeypatch):
  """A program refused for lack of memory: its cell is `>` the temporaries the compiler asked
  for, or `>` the chip's capacity where it named no figure; never a crash."""
  base = {'config': 'experiments/ffhq.py', 'topology': 'v5e-8', 'resolution_setting': 1024,
          'dtype': 'bfloat16', 'precision': 'default', 'remat': 'blocks', 'batch_gpu': 4,
          'max_batch': False, 'ok': True, 'fits': False, 'capacity_gib': 15.75, 'gflop': None,
          'gflop_per_image': None, 'compile_seconds': 60.0, 'batch_per_chip': 16,
          'commit': 'aaa', 'date': '2026-12-07', 'argument_gib': None}
  rows = [{**base, 'program': 'g_main', 'hbm_gib': 22.96},
          {**base, 'program': 'd_main', 'hbm_gib': None},
          {**base, 'program': 'g_main@1024', 'hbm_gib': None}]
  monkeypatch.setattr(readme_tables, '_rows', lambda name: rows if 'tpu' in name else [])
  cells = {row[5]: row for row in ([c.strip() for c in text.split('|')]
                                   for text in readme_tables.tpu_phases().splitlines()[2:])}
  assert cells['G main'][7:10] == ['>22.96', '15.75', '**does not fit**']
  assert cells['D main'][7:10] == ['>15.75', '15.75', '**does not fit**']
  growing = readme_tables.tpu_growing().splitlines()[2]
  assert '>15.75 **does not fit**' in growing
