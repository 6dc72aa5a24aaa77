"""Prepare training images: `python -m sg2jax.dataset_tool --source SRC --dest DST --resolution R`.

SRC is a folder of images (labels from its dataset.json), a dataset zip or an LMDB (LSUN's
`*_lmdb` folders). DST is a folder, a `.zip` or a `.lmdb`. `--transform center-crop` crops the
centred square and resizes (Lanczos); `center-crop-wide` makes the LSUN Car 512x384 pictures
padded into 512x512 (REFERENCE.md §4.2). A corrupt or wrongly sized image stops the run with its
name, unless `--skip-bad` is given.
"""

import argparse
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, run
from sg2jax.storage import as_path


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  from sg2jax.data.prepare import TRANSFORMS
  p = argparse.ArgumentParser(prog='python -m sg2jax.dataset_tool', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--source', type=as_path, required=True, help='folder, .zip or LMDB of images')
  p.add_argument('--dest', type=as_path, required=True, help='output folder, .zip or .lmdb')
  p.add_argument('--resolution', type=int, required=True, help='output size (power of two)')
  p.add_argument('--transform', choices=TRANSFORMS, default='none')
  p.add_argument('--wide-height', type=int, default=None,
                 help='picture height for center-crop-wide (default 3/4 of the resolution)')
  p.add_argument('--max-images', type=int, default=None)
  p.add_argument('--skip-bad', action='store_true',
                 help='skip unreadable or wrongly sized images with a warning')
  add_debug_flag(p)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  import tqdm
  from sg2jax.data.prepare import convert_dataset
  counts = convert_dataset(args.source, args.dest, args.resolution, args.transform,
                           args.wide_height, args.max_images, args.skip_bad,
                           progress=lambda it: tqdm.tqdm(it, unit='img'))
  print(f'wrote {counts["written"]} images to {args.dest} (skipped: '
        f'{counts["skipped_transform"]} by the transform, {counts["skipped_bad"]} bad)')
  return 0


if __name__ == '__main__':
  run(main)
