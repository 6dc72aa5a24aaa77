"""benchmarks/parity.py without the official code: the sg2jax side's config starts from the
initial snapshot, the tick records are read back from both sides' files, and the figure and the
table come out of the records. The whole benchmark (which needs a stylegan2-ada-pytorch checkout
and a python with torch) runs at tiny size when SG2JAX_PEER and SG2JAX_PEER_PYTHON name them.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from goldens import DATA

BENCHMARKS = Path(__file__).parent.parent / 'benchmarks'
sys.path.insert(0, str(BENCHMARKS))

import parity  # noqa: E402  (benchmarks/ is not a package)
import parity_plot  # noqa: E402


def test_sg2jax_side_starts_from_the_initial_snapshot(tmp_path):
  """The dataset zip as the official loader's format; the config trains the setup's networks
  from the official file (`resume_from`: G, D and G_ema as converted, w_avg included), with the
  setup's hyperparameters, no EMA ramp-up, ADA's non-finite policy, no x-flips."""
  from sg2jax.data.sources import ZipSource
  from sg2jax.formats.official import load_official_pickle
  from sg2jax.train.build import build
  setup = parity.ParitySetup(z_dim=32, w_dim=32, mapping_layers=8, total_kimg=0.1,
                             kimg_per_tick=0.05)  # the architecture of the tiny ADA snapshot
  data = parity.write_dataset(tmp_path / 'shapes32.zip', 16, 32, seed=0)
  source = ZipSource(data)
  assert len(source) == 16 and source[3]['image'].shape == (32, 32, 3)
  assert parity.write_dataset(tmp_path / 'shapes32.zip', 16, 32, seed=0) == data  # kept
  config = parity.sg2jax_config(setup, data, 5, 2, DATA / 'ada_snapshot_tiny.pkl')
  exp = build(config)
  official = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')
  for name in ('G', 'D', 'G_ema'):
    jax.tree.map(np.testing.assert_array_equal, exp.transfer[name], official[name].variables)
  cfg = exp.step_template
  assert (cfg.batch_size, cfg.batch_gpu, cfg.style_mixing_prob, cfg.r1_gamma,
          cfg.pl_weight, cfg.pl_batch_shrink, cfg.pl_decay, cfg.g_reg_interval,
          cfg.d_reg_interval, cfg.ema_kimg, cfg.ema_rampup) == (16, 16, 0.9, 0.5, 2.0, 2, 0.01,
                                                               4, 16, 1.0, None)
  np.testing.assert_allclose([exp.hyper.g_lr, exp.hyper.d_lr, exp.hyper.g_beta2],
                             [0.0025 * 4 / 5, 0.0025 * 16 / 17, 0.99 ** 0.8])
  assert (config.nan_policy, config.mirror, config.augment, config.seed) == (
      'nan_to_num', False, 'none', 5)
  assert (exp.loop.snapshot_ticks, exp.hyper.total_nimg) == (2, 100)


def test_tick_records_of_both_sides(tmp_path):
  """The worker's ticks.jsonl (statistics as {name: [count, mean]}) and the sg2jax loop's
  TensorBoard scalars become the same record layout; a statistic a tick did not report is None."""
  run = tmp_path / 'official'
  run.mkdir()
  stats = {'Loss/G/loss': [16, 0.5], 'Parity/scores_fake_g': [16, -0.25],
           'Parity/pl_mean': [2, 0.01], 'Timing/sec_per_kimg': [1, 12.0]}
  (run / 'ticks.jsonl').write_text(json.dumps(
      {'tick': 1, 'kimg': 0.1760000001, 'snapshot': 'x.pkl', 'stats': stats}) + '\n')
  record, = parity.official_ticks(run)
  assert record['tick'] == 1 and record['kimg'] == 0.176 and record['snapshot'] == 'x.pkl'
  assert (record['g_loss'], record['d_fake'], record['pl_mean'], record['sec_per_kimg'],
          record['r1_penalty']) == (0.5, -0.25, 0.01, 12.0, None)

  from clu import metric_writers
  workdir = tmp_path / 'sg2jax'
  writer = metric_writers.create_default_writer(str(workdir), asynchronous=False)
  writer.write_scalars(0, {'Loss/G/loss': 9.0})  # not a tick: no Progress/tick
  writer.write_scalars(10, {'Progress/tick': 1, 'Progress/kimg': 0.16, 'Loss/G/loss': 0.75,
                            'Loss/scores/fake': -0.5, 'Loss/pl_mean': 0.02})
  writer.write_scalars(20, {'Progress/tick': 2, 'Progress/kimg': 0.32, 'Loss/G/loss': 1.5,
                            'Loss/r1_penalty': 0.125})
  writer.close()
  first, second = parity.sg2jax_ticks(workdir, {20: 42.0})
  assert (first['tick'], first['kimg'], first['step'], first['g_loss'], first['d_fake'],
          first['pl_mean'], first['r1_penalty'], first['fd_vgg']) == (
              1, 0.16, 10, 0.75, -0.5, pytest.approx(0.02), None, None)
  assert (second['g_loss'], second['r1_penalty'], second['fd_vgg']) == (1.5, 0.125, 42.0)


def synthetic_records() -> list[dict]:
  """Two seeds per side, three ticks, as parity.py writes them."""
  records = [{'what': 'setup', 'setup': dataclasses.asdict(parity.ParitySetup()),
              'num_images': 2048, 'fd_samples': 2000, 'fd_seed': 0},
             {'what': 'reference', 'fd_vgg': 3.5, 'num_samples': 2000}]
  for seed in (0, 1):
    records.append({'what': 'init', 'seed': seed, 'kimg': 0.0, 'fd_vgg': 300.0 + seed})
    for side, offset in (('official', 0.0), ('sg2jax', 0.1)):
      for tick, kimg in ((1, 2.0), (2, 4.0), (3, 6.0)):
        records.append({
            'what': 'tick', 'side': side, 'seed': seed, 'tick': tick, 'kimg': kimg,
            'g_loss': 1.0 + offset + seed, 'd_loss': 1.2, 'd_real': 0.5, 'd_fake': -0.5,
            'r1_penalty': None if tick == 3 else 0.1 * tick, 'pl_penalty': 0.3,
            'pl_length': 0.7, 'pl_mean': 0.05 * tick, 'sec_per_kimg': 10.0 if side ==
            'official' else 3.0, 'fd_vgg': 100.0 / tick + seed if tick != 1 else None})
      records.append({'what': 'run', 'side': side, 'seed': seed, 'seconds': 60.0, 'ticks': 3})
  return records


def test_figure_and_table(tmp_path, capsys):
  parity.write_outputs(tmp_path, synthetic_records())
  image = Image.open(tmp_path / parity.FIGURE)
  assert image.size == (3 * parity_plot.PANEL_WIDTH, 86 + 3 * parity_plot.PANEL_HEIGHT)
  colours = {c for _, c in image.convert('RGB').getcolors(1 << 20)}
  assert parity_plot.COLORS['official'] in colours and parity_plot.COLORS['sg2jax'] in colours
  table = (tmp_path / parity.TABLE).read_text()
  assert table == capsys.readouterr().out.rstrip('\n') + '\n'
  rows = {line.split('|')[1].strip(): [c.strip() for c in line.split('|')[2:-1]]
          for line in table.splitlines() if line.startswith('| ')}
  # g_loss: seeds 0 and 1 -> 1.0, 2.0 (official), 1.1, 2.1 (sg2jax); std 0.707 each.
  assert rows['g_loss'] == ['1.5 ± 0.707', '1.6 ± 0.707', '+0.14']
  assert rows['r1_penalty'] == ['0.2 ± 0', '0.2 ± 0', '-']  # the last tick that reported it
  assert rows['fd_vgg'][:2] == ['33.83 ± 0.707', '33.83 ± 0.707']
  assert rows['official'] == ['2', '60', '10.00'] and rows['sg2jax'] == ['2', '60', '3.00']
  assert 'noise floor at this sample count): 3.5' in table


def test_band_and_ticks():
  band = parity_plot.aggregate([[(0.0, 1.0), (2.0, 3.0)], [(0.0, 3.0), (2.0, None)]])
  assert band == parity_plot.Band((0.0, 2.0), (2.0, 3.0), (1.0, 3.0), (3.0, 3.0))
  assert parity_plot.aggregate([[(1.0, None)]]) is None
  assert parity_plot.nice_ticks(0, 20) == [0, 5, 10, 15, 20]
  assert parity_plot.nice_ticks(0.0, 1.2) == [0.0, 0.5, 1.0, 1.5]
  assert parity_plot.nice_ticks(-0.43, 2.7) == [-1.0, 0.0, 1.0, 2.0, 3.0]


@pytest.mark.slow
@pytest.mark.skipif(not (os.environ.get('SG2JAX_PEER') and os.environ.get('SG2JAX_PEER_PYTHON')),
                    reason='set SG2JAX_PEER (a stylegan2-ada-pytorch checkout) and '
                           'SG2JAX_PEER_PYTHON (a python with torch) to run the official side')
def test_parity_benchmark_at_tiny_size(tmp_path):
  """Both sides, one seed, two ticks: same initial fd_vgg, every quantity recorded by both."""
  out = subprocess.run(
      [sys.executable, str(BENCHMARKS / 'parity.py'), '--peer', os.environ['SG2JAX_PEER'],
       '--peer-python', os.environ['SG2JAX_PEER_PYTHON'], '--out', str(tmp_path), '--seeds', '0',
       '--kimg', '0.32', '--kimg-per-tick', '0.16', '--fd-every', '1', '--fd-samples', '32',
       '--num-images', '64'], capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stderr[-3000:]
  records = parity.read_results(tmp_path / parity.RESULTS)
  ticks = [r for r in records if r['what'] == 'tick']
  assert [(r['side'], r['tick']) for r in ticks] == [('official', 0), ('official', 1),
                                                     ('official', 2), ('sg2jax', 1), ('sg2jax', 2)]
  last = {r['side']: r for r in ticks if r['tick'] == 2}
  for side in parity.SIDES:
    for quantity in ('g_loss', 'd_loss', 'd_real', 'd_fake', 'r1_penalty', 'pl_penalty',
                     'pl_length', 'pl_mean', 'fd_vgg', 'sec_per_kimg'):
      assert last[side][quantity] is not None and np.isfinite(last[side][quantity]), (
          side, quantity)
  assert (tmp_path / parity.FIGURE).is_file() and (tmp_path / parity.TABLE).is_file()
