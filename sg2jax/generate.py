"""Generate images from a network: `python -m sg2jax.generate --network PKL_OR_DIR --seeds 0-7`.

z for seed s is `np.random.RandomState(s).randn(1, z_dim)` and images are converted to uint8
as the official generate.py does, so the same pickle and seeds give the same PNGs.

Figures instead of one image per seed (one at a time):
  --style-mix 0-3 10-14 --mix-layers 0-6   the paper's style-mixing grid (stylemix.png)
  --interpolate 1 2 --frames 60 --space w  a strip and a video from seed 1 to seed 2
  --seeds 0-4 --trunc-sweep 1,0.7,0,-0.7   each seed at each truncation psi (truncation.png)
  --projected-w projected_w.npz            images of projected ws (proj00.png, ...)
"""

import argparse
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, configure_jax, output_dir, run
from sg2jax.storage import as_path

DEFAULT_TRUNC_SWEEP = '1,0.7,0.5,0,-0.5,-1'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  from sg2jax.tools.figures import SPACES, VIDEO_FORMATS, parse_psis
  from sg2jax.tools.sampling import MODCONV_FORMS, parse_range
  p = argparse.ArgumentParser(prog='python -m sg2jax.generate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', required=True,
                 help='official .pkl (stylegan2-ada-pytorch or TF StyleGAN2), a directory '
                      'written by sg2jax.convert, or a training workdir')
  p.add_argument('--seeds', type=parse_range, default=None, help='e.g. 0-7 or 1,5,9-11')
  p.add_argument('--trunc', dest='truncation_psi', type=float, default=1.0,
                 help='truncation psi (default 1: none)')
  p.add_argument('--trunc-cutoff', dest='truncation_cutoff', type=int, default=None,
                 help='truncate only the first N layers of ws (default: all)')
  p.add_argument('--noise-mode', choices=('const', 'random', 'none'), default='const')
  p.add_argument('--class', dest='class_idx', type=int, default=None,
                 help='class label (conditional networks)')
  p.add_argument('--outdir', type=as_path, required=True)
  p.add_argument('--grid', action='store_true', help='write one grid.png instead of one file per seed')
  p.add_argument('--batch-size', type=int, default=8)
  p.add_argument('--precision', choices=('highest', 'default'), default='highest',
                 help='float32 conv precision on GPU/TPU (highest = exact)')
  p.add_argument('--modconv', choices=MODCONV_FORMS, default='auto',
                 help='modulated convolutions fused (grouped conv) or not; auto: unfused on CPU, '
                      'fused on GPU/TPU (same images up to float rounding)')
  figures = p.add_mutually_exclusive_group()
  figures.add_argument('--style-mix', nargs=2, type=parse_range, metavar=('ROW_SEEDS', 'COL_SEEDS'),
                       help='style-mixing figure: rows keep their ws except --mix-layers, which '
                            'come from the column seed')
  figures.add_argument('--interpolate', nargs=2, type=int, metavar=('SEED_A', 'SEED_B'),
                       help='interpolation from SEED_A to SEED_B: a strip and a video')
  figures.add_argument('--trunc-sweep', nargs='?', const=DEFAULT_TRUNC_SWEEP, type=parse_psis,
                       metavar='PSIS', help='grid of --seeds (rows) x truncation psi (columns), '
                                            f'default psis {DEFAULT_TRUNC_SWEEP}')
  figures.add_argument('--projected-w', type=as_path, metavar='FILE',
                       help='render the ws of a projected_w.npz (official or sg2jax.project)')
  p.add_argument('--mix-layers', type=parse_range, default=parse_range('0-6'), metavar='A-B',
                 help='ws layers taken from the column seed in --style-mix (default 0-6)')
  p.add_argument('--frames', type=int, default=60, help='frames of --interpolate (default 60)')
  p.add_argument('--space', choices=SPACES, default='w',
                 help='--interpolate in z (slerp) or w (linear); default w')
  p.add_argument('--video-format', choices=VIDEO_FORMATS, default='mp4',
                 help='video of --interpolate (default mp4)')
  p.add_argument('--fps', type=float, default=30, help='video frames per second (default 30)')
  add_debug_flag(p)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  configure_jax(args.precision)
  from sg2jax.checkpoint import load_networks, select_generator
  from sg2jax.networks.weights import build_network
  from sg2jax.tools import figures
  from sg2jax.images import make_grid, save_image, to_uint8
  from sg2jax.tools.sampling import generate_images, synthesize, with_modconv

  needs_seeds = args.style_mix is None and args.interpolate is None and args.projected_w is None
  if needs_seeds and not args.seeds:
    raise ValueError('pass --seeds (e.g. --seeds 0-7), or one of --style-mix, --interpolate, '
                     '--projected-w')
  name, net = select_generator(load_networks(args.network), args.network)
  generator = with_modconv(build_network(net.config), args.modconv)
  output_dir(args.outdir)
  trunc = dict(truncation_psi=args.truncation_psi, truncation_cutoff=args.truncation_cutoff)

  if args.style_mix is not None:
    figure = figures.style_mixing(
        generator, net.variables, args.style_mix[0], args.style_mix[1], args.mix_layers,
        noise_mode=args.noise_mode, class_idx=args.class_idx, batch_size=args.batch_size, **trunc)
    path = save_image(args.outdir / 'stylemix.png', figures.style_mixing_grid(figure))
    print(f'{name}: wrote {path} ({len(args.style_mix[0])} x {len(args.style_mix[1])} cells)')
  elif args.interpolate is not None:
    frames = to_uint8(figures.interpolate(
        generator, net.variables, args.interpolate[0], args.interpolate[1], args.frames,
        args.space, noise_mode=args.noise_mode, class_idx=args.class_idx,
        batch_size=args.batch_size, **trunc))
    strip = frames[figures.strip_indices(len(frames))]
    path = save_image(args.outdir / 'interpolation.png', make_grid(strip, columns=len(strip)))
    video = figures.save_video(args.outdir / f'interpolation.{args.video_format}', frames,
                               args.fps)
    print(f'{name}: wrote {path} and {video} ({args.frames} frames in {args.space})')
  elif args.trunc_sweep is not None:
    images = to_uint8(figures.truncation_sweep(
        generator, net.variables, args.seeds, args.trunc_sweep, args.truncation_cutoff,
        args.noise_mode, args.class_idx, args.batch_size))
    path = save_image(args.outdir / 'truncation.png',
                      make_grid(images.reshape(-1, *images.shape[2:]), columns=len(args.trunc_sweep)))
    print(f'{name}: wrote {path} ({len(args.seeds)} seeds x psi {args.trunc_sweep})')
  elif args.projected_w is not None:
    ws = figures.load_projected_ws(args.projected_w, generator.num_ws, generator.w_dim)
    images = to_uint8(synthesize(generator, net.variables, ws, args.noise_mode,
                                 batch_size=args.batch_size))
    for idx, image in enumerate(images):
      save_image(args.outdir / f'proj{idx:02d}.png', image)
    print(f'{name}: wrote {len(images)} images of {args.projected_w} to {args.outdir}')
  else:
    images = to_uint8(generate_images(
        generator, net.variables, args.seeds, args.truncation_psi, args.truncation_cutoff,
        args.noise_mode, args.class_idx, args.batch_size))
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
