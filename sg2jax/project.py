"""Project images into a network's W space (the paper's projector, REFERENCE.md §6), or into W+:

  python -m sg2jax.project --network PKL_OR_DIR --target face.png --outdir out
  python -m sg2jax.project --network PKL_OR_DIR --target face.png --outdir out --space w_plus

Writes, per target (into --outdir for one target, into --outdir/<name>/ for several):
target.png (the target as projected: cropped and resized to the network's size), proj.png (the
projection, with its optimized noise maps), projected_w.npz (`w` [1, num_ws, w_dim], the
official projector's layout: `python -m sg2jax.generate --projected-w` renders it with the
network's own noise), projected_noise.npz (the noise maps) and, with --save-video, proj.mp4
(target | projection while optimizing). Several targets are projected as one batch, split over
the devices. `--space w_plus` optimizes one w per layer (closer reconstructions; ws that the
mapping network need not produce) with the same schedule, noise and losses; projected_w.npz keeps
its layout.
"""

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, configure_jax, output_dir, run
from sg2jax.storage import as_path

PROGRESS_STEPS = 100  # steps between progress lines (and per compiled scan without --save-video)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m sg2jax.project', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', required=True,
                 help='official .pkl (stylegan2-ada-pytorch or TF StyleGAN2), a directory '
                      'written by sg2jax.convert, or a training workdir')
  p.add_argument('--target', type=as_path, nargs='+', required=True,
                 help='target image file(s); several are projected as one batch')
  p.add_argument('--outdir', type=as_path, required=True)
  p.add_argument('--num-steps', type=int, default=1000, help='optimization steps (default 1000)')
  p.add_argument('--seed', type=int, default=303, help='start noise and w-noise (default 303)')
  p.add_argument('--class', dest='class_idx', type=int, default=None,
                 help='class label (conditional networks)')
  p.add_argument('--space', choices=('w', 'w_plus'), default='w',
                 help="w: one w for all layers (the paper's, default); w_plus: one per layer")
  p.add_argument('--save-video', action='store_true',
                 help='write proj.mp4: target | projection every --video-every steps')
  p.add_argument('--video-every', type=int, default=10)
  p.add_argument('--fps', type=float, default=10)
  p.add_argument('--precision', choices=('highest', 'default'), default='highest',
                 help='float32 conv precision on GPU/TPU (highest = exact; default is faster)')
  add_debug_flag(p)
  return p.parse_args(argv)


def output_dirs(outdir: Path, targets: Sequence[Path]) -> list[Path]:
  """`outdir` for one target, `outdir/<file stem>` for several (stems must differ)."""
  if len(targets) == 1:
    return [outdir]
  stems = [t.stem for t in targets]
  repeated = sorted({s for s in stems if stems.count(s) > 1})
  if repeated:
    raise ValueError(f'several targets are named {", ".join(repeated)}; their outputs would share '
                     f'a folder: rename or copy them')
  return [outdir / stem for stem in stems]


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  configure_jax(args.precision)
  import numpy as np

  from sg2jax.checkpoint import load_networks, select_generator
  from sg2jax.networks.weights import build_network
  from sg2jax.tools.figures import save_video
  from sg2jax.images import save_image, to_uint8
  from sg2jax.storage import save_npz
  from sg2jax.tools.projector import ProjectionSettings, load_target, project

  if args.video_every < 1:
    raise ValueError(f'--video-every {args.video_every} must be at least 1')
  settings = ProjectionSettings(num_steps=args.num_steps)
  dirs = [output_dir(d) for d in output_dirs(args.outdir, args.target)]  # before the work
  name, net = select_generator(load_networks(args.network), args.network)
  generator = build_network(net.config)
  if generator.c_dim == 0 and args.class_idx is not None:
    raise ValueError('--class is only for conditional networks; this one has c_dim = 0')
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    targets = np.stack([load_target(t, generator.img_resolution, generator.img_channels)
                        for t in args.target])
  for warning in caught:
    print(f'warning: {warning.message}', file=sys.stderr)

  last_step = 0

  def report(step: int, lpips: np.ndarray) -> None:
    """A line when the steps pass a multiple of PROGRESS_STEPS, and at the end."""
    nonlocal last_step
    if step // PROGRESS_STEPS > last_step // PROGRESS_STEPS or step == args.num_steps:
      print(f'step {step:5d}/{args.num_steps}  lpips ' + ' '.join(f'{d:.4f}' for d in lpips),
            flush=True)
    last_step = step

  chunk = args.video_every if args.save_video else PROGRESS_STEPS
  result = project(generator, net.variables, targets, settings=settings, seed=args.seed,
                   class_idx=args.class_idx, chunk_steps=chunk, on_chunk=report,
                   record_frames=args.save_video, space=args.space)
  images = to_uint8(result.images)
  for i, directory in enumerate(dirs):
    save_image(directory / 'target.png', targets[i])
    save_image(directory / 'proj.png', images[i])
    save_npz(directory / 'projected_w.npz', {'w': result.ws[i:i + 1]})
    save_npz(directory / 'projected_noise.npz',
             {f'noise{k}': n[i] for k, n in enumerate(result.noise)})
    if args.save_video:
      video = np.concatenate([np.broadcast_to(targets[i], result.frames[:, i].shape),
                              result.frames[:, i]], axis=2)  # [F, R, 2R, C]
      save_video(directory / 'proj.mp4', video, args.fps)
    print(f'{name}: {args.target[i]} -> {directory} (lpips {result.lpips[i]:.4f})')
  return 0


if __name__ == '__main__':
  run(main)
