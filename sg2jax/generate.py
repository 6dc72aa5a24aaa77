"""Generate images from a network: `python -m sg2jax.generate --network PKL_OR_DIR --seeds 0-7`.

z for seed s is `np.random.RandomState(s).randn(1, z_dim)` and images are converted to uint8
as the official generate.py does, so the same pickle and seeds give the same PNGs.

Figures instead of one image per seed (one at a time):
  --style-mix 0-3 10-14 --mix-layers 0-6   the paper's style-mixing grid (stylemix.png)
  --interpolate 1 2 --frames 60 --space w  a strip and a video from seed 1 to seed 2
  --seeds 0-4 --trunc-sweep 1,0.7,0,-0.7   each seed at each truncation psi (truncation.png)
  --projected-w projected_w.npz            images of projected ws (proj00.png, ...)

One image between seeds, edited (what `python -m sg2jax.explore` shows, which prints the command):
  --position 3.25,0.5                      ws of seeds 3, 4, 103, 104 blended (position.png)
  --mix-seed 9 --mix-layers 0-3            those ws layers taken from seed 9
  --direction sefa:0 --strength 3          SeFa or GANSpace direction K (repeat both flags for
  --direction-layers 0-5                   several), added to ws layers A-B (default all)
  --noise-seed 5                           the seed of --noise-mode random (default each seed)
"""

import argparse
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, configure_jax, output_dir, run
from sg2jax.storage import as_path

DEFAULT_TRUNC_SWEEP = '1,0.7,0.5,0,-0.5,-1'


def parse_position(text: str) -> tuple[float, float]:
  """`'3.25,0.5'` -> `(3.25, 0.5)`; `'3.25'` -> `(3.25, 0.0)`."""
  parts = str(text).split(',')
  try:
    values = [float(part) for part in parts]
  except ValueError:
    values = []
  if len(values) not in (1, 2) or not all(abs(v) <= 1e9 for v in values):
    raise argparse.ArgumentTypeError(f'{text!r} is not a position X or X,Y (numbers, e.g. '
                                     f'3.25,0.5)')
  return values[0], values[1] if len(values) == 2 else 0.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  from sg2jax.tools.directions import DEFAULT_GANSPACE_SAMPLES, parse_direction
  from sg2jax.tools.figures import SPACES, VIDEO_FORMATS, parse_psis
  from sg2jax.tools.sampling import MODCONV_FORMS, parse_range
  p = argparse.ArgumentParser(prog='python -m sg2jax.generate', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', required=True,
                 help='official .pkl (stylegan2-ada-pytorch or TF StyleGAN2), a directory '
                      'written by sg2jax.convert, or a training workdir')
  p.add_argument('--seeds', type=parse_range, default=None, help='e.g. 0-7 or 1,5,9-11')
  p.add_argument('--position', type=parse_position, default=None, metavar='X,Y',
                 help='one image at a point between seeds (seed x + 100 y at integer points): '
                      'the ws of the 4 neighbouring seeds blended bilinearly, as the official '
                      'visualizer; writes position.png')
  p.add_argument('--trunc', dest='truncation_psi', type=float, default=1.0,
                 help='truncation psi (default 1: none)')
  p.add_argument('--trunc-cutoff', dest='truncation_cutoff', type=int, default=None,
                 help='truncate only the first N layers of ws (default: all)')
  p.add_argument('--noise-mode', choices=('const', 'random', 'none'), default='const')
  p.add_argument('--noise-seed', type=int, default=None,
                 help='seed of the --noise-mode random maps (default: each image its own seed)')
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
                 help='ws layers taken from the column seed in --style-mix, or from --mix-seed '
                      '(default 0-6)')
  p.add_argument('--mix-seed', type=int, default=None,
                 help='style mixing of every image: its --mix-layers ws come from this seed')
  p.add_argument('--direction', type=parse_direction, action='append', default=[],
                 metavar='METHOD:K', help='add latent direction K of sefa (closed form, from the '
                 'style affines of --direction-layers) or ganspace (PCA of mapped ws); repeat '
                 'with one --strength each')
  p.add_argument('--strength', type=float, action='append', default=[],
                 help='how far along each --direction (sefa: distance in W; ganspace: standard '
                      'deviations)')
  p.add_argument('--direction-layers', type=parse_range, default=None, metavar='A-B',
                 help='ws layers the directions apply to (default: all)')
  p.add_argument('--ganspace-samples', type=int, default=DEFAULT_GANSPACE_SAMPLES,
                 help=f'mapped ws GANSpace takes its PCA of (default {DEFAULT_GANSPACE_SAMPLES}; '
                      f'computed once and cached beside the network)')
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
  from sg2jax.tools.explorer import neighbour_seeds, position_ws
  from sg2jax.tools.sampling import map_seeds, with_modconv

  figure = next((flag for flag, value in (('--style-mix', args.style_mix),
                                         ('--interpolate', args.interpolate),
                                         ('--trunc-sweep', args.trunc_sweep)) if value), None)
  if args.position is not None and (args.seeds or figure or args.projected_w):
    raise ValueError('--position renders one image: pass it without --seeds, --projected-w or a '
                     'figure')
  edits = [flag for flag, value in (('--mix-seed', args.mix_seed is not None),
                                    ('--direction', args.direction or args.strength),
                                    ('--noise-seed', args.noise_seed is not None)) if value]
  if figure and edits:
    raise ValueError(f'{edits[0]} applies to --seeds, --position and --projected-w images, not '
                     f'to {figure}')
  needs_seeds = (args.style_mix is None and args.interpolate is None
                 and args.projected_w is None and args.position is None)
  if needs_seeds and not args.seeds:
    raise ValueError('pass --seeds (e.g. --seeds 0-7), or one of --position, --style-mix, '
                     '--interpolate, --projected-w')
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
    images = to_uint8(edit_and_synthesize(generator, net.variables, ws, args, noise_seeds=None))
    for idx, image in enumerate(images):
      save_image(args.outdir / f'proj{idx:02d}.png', image)
    print(f'{name}: wrote {len(images)} images of {args.projected_w} to {args.outdir}')
  elif args.position is not None:
    ws = position_ws(generator, net.variables, *args.position, class_idx=args.class_idx, **trunc)
    seed = neighbour_seeds(*args.position)[0][0]
    image = to_uint8(edit_and_synthesize(generator, net.variables, ws, args, [seed]))[0]
    path = save_image(args.outdir / 'position.png', image)
    print(f'{name}: wrote {path} (position {args.position[0]}, {args.position[1]})')
  else:
    ws = map_seeds(generator, net.variables, args.seeds, class_idx=args.class_idx, **trunc)
    images = to_uint8(edit_and_synthesize(generator, net.variables, ws, args, args.seeds))
    if args.grid:
      path = save_image(args.outdir / 'grid.png', make_grid(images))
      print(f'{name}: wrote {path} ({len(images)} seeds)')
    else:
      for seed, image in zip(args.seeds, images):
        save_image(args.outdir / f'seed{seed:04d}.png', image)
      print(f'{name}: wrote {len(images)} images to {args.outdir}')
  return 0


def edit_and_synthesize(generator, variables, ws, args, noise_seeds):
  """Images of `ws` after `--mix-seed` and `--direction` edits, with the noise of `--noise-mode`
  (random maps from `--noise-seed`, else from `noise_seeds`, one per image)."""
  from sg2jax.tools.directions import Directions
  from sg2jax.tools.figures import mix_layers
  from sg2jax.tools.sampling import map_seeds, synthesize
  if args.mix_seed is not None:
    mix_ws = map_seeds(generator, variables, [args.mix_seed], args.truncation_psi,
                       args.truncation_cutoff, args.class_idx)
    ws = mix_layers(ws, mix_ws, args.mix_layers)
  if args.direction or args.strength:
    layers = (range(generator.num_ws) if args.direction_layers is None
              else args.direction_layers)
    directions = Directions(generator, variables, args.network, args.ganspace_samples)
    ws = ws + directions.offsets(args.direction, args.strength, layers, args.class_idx)
  if args.noise_seed is not None:
    noise_seeds = [args.noise_seed] * len(ws)
  return synthesize(generator, variables, ws, args.noise_mode, noise_seeds, args.batch_size)


if __name__ == '__main__':
  run(main)
