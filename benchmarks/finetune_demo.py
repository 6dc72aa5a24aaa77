"""The shapes demo fine-tuned on 50 images, with ADA and without: a small-data check.

  python benchmarks/finetune_demo.py --out runs/finetune-demo [--source /tmp/sg2jax-demo]

1. The source network: the CPU demo (`experiments/demo.py`, 30 kimg on 2048 shapes), trained
   into OUT/source unless `--source` names a finished demo workdir.
2. Fine-tuning runs from it (`--config.resume_from`) on new shapes images (seed 1: the same
   drawing code, images the source never saw), for `--kimg` each, identical except
   `--config.augment` and the dataset's size: 50 images with `none` and with `ada` (target
   0.6, ada_kimg 100 as when fine-tuning), and 50,000 images with `ada` (fewer images than the
   run shows D, so D cannot overfit them and p should stay near 0).
3. `fd_vgg2k` (sg2jax.metrics.fd_vgg: Frechet distance of VGG16 features, not the paper's FID,
   which needs Inception weights that cannot be downloaded here) of each G_ema, and of the
   source, against 2048 held-out shapes (seed 2), so it measures how well a network draws the
   distribution, not how well it recalls its few training images. The floor: the held-out
   images against another 2048 (seed 3) through the same metric.

Every command is the one a user types (`python -m sg2jax.main`, `python -m sg2jax.eval`), run as
a subprocess. Output: JSON lines (one per tick and run, the source's too, with losses, D(real),
D(fake), R1 penalty, pl_mean and ADA's p and r_t; one per fd_vgg), also appended with command,
commit, date and machine to `--results` (the README's demo and fine-tuning tables are made from
benchmarks/results/finetune_demo.jsonl by benchmarks/readme_tables.py).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import results  # benchmarks/results.py
from parity import tensorboard_scalars

EVAL_IMAGES = 2048


def run(*command: str) -> float:
  """Runs a CLI, stops with its last line on failure; the wall time."""
  t = time.time()
  out = subprocess.run([sys.executable, *command], capture_output=True, text=True)
  if out.returncode:
    raise SystemExit(f'error: {" ".join(command[:4])} failed: '
                     f'{(out.stderr.strip().splitlines() or ["?"])[-1]}')
  return time.time() - t


def write_shapes(folder: Path, num_images: int, seed: int) -> Path:
  from sg2jax.data.sources import ShapesSource
  from sg2jax.images import save_image
  if not folder.is_dir():
    partial = folder.with_name(folder.name + '.partial')
    partial.mkdir(parents=True, exist_ok=True)
    shapes = ShapesSource(num_images, 32, seed=seed)
    for i in range(num_images):
      save_image(partial / f'{i:05d}.png', shapes[i]['image'])
    partial.rename(folder)
  return folder


def fd_vgg(network: Path, data: Path, outdir: Path) -> float:
  run('-m', 'sg2jax.eval', '--metric', 'fd_vgg2k', '--network', str(network), '--data',
      str(data), '--no-mirror', '--outdir', str(outdir), '--no-progress', '--no-tensorboard')
  lines = (outdir / 'metrics.jsonl').read_text().splitlines()
  return json.loads(lines[-1])['value']


def tick_records(workdir: Path, name: str) -> list[dict]:
  """The training loop's per-tick means (from its TensorBoard files) of run `name`."""
  ticks = []
  for _, scalars in sorted(tensorboard_scalars(workdir).items()):
    if 'Progress/tick' in scalars:
      ticks.append({'what': 'tick', 'name': name, 'kimg': round(scalars['Progress/kimg'], 3),
                    'G_loss': scalars.get('Loss/G/loss'), 'D_loss': scalars.get('Loss/D/loss'),
                    'D_real': scalars.get('Loss/scores/real'),
                    'D_fake': scalars.get('Loss/scores/fake'),
                    'r1_penalty': scalars.get('Loss/r1_penalty'),
                    'pl_mean': scalars.get('Loss/pl_mean'),
                    'p': scalars.get('Augment/p'), 'rt': scalars.get('Augment/rt')})
  return ticks


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--out', type=Path, required=True)
  p.add_argument('--source', type=Path, help='a finished experiments/demo.py workdir')
  p.add_argument('--kimg', type=float, default=20.0, help='length of each fine-tuning run')
  p.add_argument('--num-images', type=int, default=50,
                 help='the small dataset (at 200, D did not overfit enough in 20 kimg for p to move)')
  p.add_argument('--source-only', action='store_true',
                 help='stop after training (or reading) the source and recording its ticks')
  p.add_argument('--results', default=None,
                 help='also append the lines, with command, commit, date and machine, here')
  args = p.parse_args()
  args.out.mkdir(parents=True, exist_ok=True)
  emit = results.Recorder(args.results)

  source = args.source or args.out / 'source'
  if args.source is None:
    seconds = run('-m', 'sg2jax.main', '--config', 'experiments/demo.py', '--workdir',
                  str(source))
    emit({'what': 'source', 'workdir': str(source), 'seconds': round(seconds, 1)})
  for tick in tick_records(source, 'source'):
    emit(tick)
  if args.source_only:
    return
  heldout = write_shapes(args.out / 'heldout', EVAL_IMAGES, seed=2)
  floor_data = write_shapes(args.out / 'heldout_b', EVAL_IMAGES, seed=3)

  rows = {}
  for augment, num_images in (('none', args.num_images), ('ada', args.num_images),
                              ('ada', 50_000)):
    name = f'{augment}_{num_images}'
    workdir = args.out / name
    seconds = run('-m', 'sg2jax.main', '--config', 'experiments/demo.py', '--workdir',
                  str(workdir), f'--config.resume_from={source}', '--config.seed=1',
                  f'--config.data.num_images={num_images}',
                  f'--config.augment={augment}', f'--config.total_kimg={args.kimg}',
                  '--config.snapshot_ticks=100')
    ticks = tick_records(workdir, name)
    for tick in ticks:
      emit(tick)
    fd = fd_vgg(workdir, heldout, args.out / f'eval_{name}')
    emit({'what': 'fd_vgg2k', 'name': name, 'value': fd, 'train_seconds': round(seconds, 1)})
    rows[(augment, num_images)] = (ticks[-1], fd, seconds)

  fd_source = fd_vgg(source, heldout, args.out / 'eval_source')
  emit({'what': 'fd_vgg2k', 'name': 'source', 'value': fd_source})
  # The floor: held-out reals against other reals, the distance of a perfect generator.
  import jax
  import numpy as np
  from sg2jax.data.sources import open_source
  from sg2jax.feature_nets.lpips import load_lpips_weights
  from sg2jax.metrics.fd_vgg import lpips_vgg_features
  from sg2jax.metrics.fid import feature_statistics, frechet_distance
  vgg = load_lpips_weights()['vgg']
  features = jax.jit(lpips_vgg_features)
  stats = []
  for folder in (heldout, floor_data):
    images = open_source('folder', str(folder))
    batches = [np.stack([images[i]['image'] for i in range(start, start + 50)])
               for start in range(0, 2000, 50)]
    stats.append(feature_statistics(
        np.concatenate([np.asarray(features(vgg, b.astype(np.float32))) for b in batches]),
        ddof=1))
  floor = float(frechet_distance(*stats[0], *stats[1]))
  emit({'what': 'fd_vgg2k', 'name': 'floor', 'value': floor})

  print('| run | images | kimg | G loss | D loss | D(real) | D(fake) | p | fd_vgg2k |',
        file=sys.stderr)
  print('|---|---:|---:|---:|---:|---:|---:|---:|---:|', file=sys.stderr)
  for (augment, num_images), (tick, fd, seconds) in rows.items():
    p = '' if tick['p'] is None else f'{tick["p"]:.3f}'
    print(f'| augment={augment} ({seconds / 60:.1f} min) | {num_images} | {tick["kimg"]:.1f} | '
          f'{tick["G_loss"]:.3f} | {tick["D_loss"]:.3f} | {tick["D_real"]:.3f} | '
          f'{tick["D_fake"]:.3f} | {p} | {fd:.3f} |', file=sys.stderr)
  print(f'| source (the demo, before) | 2048 | 30 | | | | | | {fd_source:.3f} |', file=sys.stderr)
  print(f'| held-out reals vs reals | | | | | | | | {floor:.3f} |', file=sys.stderr)


if __name__ == '__main__':
  main()
