"""Training parity with the official code: whole runs of one small setup, official vs sg2jax.

  python benchmarks/parity.py --peer /path/to/stylegan2-ada-pytorch \
      --peer-python /path/to/torchvenv/bin/python --out runs/parity
  # a smoke test at tiny size (minutes):
  python benchmarks/parity.py --peer PEER --peer-python PYTHON --out /tmp/parity-smoke \
      --seeds 0 --kimg 0.32 --kimg-per-tick 0.16 --fd-every 1 --fd-samples 64 --num-images 256

Unit tests prove sg2jax's training one step at a time (losses and gradients equal the official
ones); this shows whole runs behave the same: the phase schedule, lazy intervals, EMA, style
mixing, pl_mean and Adam together. For each seed:
1. The official code writes the initial networks (benchmarks/parity_torch_worker.py `init`:
   G, D and G_ema built by the official classes under `torch.manual_seed(seed)`, pickled as the
   official loop pickles its snapshots).
2. The official training loop (`training/training_loop.py`, run unmodified on the CPU by the
   worker's `train`, in its own process) trains from that file (its `resume_pkl`), writing a
   snapshot every tick.
3. sg2jax trains from the same file: `config.resume_from` (its converter,
   `sg2jax.checkpoint.load_networks`, reads G, D and G_ema; Adam starts fresh at step 0).
Both sides thus start as a fine-tuning run from a file starts: without the EMA ramp-up (ADA's
train.py turns it off for `--resume`, sg2jax for `resume_from`).
Both train on the same dataset zip (`ShapesSource` images -> `python -m sg2jax.dataset_tool`;
the official `ImageFolderDataset` reads it) for the same number of images, with the same
settings: config F's architecture small (experiments/demo.py: G skip, D resnet, 32 channels up
to 16x16 and 16 at 32x32, z = w = 64, 2 mapping layers), minibatch 16 in one accumulation round
(`--batch-gpu` = batch: rounds change how ADA sums gradients and updates pl_mean, REFERENCE.md §9),
minibatch-stddev groups of 4, Adam (lr 0.0025, betas 0 / 0.99), lazy R1 (gamma 0.5, every 16)
and path length (weight 2, every 4, batch / 2, decay 0.01), style mixing 0.9, G_ema half-life
1 kimg, non-finite gradients as ADA (`nan_to_num`), float32, no clamp, no augmentation, no
x-flips.

Every tick both sides record the means over the tick of: G loss, D loss, D(real) (D main phase),
D(fake) (G main phase), R1 penalty, path-length penalty, path length, pl_mean, and s/kimg; and
every `--fd-every` ticks (and at the end) `fd_vgg` of G_ema against the data
(sg2jax.metrics.fd_vgg: `--fd-samples` generated vs as many reals, seed `--fd-seed`), computed
by the same sg2jax code for both: the official side's snapshots are converted, sg2jax's G_ema is
measured by a snapshot hook.
The initial networks' fd_vgg is the kimg-0 point of both curves, and the fd_vgg of the reals
against an independent draw of the same shapes (a new ShapesSource seed) is the noise floor.

Output in --out: `parity.jsonl` (a `setup` line, a `reference` line, then one line per tick,
side and seed: `side`, `seed`, `tick`, `kimg` and the quantities; then a `run` line per side and
seed with its wall time), `parity.png` (each quantity over kimg, official vs sg2jax, mean and
min-max over seeds), `parity_table.md` (the last tick: mean ± std over seeds per side), and the
runs (`seed<S>/init.pkl`, `seed<S>/official/`, `seed<S>/sg2jax/`; a second run in the same
--out replaces them, keeping the dataset and the real-feature cache). `--plot-only` redraws the
figure and the table from an existing `parity.jsonl`.

The official code is imported at run time from --peer by the worker and is never copied here or
a dependency of sg2jax (see benchmarks/peer_benchmark.py for installing it and its python).
"""

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

WORKER = Path(__file__).resolve().parent / 'parity_torch_worker.py'
RESULTS, FIGURE, TABLE = 'parity.jsonl', 'parity.png', 'parity_table.md'
FD_METRIC = 'fd_vgg2k'
SIDES = ('official', 'sg2jax')

# Quantity -> (the official loop's statistic, sg2jax's scalar). `Parity/*` are the worker's
# reports (parity_torch_worker.py: its loss reports what sg2jax reports, where the official
# statistic mixes phases).
QUANTITIES = {
    'g_loss': ('Loss/G/loss', 'Loss/G/loss'),
    'd_loss': ('Loss/D/loss', 'Loss/D/loss'),
    'd_real': ('Parity/scores_real_d', 'Loss/scores/real'),
    'd_fake': ('Parity/scores_fake_g', 'Loss/scores/fake'),
    'r1_penalty': ('Loss/r1_penalty', 'Loss/r1_penalty'),
    'pl_penalty': ('Loss/pl_penalty', 'Loss/pl_penalty'),
    'pl_length': ('Parity/pl_length', 'Loss/pl_length'),
    'pl_mean': ('Parity/pl_mean', 'Loss/pl_mean'),
    'sec_per_kimg': ('Timing/sec_per_kimg', 'Timing/sec_per_kimg'),
}
TITLES = {
    'g_loss': 'G loss', 'd_loss': 'D loss', 'd_real': 'D(real), D main phase',
    'd_fake': 'D(fake), G main phase', 'r1_penalty': 'R1 penalty (|grad D(real)|^2)',
    'pl_penalty': 'path-length penalty', 'pl_length': 'path length', 'pl_mean': 'pl_mean',
    'fd_vgg': 'fd_vgg of G_ema (lower is better)',
}


@dataclasses.dataclass(frozen=True)
class ParitySetup:
  """The one configuration both sides train (the worker reads it as JSON)."""
  resolution: int = 32
  channel_base: int = 512
  channel_max: int = 32
  z_dim: int = 64
  w_dim: int = 64
  mapping_layers: int = 2
  mbstd_group_size: int = 4
  batch_size: int = 16
  batch_gpu: int = 16
  lr: float = 0.0025
  r1_gamma: float = 0.5
  style_mixing_prob: float = 0.9
  pl_weight: float = 2.0
  pl_batch_shrink: int = 2
  pl_decay: float = 0.01
  g_reg_interval: int = 4
  d_reg_interval: int = 16
  ema_kimg: float = 1.0  # no ramp-up: both sides start from a file (see the module docstring)
  total_kimg: float = 20.0
  kimg_per_tick: float = 2.5


def sg2jax_config(setup: ParitySetup, data: Path, seed: int, fd_every: int,
                  init_pkl: Optional[Path] = None):
  """experiments/demo.py with the setup's values: the sg2jax side's training config, starting
  from `init_pkl` (`resume_from`)."""
  from experiments import demo
  config = demo.get_config()
  if 'resume_from' not in config:
    raise SystemExit('error: this sg2jax has no config.resume_from (fine-tuning from a file), '
                     'which the sg2jax side starts from')
  config.resume_from = '' if init_pkl is None else str(init_pkl)
  config.seed = seed
  config.data.source, config.data.path, config.data.num_images = 'zip', str(data), 0
  config.resolution = setup.resolution
  config.mirror = False
  config.total_kimg, config.kimg_per_tick = setup.total_kimg, setup.kimg_per_tick
  config.batch_size, config.batch_gpu = setup.batch_size, setup.batch_gpu
  for net in (config.G, config.D):
    net.channel_base, net.channel_max = setup.channel_base, setup.channel_max
  config.G.z_dim, config.G.w_dim = setup.z_dim, setup.w_dim
  config.G.mapping_layers = setup.mapping_layers
  config.D.mbstd_group_size = setup.mbstd_group_size
  config.g_lr = config.d_lr = setup.lr
  config.r1_gamma, config.style_mixing_prob = setup.r1_gamma, setup.style_mixing_prob
  config.pl_weight, config.pl_batch_shrink = setup.pl_weight, setup.pl_batch_shrink
  config.pl_decay = setup.pl_decay
  config.g_reg_interval, config.d_reg_interval = setup.g_reg_interval, setup.d_reg_interval
  config.ema_kimg, config.ema_rampup = setup.ema_kimg, None
  config.nan_policy = 'nan_to_num'  # as ADA
  config.precision = 'highest'
  config.snapshot_ticks = fd_every  # the fd_vgg hook runs at every snapshot (and at the end)
  config.image_snapshot_ticks = 10 ** 6  # a sample grid at the end only
  config.keep_checkpoints = 2
  config.metrics = ()
  return config


# ----------------------------------------------------------------------------------------------
# Data and the official side.

def write_dataset(path: Path, num_images: int, resolution: int, seed: int) -> Path:
  """`ShapesSource(num_images, resolution, seed)` as PNGs -> `python -m sg2jax.dataset_tool` ->
  an official-format zip at `path` (kept; remade if its image count differs)."""
  import zipfile
  from sg2jax.data.sources import ShapesSource
  from sg2jax.images import save_image
  if path.is_file():
    with zipfile.ZipFile(path) as z:
      if sum(n.endswith('.png') for n in z.namelist()) == num_images:
        return path
    path.unlink()
  folder = path.with_suffix('')
  folder.mkdir(parents=True, exist_ok=True)
  source = ShapesSource(num_images, resolution, seed=seed)
  for i in range(num_images):
    save_image(folder / f'{i:06d}.png', source[i]['image'])
  out = subprocess.run([sys.executable, '-m', 'sg2jax.dataset_tool', '--source', str(folder),
                        '--dest', str(path), '--resolution', str(resolution)],
                       capture_output=True, text=True, check=False)
  if out.returncode:
    raise SystemExit(f'error: dataset_tool failed: {out.stderr.strip().splitlines()[-1:]}')
  return path


def run_worker(args, command: str, log: Path, *extra: str) -> float:
  """The official worker in its own process (stdout and stderr to `log`); returns seconds."""
  cmd = [args.peer_python, str(WORKER), command, '--peer', args.peer, '--setup',
         str(args.out / 'setup.json'), *extra]
  start = time.perf_counter()
  with open(log, 'w', encoding='utf-8') as f:
    code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
  if code:
    lines = log.read_text(errors='replace').strip().splitlines()
    raise SystemExit(f'error: the official worker ({command}) failed with code {code}: '
                     f'{lines[-1] if lines else "no output"} (see {log})')
  return time.perf_counter() - start


def official_ticks(run_dir: Path) -> list[dict[str, Any]]:
  """The worker's `ticks.jsonl` -> per tick: tick, kimg, snapshot and the quantities."""
  ticks = []
  for line in (run_dir / 'ticks.jsonl').read_text().splitlines():
    entry = json.loads(line)
    stats = entry['stats']
    record = {'tick': entry['tick'], 'kimg': round(entry['kimg'], 6),
              'snapshot': entry['snapshot']}
    for name, (theirs, _) in QUANTITIES.items():
      record[name] = stats[theirs][1] if theirs in stats else None
    ticks.append(record)
  return ticks


# ----------------------------------------------------------------------------------------------
# The sg2jax side.

def tensorboard_scalars(workdir: Path) -> dict[int, dict[str, float]]:
  """Every scalar the training loop wrote to `workdir`'s TensorBoard files, by step."""
  from tensorboard.backend.event_processing import event_file_loader
  from tensorboard.util import tensor_util
  out: dict[int, dict[str, float]] = {}
  for path in sorted(workdir.glob('events.out.tfevents.*')):
    for event in event_file_loader.EventFileLoader(str(path)).Load():
      for value in event.summary.value:
        if value.HasField('tensor'):
          array = tensor_util.make_ndarray(value.tensor)
          if array.size == 1 and array.dtype.kind == 'f':
            out.setdefault(event.step, {})[value.tag] = float(array.reshape(()))
        elif value.HasField('simple_value'):
          out.setdefault(event.step, {})[value.tag] = float(value.simple_value)
  return out


def sg2jax_ticks(workdir: Path, fd_by_step: dict[int, float]) -> list[dict[str, Any]]:
  """The loop's per-tick scalars (steps with `Progress/tick`) -> per tick: tick, kimg, the
  quantities and the hook's fd_vgg."""
  ticks = []
  for step, scalars in sorted(tensorboard_scalars(workdir).items()):
    if 'Progress/tick' not in scalars:
      continue
    record = {'tick': int(scalars['Progress/tick']), 'kimg': round(scalars['Progress/kimg'], 6),
              'step': step}
    for name, (_, ours) in QUANTITIES.items():
      record[name] = scalars.get(ours)
    record['fd_vgg'] = fd_by_step.get(step)
    ticks.append(record)
  return ticks


class FdVgg:
  """`fd_vgg2k` (sg2jax.metrics) of generator variables against the dataset: one
  `MetricContext` for every evaluation of the run, so reals are featurized once and the
  programs compiled once."""

  def __init__(self, generator, variables, source, num_samples: int, seed: int, batch_size: int,
               cache_dir: Path):
    from sg2jax.feature_nets.lpips import load_lpips_weights
    from sg2jax.metrics import fd_vgg, registry
    from sg2jax.metrics.context import MetricContext
    from sg2jax.sharding import make_mesh
    self.detectors = {fd_vgg.DETECTOR: fd_vgg.lpips_vgg_detector(load_lpips_weights()['vgg'])}
    self.batch_size, self.cache_dir = batch_size, cache_dir
    self.ctx = MetricContext(generator, variables, make_mesh(), batch_size, source=source,
                             cache_dir=cache_dir, detectors=self.detectors)
    self.spec = registry.get_metric(FD_METRIC)
    self.num_samples, self.seed = num_samples, seed

  def __call__(self, variables) -> tuple[float, float]:
    """(fd_vgg, seconds) of `variables` (host arrays or arrays on the devices)."""
    from sg2jax.metrics.evaluate import run_metrics
    start = time.perf_counter()
    self.ctx.set_variables(variables)
    record, = run_metrics(self.ctx, [self.spec], num_samples=self.num_samples, seed=self.seed)
    return record['value'], time.perf_counter() - start

  def reals_floor(self, other_source) -> float:
    """fd_vgg of the dataset's reals against as many reals of `other_source`."""
    from sg2jax.metrics import fd_vgg
    from sg2jax.metrics.context import MetricContext
    from sg2jax.metrics.fid import frechet_distance
    other = MetricContext(self.ctx.generator, self.ctx.g_variables, self.ctx.mesh,
                          self.batch_size, source=other_source, cache_dir=self.cache_dir,
                          detectors=self.detectors)
    stats = [ctx.real_statistics(fd_vgg.DETECTOR, fd_vgg.OUTPUT, self.num_samples, False, 1,
                                 FD_METRIC) for ctx in (self.ctx, other)]
    return frechet_distance(*stats[0], *stats[1])


def load_generator(path: Path):
  """G_ema (config, variables) of an official snapshot, through sg2jax's converter."""
  from sg2jax.checkpoint import load_networks
  return load_networks(path)['G_ema']


# ----------------------------------------------------------------------------------------------
# Results: figure and table.

def read_results(path: Path) -> list[dict[str, Any]]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


COMPARED = ('g_loss', 'd_loss', 'd_real', 'd_fake', 'r1_penalty', 'pl_penalty', 'pl_length',
            'pl_mean', 'fd_vgg')  # the figure's panels and the end-of-run table's rows


def _final_values(records: list[dict[str, Any]], side: str, quantity: str) -> list[float]:
  """Per seed, the last value of `quantity` on `side`."""
  finals = []
  for seed in sorted({r['seed'] for r in records if r['what'] == 'tick'}):
    present = [r.get(quantity) for r in records if r['what'] == 'tick' and r['side'] == side
               and r['seed'] == seed and r.get(quantity) is not None]
    if present:
      finals.append(present[-1])
  return finals


def end_of_run_table(records: list[dict[str, Any]]) -> str:
  """The last tick of both sides: mean ± std over seeds, and the difference of the means in
  pooled standard deviations."""
  lines = ['| quantity (last tick) | official | sg2jax | difference / pooled std |',
           '|---|---:|---:|---:|']
  for quantity in COMPARED + ('sec_per_kimg',):
    values = {side: _final_values(records, side, quantity) for side in SIDES}
    cells = []
    for side in SIDES:
      v = values[side]
      if not v:
        cells.append('-')
      else:
        spread = f' ± {statistics.stdev(v):.3g}' if len(v) > 1 else ''
        cells.append(f'{statistics.fmean(v):.4g}{spread}')
    a, b = values['official'], values['sg2jax']
    ratio = '-'
    if len(a) > 1 and len(b) > 1:
      pooled = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
      if pooled > 0:
        ratio = f'{(statistics.fmean(b) - statistics.fmean(a)) / pooled:+.2f}'
    lines.append(f'| {quantity} | {cells[0]} | {cells[1]} | {ratio} |')
  return '\n'.join(lines)


def wall_time_table(records: list[dict[str, Any]]) -> str:
  """Per side: runs, mean wall seconds per run, median seconds per kimg over ticks 2+."""
  walls = [r for r in records if r['what'] == 'run']
  ticks = [r for r in records if r['what'] == 'tick']
  lines = ['| side | runs | wall seconds per run (mean) | s/kimg (median over ticks 2+) |',
           '|---|---:|---:|---:|']
  for side in SIDES:
    mine = [r for r in walls if r['side'] == side]
    rates = [r['sec_per_kimg'] for r in ticks if r['side'] == side and r['tick'] >= 2
             and r.get('sec_per_kimg') is not None]
    if mine:
      lines.append(f'| {side} | {len(mine)} | '
                   f'{statistics.fmean(r["seconds"] for r in mine):.0f} | '
                   f'{statistics.median(rates) if rates else float("nan"):.2f} |')
  return '\n'.join(lines)


def write_outputs(out: Path, records: list[dict[str, Any]]) -> None:
  """parity.png and parity_table.md from the records (also printed)."""
  from parity_plot import Panel, aggregate, plot_panels
  setup = next(r for r in records if r['what'] == 'setup')
  reference = next((r for r in records if r['what'] == 'reference'), None)
  ticks = [r for r in records if r['what'] == 'tick']
  init = {r['seed']: r['fd_vgg'] for r in records if r['what'] == 'init'}
  seeds = sorted({r['seed'] for r in ticks})

  def runs(side: str, quantity: str) -> list[list[tuple[float, float]]]:
    out_runs = []
    for seed in seeds:
      run = [(r['kimg'], r.get(quantity)) for r in ticks if r['side'] == side and r['seed'] == seed]
      if quantity == 'fd_vgg' and seed in init:
        run = [(0.0, init[seed])] + run
      out_runs.append(run)
    return out_runs

  panels = []
  for quantity in COMPARED:
    ref = reference['fd_vgg'] if reference is not None and quantity == 'fd_vgg' else None
    panels.append(Panel(TITLES[quantity], {side: aggregate(runs(side, quantity))
                                           for side in SIDES},
                        ref, 'reals vs reals' if ref is not None else ''))
  s = setup['setup']
  subtitle = (f"{s['resolution']}x{s['resolution']} shapes ({setup['num_images']} images), "
              f"channels {s['channel_base']}/{s['channel_max']}, batch {s['batch_size']}, "
              f"{s['total_kimg']:g} kimg, seeds {','.join(map(str, seeds))}; "
              f"fd_vgg: {setup['fd_samples']} samples, seed {setup['fd_seed']}")
  plot_panels(panels, out / FIGURE, 'Training parity: official stylegan2-ada-pytorch loop vs '
              'sg2jax, same initial weights and data', subtitle)

  lines = end_of_run_table(records).splitlines()
  if any(r['what'] == 'run' for r in records):
    lines += [''] + wall_time_table(records).splitlines()
  if reference is not None:
    lines.append('')
    lines.append(f"fd_vgg of the reals against {reference['num_samples']} independent reals "
                 f"(the noise floor at this sample count): {reference['fd_vgg']:.4g}")
  table = '\n'.join(lines) + '\n'
  (out / TABLE).write_text(table)
  print(table)


# ----------------------------------------------------------------------------------------------
# The benchmark.

def parse_args() -> argparse.Namespace:
  defaults = ParitySetup()
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--peer', help='NVlabs/stylegan2-ada-pytorch checkout')
  p.add_argument('--peer-python', help='a python that imports torch, numpy, PIL and psutil')
  p.add_argument('--out', type=Path, required=True, help='output folder')
  p.add_argument('--results', default=None,
                 help='also append every line, with command, commit, date and machine, here '
                      '(the README quotes benchmarks/results/parity.jsonl)')
  p.add_argument('--seeds', default='0,1,2', help='comma-separated seeds (default 0,1,2)')
  p.add_argument('--kimg', type=float, default=defaults.total_kimg, help='length of each run')
  p.add_argument('--kimg-per-tick', type=float, default=defaults.kimg_per_tick)
  p.add_argument('--fd-every', type=int, default=2,
                 help='fd_vgg every N ticks and at the end (default 2)')
  p.add_argument('--fd-samples', type=int, default=2000,
                 help='fd_vgg generated images, and as many reals (default 2000)')
  p.add_argument('--fd-seed', type=int, default=0, help="fd_vgg's latents and noise")
  p.add_argument('--resolution', type=int, default=defaults.resolution)
  p.add_argument('--channel-base', type=int, default=defaults.channel_base)
  p.add_argument('--channel-max', type=int, default=defaults.channel_max)
  p.add_argument('--z-dim', type=int, default=defaults.z_dim, help='also w_dim')
  p.add_argument('--mapping-layers', type=int, default=defaults.mapping_layers)
  p.add_argument('--batch', type=int, default=defaults.batch_size)
  p.add_argument('--batch-gpu', type=int, default=None,
                 help='official per-GPU batch (default: the batch, one round); sg2jax forms '
                      'minibatch-stddev groups within it')
  p.add_argument('--lr', type=float, default=defaults.lr)
  p.add_argument('--r1-gamma', type=float, default=defaults.r1_gamma)
  p.add_argument('--ema-kimg', type=float, default=defaults.ema_kimg)
  p.add_argument('--num-images', type=int, default=2048, help='dataset size (ShapesSource)')
  p.add_argument('--data-seed', type=int, default=0, help='ShapesSource seed of the dataset')
  p.add_argument('--torch-threads', type=int, default=1,
                 help='torch.set_num_threads of the official side (default 1: on a busy '
                      'machine its OpenMP threads stall; 2 threads ran the tiny networks ~20x '
                      'slower here)')
  p.add_argument('--plot-only', action='store_true',
                 help='redraw the figure and the table from OUT/parity.jsonl')
  args = p.parse_args()
  if not args.plot_only and not (args.peer and args.peer_python):
    p.error('--peer and --peer-python are required (unless --plot-only)')
  try:
    args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  except ValueError:
    p.error(f'--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2')
  if not args.seeds:
    p.error('--seeds: give at least one seed')
  for name in ('kimg', 'kimg_per_tick'):
    if getattr(args, name) <= 0:
      p.error(f'--{name.replace("_", "-")} must be positive')
  if args.fd_every < 1 or args.fd_samples < 2:
    p.error('--fd-every must be >= 1 and --fd-samples >= 2')
  if args.fd_samples > args.num_images:
    p.error(f'--fd-samples {args.fd_samples} is more than the {args.num_images} images of the '
            f'dataset (--num-images)')
  return args


def main() -> None:
  args = parse_args()
  out = args.out.absolute()
  args.out = out
  if args.plot_only:
    if not (out / RESULTS).is_file():
      raise SystemExit(f'error: {out / RESULTS} not found; run the benchmark first')
    write_outputs(out, read_results(out / RESULTS))
    return
  from peer_benchmark import check_peer
  args.peer = str(Path(args.peer).absolute())
  torch_version = check_peer(args.peer, args.peer_python)
  setup = ParitySetup(resolution=args.resolution, channel_base=args.channel_base,
                      channel_max=args.channel_max, z_dim=args.z_dim, w_dim=args.z_dim,
                      mapping_layers=args.mapping_layers, batch_size=args.batch,
                      batch_gpu=args.batch_gpu or args.batch, lr=args.lr,
                      r1_gamma=args.r1_gamma, ema_kimg=args.ema_kimg, total_kimg=args.kimg,
                      kimg_per_tick=args.kimg_per_tick)

  from sg2jax.cli import configure_jax
  configure_jax('highest')
  import jax
  from absl import logging
  logging.set_verbosity(logging.INFO)  # the sg2jax loop's compile and tick lines
  from sg2jax.data.sources import ShapesSource, ZipSource
  from sg2jax.networks.weights import build_network
  from sg2jax.train.loop import train_and_evaluate

  out.mkdir(parents=True, exist_ok=True)
  (out / 'setup.json').write_text(json.dumps(dataclasses.asdict(setup), indent=2))
  data = write_dataset(out / 'data' / f'shapes{setup.resolution}.zip', args.num_images,
                       setup.resolution, args.data_seed)
  results_file = open(out / RESULTS, 'w', encoding='utf-8')  # pylint: disable=consider-using-with
  records: list[dict[str, Any]] = []
  import results  # benchmarks/results.py
  run_record = {**results.provenance(), 'run': None}
  run_record['run'] = run_record['date']

  def emit(record: dict[str, Any]) -> None:
    records.append(record)
    results_file.write(json.dumps(record) + '\n')
    results_file.flush()
    if args.results:
      results.append(args.results, [{**run_record, **record}])

  emit({'what': 'setup', 'setup': dataclasses.asdict(setup), 'seeds': args.seeds,
        'num_images': args.num_images, 'data_seed': args.data_seed, 'data': str(data),
        'fd_metric': FD_METRIC, 'fd_samples': args.fd_samples, 'fd_seed': args.fd_seed,
        'fd_every': args.fd_every, 'torch': torch_version, 'torch_threads': args.torch_threads,
        'jax': jax.__version__, 'devices': jax.device_count()})
  fd = None
  try:
    for seed in args.seeds:
      run_dir = out / f'seed{seed}'
      for stale in (run_dir / 'official', run_dir / 'sg2jax'):  # a previous run's: start anew
        shutil.rmtree(stale, ignore_errors=True)
      run_dir.mkdir(exist_ok=True)
      init_pkl = run_dir / 'init.pkl'
      run_worker(args, 'init', run_dir / 'init.log', '--seed', str(seed), '--out', str(init_pkl))
      init_g = load_generator(init_pkl)
      if fd is None:  # one generator module for every evaluation: the setup's G
        fd = FdVgg(build_network(init_g.config), init_g.variables, ZipSource(data),
                   args.fd_samples, args.fd_seed, setup.batch_size, out / 'metric_cache')
        floor = fd.reals_floor(ShapesSource(args.fd_samples, setup.resolution,
                                            seed=args.data_seed + 1))
        emit({'what': 'reference', 'fd_vgg': floor, 'num_samples': args.fd_samples,
              'against': f'ShapesSource seed {args.data_seed + 1}'})
      value, seconds = fd(init_g.variables)
      emit({'what': 'init', 'seed': seed, 'kimg': 0.0, 'fd_vgg': value, 'fd_seconds': seconds})
      print(f'seed {seed}: initial networks fd_vgg {value:.4g} ({seconds:.0f} s)', flush=True)

      # The official loop, then fd_vgg of its snapshots.
      official_dir = run_dir / 'official'
      seconds = run_worker(args, 'train', run_dir / 'official.log', '--seed', str(seed),
                           '--init', str(init_pkl), '--data', str(data), '--run-dir',
                           str(official_dir), '--threads', str(args.torch_threads))
      ticks = official_ticks(official_dir)
      for record in ticks:
        last = record is ticks[-1]
        record['fd_vgg'] = record['fd_seconds'] = None
        if record['tick'] > 0 and (record['tick'] % args.fd_every == 0 or last):
          record['fd_vgg'], record['fd_seconds'] = fd(
              load_generator(Path(record['snapshot'])).variables)
        emit({'what': 'tick', 'side': 'official', 'seed': seed, **record})
      emit({'what': 'run', 'side': 'official', 'seed': seed, 'seconds': seconds,
            'ticks': len(ticks)})
      print(f'seed {seed}: official {seconds:.0f} s, last tick {ticks[-1]}', flush=True)

      # sg2jax from the same initial networks, fd_vgg by a snapshot hook.
      config = sg2jax_config(setup, data, seed, args.fd_every, init_pkl)
      workdir = run_dir / 'sg2jax'
      fd_by_step: dict[int, float] = {}
      fd_seconds: dict[int, float] = {}

      def hook(exp, state, step, kimg):
        del exp, kimg
        fd_by_step[step], fd_seconds[step] = fd(state.g_ema)
        return {f'Metrics/{FD_METRIC}': fd_by_step[step]}

      start = time.perf_counter()
      train_and_evaluate(config, workdir, hooks=[hook])
      seconds = time.perf_counter() - start - sum(fd_seconds.values())
      ticks = sg2jax_ticks(workdir, fd_by_step)
      for record in ticks:
        record['fd_seconds'] = fd_seconds.get(record['step'])
        emit({'what': 'tick', 'side': 'sg2jax', 'seed': seed, **record})
      emit({'what': 'run', 'side': 'sg2jax', 'seed': seed, 'seconds': seconds,
            'ticks': len(ticks)})
      print(f'seed {seed}: sg2jax {seconds:.0f} s (fd_vgg excluded), last tick {ticks[-1]}',
            flush=True)
  finally:
    results_file.close()
  write_outputs(out, records)


if __name__ == '__main__':
  main()
