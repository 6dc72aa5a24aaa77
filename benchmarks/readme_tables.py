"""The README's measured tables, made from the result files in `benchmarks/results/`.

  python benchmarks/readme_tables.py            # print the tables the README quotes
  python benchmarks/readme_tables.py --write    # put them into README.md

In README.md each measured table follows a line `<!-- table: NAME -->`; NAME is one of
`TABLES`, which names the result files it is made from. `tests/test_readme_tables.py` fails when a
table in the README differs from what its result file gives, or when a README table has no such
line (tables of facts that are not measurements say so: `<!-- table: not measured (why) -->`).
Only the standard library: the test runs without jax.
"""

import argparse
import re
import sys
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).parent))

import results  # noqa: E402  (benchmarks/results.py)
import tpu_compile  # noqa: E402  (benchmarks/tpu_compile.py)

README = Path(__file__).parent.parent / 'README.md'
MARKER = re.compile(r'^<!-- table: (.+?) -->$')

PHASE_LABELS = {'g_main': 'G main', 'g_reg': 'G reg (path length)', 'd_main': 'D main',
                'd_reg': 'D reg (R1)', 'ema': 'G_ema update'}


def _rows(name: str) -> list[dict]:
  return results.read(results.RESULTS / name)


def _table(header: list[str], align: str, rows: list[list[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---:' if a == 'r' else '---' for a in align) + '|']
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines)


def _peer_runs() -> list[dict]:
  """The newest peer-benchmark run per resolution."""
  rows = _rows('peer_benchmark.jsonl')
  out = []
  for resolution in sorted({r['resolution'] for r in rows}):
    out += results.latest_run(rows, resolution=resolution)
  return out


def training_speed() -> str:
  rows = [[str(r['resolution']), PHASE_LABELS[r['phase']], f'{r["sg2jax_median_s"]:.2f}',
           f'{r["official_median_s"]:.2f}',
           f'**{r["ratio_median"]:.2f}** (min {r["ratio_min"]:.2f})', f'{r["gflop"]:.1f}',
           f'{r["gflops_per_s"]:.0f}', f'{r["compile_seconds"]:.0f}']
          for r in _peer_runs() if r['what'] == 'phase']
  return _table(['resolution', 'phase', 'sg2jax s', 'official s', 'sg2jax / official',
                 'GFLOP (XLA)', 'sg2jax GFLOP/s', 'sg2jax compile s'], 'rlrrrrrr', rows)


def training_minibatch() -> str:
  rows = [[str(r['resolution']), r['formula'], f'{r["sg2jax_s"]:.2f}', f'{r["official_s"]:.2f}',
           f'**{r["sg2jax_images_per_s"]:.3f}**', f'{r["official_images_per_s"]:.3f}',
           f'**{r["ratio"]:.2f}**']
          for r in _peer_runs() if r['what'] == 'minibatch']
  return _table(['resolution', 'phases (as the loops run them)', 'sg2jax s', 'official s',
                 'sg2jax images/s', 'official images/s', 'sg2jax / official'], 'rlrrrrr', rows)


def winograd_layers() -> str:
  rows = results.latest_run(_rows('winograd_benchmark.jsonl'), what='layer')
  sizes = sorted({r['size'] for r in rows})
  cells = {(r['channels'], r['size']): r for r in rows}
  table = []
  for channels in sorted({r['channels'] for r in rows}):
    row = [str(channels)]
    for size in sizes:
      r = cells.get((channels, size))
      if r is None:
        row.append('')
        continue
      cell = f'{r["forward_ratio"]:.2f} / {r["weight_gradient_ratio"]:.2f}'
      row.append(f'**{cell}**' if r['winograd_applies'] else cell)
    table.append(row)
  return _table(['channels'] + [f'{s}x{s}' for s in sizes], 'r' * (len(sizes) + 1), table)


def winograd_phases() -> str:
  rows = results.latest_run(_rows('winograd_benchmark.jsonl'), what='phase')
  return _table(['phase', 'resolution', 'direct s', 'Winograd s', 'Winograd / direct',
                 'GFLOP direct', 'GFLOP Winograd'], 'lrrrrrr',
                [[PHASE_LABELS[r['phase']], str(r['resolution']), f'{r["direct_median_s"]:.2f}',
                  f'{r["winograd_median_s"]:.2f}', f'**{r["ratio"]:.2f}**',
                  f'{r["gflop_direct"]:.0f}', f'{r["gflop_winograd"]:.0f}'] for r in rows])


def _tpu_rows(growing: bool) -> list[dict]:
  """The newest compile of each training phase of each setting: of config F (fixed schedule),
  or of the growing configs (programs named `phase@resolution`)."""
  rows = tpu_compile.newest(_rows('tpu_compile.jsonl'))
  return [r for r in rows if r['program'].split('@')[0] in PHASE_LABELS
          and ('@' in r['program']) == growing]


def _hbm_cell(r: dict) -> str:
  """HBM per chip of a compiled program; `>x` where the compiler refused it for lack of memory
  and named only the temporaries it wanted (x), or no figure at all (x: the chip's capacity)."""
  if r['hbm_gib'] is None:
    return f'>{r["capacity_gib"]:.2f}'
  if r.get('argument_gib') is None:
    return f'>{r["hbm_gib"]:.2f}'
  return f'{r["hbm_gib"]:.2f}'


def tpu_phases() -> str:
  """Every training phase compiled for a TPU slice: HBM per chip against the chip's capacity
  (the newest compile of each setting), and the largest per-chip batch where a `--max-batch`
  run searched it (with the search's commit where that differs from the line's)."""
  # A search's first try is the phase at its own batch: its line, where newer than the plain
  # compile's, stands for the phase.
  key = lambda r: tpu_compile.combination_key(r)[:-1] + (r['program'],)
  when = lambda r: r.get('run', r['date'])
  lines: dict[tuple, dict] = {}
  largest: dict[tuple, dict] = {}
  for r in _tpu_rows(growing=False):
    if r.get('max_batch'):
      largest[key(r)] = r
    if key(r) not in lines or when(r) > when(lines[key(r)]):
      lines[key(r)] = r
  rows = list(lines.values())
  order = {name: i for i, name in enumerate(PHASE_LABELS)}
  rows.sort(key=lambda r: (r['topology'], -r['resolution_setting'], r['dtype'], r['precision'],
                           r.get('remat', 'none'), r['batch_per_chip'],
                           order[r['program'].split('@')[0]]))
  table = []
  for r in rows:
    if r['ok']:
      hbm = _hbm_cell(r)
      verdict = 'fits' if r['fits'] else '**does not fit**'
    else:
      hbm, verdict = '', '**failed to compile**'
    searched = largest.get(key(r))
    most = ''
    if searched is not None:
      most = str(searched.get('max_batch_per_chip') or 'none')
      if searched['commit'] != r['commit']:
        most += f' ({searched["commit"]})'
    table.append([r['topology'], str(r['resolution_setting']),
                  f'{r["dtype"]}, {r["precision"]}', r.get('remat', 'none'),
                  PHASE_LABELS[r['program'].split('@')[0]], str(r['batch_per_chip']), hbm,
                  f'{r["capacity_gib"]:.2f}', verdict, most,
                  '' if r.get('gflop') is None else f'{r["gflop"]:.0f}',
                  '' if r.get('gflop_per_image') is None else f'{r["gflop_per_image"]:.0f}',
                  f'{r["compile_seconds"]:.0f}', r['commit']])
  return _table(['slice', 'resolution', 'dtype, precision', 'remat', 'phase', 'images per chip',
                 'HBM per chip GiB', 'of GiB', 'verdict', 'largest images per chip',
                 'GFLOP per chip', 'GFLOP per image', 'compile s here', 'commit'],
                'lrlllrrrlrrrrl', table)


def _config_label(config: str) -> str:
  """'experiments/ffhq.py:config=d' -> 'config D'."""
  return f'config {config.rsplit("=", 1)[1].upper()}' if ':config=' in config else config


def tpu_growing() -> str:
  """Configs A-D: per working resolution of the schedule, each phase's HBM per chip."""
  by_stage: dict[tuple, dict[str, dict]] = {}
  for r in _tpu_rows(growing=True):
    name, resolution = r['program'].split('@')
    key = (r['config'], r['topology'], r['dtype'], r['precision'], r.get('remat', 'none'),
           int(resolution))
    by_stage.setdefault(key, {})[name] = r
  # A config whose program lowers to the same text as another config's compiled one
  # (benchmarks/same_programs.py) shows that one's figures, marked as such.
  same = {}
  for r in _rows('same_programs.jsonl'):
    if r['identical']:
      name, resolution = r['program'].split('@')
      key = (r['configs'][0], r['slice'], r['dtype'], r['precision'], r['remat'], int(resolution))
      same[key + (name,)] = (r['configs'][1],) + key[1:]
  for (*key, name), source in same.items():
    compiled = by_stage.get(source, {}).get(name)
    stage = by_stage.setdefault(tuple(key), {})
    if compiled is not None and name not in stage:
      stage[name] = {**compiled, 'config': key[0], 'same_as': source[0]}
  phases = [name for name in PHASE_LABELS if name != 'ema']
  table = []
  for key in sorted(by_stage, key=lambda k: k[:5] + (-k[5],)):
    config, slice_name, dtype, precision, remat, resolution = key
    stage = by_stage[key]
    first = next(iter(stage.values()))
    cells = []
    for name in phases:
      r = stage.get(name)
      if r is None:
        cells.append('')
      elif not r['ok']:
        cells.append('**failed to compile**')
      else:
        cells.append(_hbm_cell(r) + ('' if r['fits'] else ' **does not fit**')
                     + (f' (= {_config_label(r["same_as"])})' if 'same_as' in r else ''))
    commits = ', '.join(sorted({r['commit'] for r in stage.values()}))
    table.append([config, slice_name, f'{dtype}, {precision}', remat, str(resolution),
                  str(first['batch_per_chip'])] + cells +
                 [f'{first["capacity_gib"]:.2f}', commits])
  return _table(['config', 'slice', 'dtype, precision', 'remat', 'working resolution',
                 'images per chip'] + [f'{PHASE_LABELS[n]} GiB' for n in phases] +
                ['of GiB', 'commit'], 'llllrr' + 'r' * len(phases) + 'rl', table)


def _finetune(what: str, name: Optional[str] = None) -> list[dict]:
  return [r for r in results.latest_run(_rows('finetune_demo.jsonl'), what=what)
          if name is None or r['name'] == name]


def _fmt(value, digits=3) -> str:
  return '' if value is None else f'{value:.{digits}f}'


def demo_losses() -> str:
  ticks = _finetune('tick', 'source')
  shown = [t for i, t in enumerate(ticks) if i in (0, len(ticks) - 1) or i % 5 == 4]
  return _table(['kimg', 'G loss', 'D loss', 'D(real)', 'D(fake)', 'R1 penalty', 'pl_mean'],
                'rrrrrrr',
                [[f'{t["kimg"]:g}', _fmt(t['G_loss']), _fmt(t['D_loss']), _fmt(t['D_real']),
                  _fmt(t['D_fake']), _fmt(t['r1_penalty']), _fmt(t['pl_mean'])] for t in shown])


def finetune_end() -> str:
  fd = {r['name']: r for r in _finetune('fd_vgg2k')}
  table = []
  for name in fd:
    if name in ('source', 'floor'):
      continue
    augment, images = name.rsplit('_', 1)
    last = _finetune('tick', name)[-1]
    table.append([f'augment={augment} ({fd[name]["train_seconds"] / 60:.1f} min)', images,
                  f'{last["kimg"]:.1f}', _fmt(last['G_loss']), _fmt(last['D_loss']),
                  _fmt(last['D_real']), _fmt(last['D_fake']), _fmt(last['p']),
                  f'{fd[name]["value"]:.3f}'])
  source = _finetune('tick', 'source')
  if 'source' in fd and source:
    table.append(['source (the demo, before)', '2048', f'{source[-1]["kimg"]:g}', '', '', '',
                  '', '', f'{fd["source"]["value"]:.3f}'])
  if 'floor' in fd:
    table.append(['held-out reals vs reals', '', '', '', '', '', '', '',
                  f'{fd["floor"]["value"]:.3f}'])
  return _table(['run', 'images', 'kimg', 'G loss', 'D loss', 'D(real)', 'D(fake)', 'p',
                 'fd_vgg2k'], 'lrrrrrrrr', table)


def finetune_ticks() -> str:
  names = [r['name'] for r in _finetune('fd_vgg2k') if r['name'] not in ('source', 'floor')]
  small = [n for n in names if not n.endswith('_50000')]
  none = next(n for n in small if n.startswith('none'))
  ada = next(n for n in small if n.startswith('ada'))
  runs = {n: _finetune('tick', n) for n in (none, ada)}
  table = []
  for a, b in zip(runs[none], runs[ada]):
    if round(a['kimg']) % 4 or round(a['kimg']) == 0:
      continue
    table.append([f'{a["kimg"]:g}', _fmt(a['D_loss']), _fmt(b['D_loss']),
                  f'{a["D_real"]:.2f} / {a["D_fake"]:.2f}', f'{b["D_real"]:.2f} / {b["D_fake"]:.2f}',
                  _fmt(b['rt']), _fmt(b['p'], 4)])
  return _table(['kimg', 'D loss, no aug', 'D loss, ADA', 'D(real) / D(fake), no aug',
                 'D(real) / D(fake), ADA', 'ADA r_t', 'ADA p'], 'rrrrrrr', table)


def parity_end() -> str:
  from parity import end_of_run_table  # benchmarks/parity.py
  return end_of_run_table(results.latest_run(_rows('parity.jsonl')))


def parity_wall() -> str:
  from parity import wall_time_table  # benchmarks/parity.py
  return wall_time_table(results.latest_run(_rows('parity.jsonl')))


def explore_frames() -> str:
  labels = {'demo': 'demo (`experiments/demo.py`, 32x32)',
            'f256': 'config F, 256x256 (30M parameters)'}
  rows = {(r['network'], r['view']): r for r in results.latest_run(_rows('explore.jsonl'))}
  out = []
  for network, label in labels.items():
    image, preview = rows.get((network, 'image')), rows.get((network, 'preview'))
    if image and preview:
      side = preview['shape'][0]
      out.append([label, f'{image["ms_per_frame"]:,.1f}',
                  f'{preview["ms_per_frame"]:,.1f} ({side}x{side})',
                  f'{max(image["load_average_1min"], preview["load_average_1min"]):.0f}'])
  return _table(['network', 'full image, ms', 'preview while dragging, ms',
                 'load average (1 min)'], 'lrrr', out)


def checkpoint_saves() -> str:
  """Asynchronous checkpoint saves against training steps, one row per run."""
  rows = sorted(_rows('save_benchmark.jsonl'), key=lambda r: r['date'])
  return _table(['destination', 'run (UTC)', '`save()` returned after', 'whole save',
                 'steps while saving', 'step without a save (median)'], 'llrrlr',
                [[r['destination'], r['date'][:16].replace('T', ' '),
                  f'{r["save_blocking_ms"]:.0f} ms', f'{r["save_seconds"]:.1f} s',
                  f'{r["steps_during_save"]}: ' + ', '.join(f'{ms / 1000:.1f} s'
                                                          for ms in r['step_ms_during_save']),
                  f'{r["step_ms_without_save"] / 1000:.1f} s'] for r in rows])


# name: (the result files it is made from, comma-separated; its renderer)
TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    'training_speed': ('peer_benchmark.jsonl', training_speed),
    'training_minibatch': ('peer_benchmark.jsonl', training_minibatch),
    'winograd_layers': ('winograd_benchmark.jsonl', winograd_layers),
    'winograd_phases': ('winograd_benchmark.jsonl', winograd_phases),
    'tpu_phases': ('tpu_compile.jsonl', tpu_phases),
    'tpu_growing': ('tpu_compile.jsonl, same_programs.jsonl', tpu_growing),
    'demo_losses': ('finetune_demo.jsonl', demo_losses),
    'finetune_end': ('finetune_demo.jsonl', finetune_end),
    'finetune_ticks': ('finetune_demo.jsonl', finetune_ticks),
    'checkpoint_saves': ('save_benchmark.jsonl', checkpoint_saves),
    'parity_end': ('parity.jsonl', parity_end),
    'parity_wall': ('parity.jsonl', parity_wall),
    'explore_frames': ('explore.jsonl', explore_frames),
}


def readme_tables(text: str) -> list[tuple[str, int, int]]:
  """(name, first line, end line) of every table in `text` after its marker line; name None for
  a table without one."""
  lines = text.splitlines()
  found, i = [], 0
  while i < len(lines):
    if lines[i].startswith('|'):
      start = i
      while i < len(lines) and lines[i].startswith('|'):
        i += 1
      marker = MARKER.match(lines[start - 1]) if start > 0 else None
      found.append((marker.group(1) if marker else None, start, i))
    else:
      i += 1
  return found


def differences(text: str) -> list[str]:
  """One line per README table that lacks its marker or differs from its result file."""
  lines, problems = text.splitlines(), []
  for name, start, end in readme_tables(text):
    where = f'README.md line {start + 1}'
    if name is None:
      problems.append(f'{where}: a table without a "<!-- table: NAME -->" line before it')
    elif name in TABLES:
      expected = TABLES[name][1]()
      if '\n'.join(lines[start:end]) != expected:
        problems.append(f'{where}: table {name} differs from benchmarks/results/'
                        f'{TABLES[name][0]}; run python benchmarks/readme_tables.py --write\n'
                        f'expected:\n{expected}')
    elif not name.startswith('not measured'):
      problems.append(f'{where}: unknown table {name!r}; known: {", ".join(TABLES)}')
  return problems


def write(path: Path = README) -> None:
  lines = path.read_text().splitlines()
  for name, start, end in reversed(readme_tables('\n'.join(lines))):
    if name in TABLES:
      lines[start:end] = TABLES[name][1]().splitlines()
  path.write_text('\n'.join(lines) + '\n')


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--write', action='store_true', help='put the tables into README.md')
  args = p.parse_args()
  if args.write:
    write()
    return
  # Only the tables the README quotes: the others wait for result files not yet committed.
  quoted = {name for name, _, _ in readme_tables(README.read_text())}
  for name, (source, render) in TABLES.items():
    if name in quoted:
      print(f'<!-- table: {name} --> (from benchmarks/results/{source})\n{render()}\n')


if __name__ == '__main__':
  main()
