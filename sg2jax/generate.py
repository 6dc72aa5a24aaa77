"""Generate images from a network: `python -m sg2jax.generate --network PKL_OR_DIR --seeds 0-7`.

z for seed s is `np.random.RandomState(s).randn(1, z_dim)` and images are converted to uint8
as the official generate.py does, so the same pickle and seeds give the same PNGs.
"""

import argparse
from pathlib import Path
from typing import Optional, Sequence

from sg2jax.cli import configure_jax, run


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  from sg2jax.tools.sampling import parse_range
  p = argparse.ArgumentParser(prog='python -m sg2jax.generate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', required=True,
                 help='official .pkl (stylegan2-ada-pytorch or TF StyleGAN2) or a directory '
                      'written by sg2jax.convert')
  p.add_argument('--seeds', type=parse_range, required=True, help='e.g. 0-7 or 1,5,9-11')
  p.add_argument('--trunc', dest='truncation_psi', type=float, default=1.0,
                 help='truncation psi (default 1: none)')
  p.add_argument('--trunc-cutoff', dest='truncation_cutoff', type=int, default=None,
                 help='truncate only the first N layers of ws (default: all)')
  p.add_argument('--noise-mode', choices=('const', 'random', 'none'), default='const')
  p.add_argument('--class', dest='class_idx', type=int, default=None,
                 help='class label (conditional networks)')
  p.add_argument('--outdir', type=Path, required=True)
  p.add_argument('--grid', action='store_true', help='write one grid.png instead of one file per seed')
  p.add_argument('--batch-size', type=int, default=8)
  p.add_argument('--precision', choices=('highest', 'default'), default='highest',
                 help='float32 conv precision on GPU/TPU (highest = exact)')
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  configure_jax(args.precision)
  from sg2jax.checkpoint import load_networks, select_generator
  from sg2jax.networks.config import build_network
  from sg2jax.tools.images import make_grid, save_image, to_uint8
  from sg2jax.tools.sampling import generate_images

  name, net = select_generator(load_networks(args.network), args.network)
  generator = build_network(net.config)
  images = to_uint8(generate_images(
      generator, net.variables, args.seeds, args.truncation_psi, args.truncation_cutoff,
      args.noise_mode, args.class_idx, args.batch_size))
  args.outdir.mkdir(parents=True, exist_ok=True)
  if args.grid:
    path = save_image(args.outdir / 'grid.png', make_grid(images))
    print(f'{name}: wrote {path} ({len(images)} seeds)')
  else:
    for seed, image in zip(args.seeds, images):
      save_image(args.outdir / f'seed{seed:04d}.png', image)
    print(f'{name}: wrote {len(images)} images to {args.outdir}')
  return 0


if __name__ == '__main__':
  run(main)
