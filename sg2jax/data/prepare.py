"""Preparing training data: read images from anywhere, crop/resize, write a folder, zip or LMDB.

The library behind `python -m sg2jax.dataset_tool`. Transforms follow the official dataset tools
(REFERENCE.md §4.1-§4.2): `center-crop` (square crop of the short side, Lanczos resize) and
`center-crop-wide` (LSUN Car: crop to the output aspect, resize to width x height, paste into a
black square canvas, centred vertically). Labels in the source's `dataset.json` are carried over.
"""

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image

from sg2jax import storage
from sg2jax.data.sources import FolderSource, ImageSource, LmdbSource, ZipSource, guess_source_kind
from sg2jax.networks.layers import check_resolution

TRANSFORMS = ('none', 'center-crop', 'center-crop-wide')


def open_images(path: str | Path, max_images: Optional[int] = None) -> ImageSource:
  """Any folder, dataset zip or LMDB (LSUN) of images, with labels if it has a dataset.json."""
  kind = guess_source_kind(str(path))
  if kind == 'zip':
    return ZipSource(path)
  if kind == 'lmdb':
    return LmdbSource(path, max_images)
  return FolderSource(path)


def _resize(image: Image.Image, width: int, height: int) -> Image.Image:
  return image.resize((width, height), Image.LANCZOS)


def make_transform(kind: str, resolution: int,
                   wide_height: Optional[int] = None) -> Callable[[np.ndarray], Optional[np.ndarray]]:
  """`image [H, W, C] -> image [R, R, C]`, or None when the image must be skipped.

  - `none`: the image must already be `R x R`.
  - `center-crop`: crop the centred square of the short side, resize to R (Lanczos).
  - `center-crop-wide`: output `R x h` (`h = wide_height`, default `3R/4`: 512x384 for LSUN
    Car): crop rows to the aspect `R/h` (`ch = round(R * H / W)` rows kept), skip images narrower
    than R or with `ch < h`, resize to `R x h`, and paste into a black `R x R` canvas at rows
    `(R - h) / 2 ...` (REFERENCE.md §4.2).
  """
  if kind not in TRANSFORMS:
    raise ValueError(f'--transform {kind!r} is not one of {", ".join(TRANSFORMS)}')
  height = wide_height if wide_height is not None else resolution * 3 // 4

  def none(image: np.ndarray) -> Optional[np.ndarray]:
    return image

  def center_crop(image: np.ndarray) -> Optional[np.ndarray]:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    cropped = Image.fromarray(image[top:top + side, left:left + side].squeeze())
    out = np.asarray(_resize(cropped, resolution, resolution))
    return out[..., None] if out.ndim == 2 else out

  def center_crop_wide(image: np.ndarray) -> Optional[np.ndarray]:
    h, w = image.shape[:2]
    ch = int(np.round(resolution * h / w))
    if w < resolution or ch < height:
      return None
    top = (h - ch) // 2
    cropped = Image.fromarray(image[top:top + ch].squeeze())
    resized = np.asarray(_resize(cropped, resolution, height))
    resized = resized[..., None] if resized.ndim == 2 else resized
    canvas = np.zeros((resolution, resolution, resized.shape[2]), np.uint8)
    canvas[(resolution - height) // 2:(resolution + height) // 2] = resized
    return canvas

  return {'none': none, 'center-crop': center_crop, 'center-crop-wide': center_crop_wide}[kind]


PARTIAL_SUFFIX = '.partial'  # `DEST.partial`: where an unfinished output is written


class _Writer:
  """Writes `img{index:08d}.png` into a folder, zip or LMDB, plus dataset.json.

  Everything goes to `DEST.partial` next to the destination, renamed to `dest` by `close()` once
  complete; `abort()` removes it. So `dest` never holds a partial dataset (whose dataset.json
  would look complete), and a failed run can simply be run again. A `DEST.partial` left by a run
  that crashed is removed when the next run starts.
  """

  def __init__(self, dest: Path):
    self.dest = dest
    self.kind = ('zip' if dest.suffix.lower() == '.zip' else
                 'lmdb' if dest.suffix.lower() == '.lmdb' else 'folder')
    empty_folder = self.kind == 'folder' and dest.is_dir() and not any(dest.iterdir())
    if (dest.exists() or dest.is_symlink()) and not empty_folder:
      what = 'a folder that is not empty' if dest.is_dir() else 'a file'
      raise FileExistsError(f'--dest {dest} already exists ({what}); remove it or choose a new '
                            f'--dest')
    self.partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    if self.partial.exists() or self.partial.is_symlink():
      warnings.warn(f'removing {self.partial}, left by an earlier run that did not finish')
      storage.remove_tree(self.partial)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if self.kind == 'zip':
      self._zip = zipfile.ZipFile(self.partial, 'w', compression=zipfile.ZIP_STORED)
    elif self.kind == 'lmdb':
      import lmdb
      self._env = lmdb.open(str(self.partial), map_size=1 << 40, subdir=True)
      self._txn = self._env.begin(write=True)
    else:
      self.partial.mkdir()
    self.labels: list = []

  def add(self, index: int, image: np.ndarray, label) -> None:
    name = f'{index // 1000:05d}/img{index:08d}.png'
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze() if image.shape[-1] == 1 else image).save(buffer, format='png',
                                                                             compress_level=0)
    if self.kind == 'zip':
      self._zip.writestr(name, buffer.getvalue())
    elif self.kind == 'lmdb':
      self._txn.put(name.encode(), buffer.getvalue())
      if index % 1000 == 999:
        self._txn.commit()
        self._txn = self._env.begin(write=True)
    else:
      (self.partial / name).parent.mkdir(parents=True, exist_ok=True)
      (self.partial / name).write_bytes(buffer.getvalue())
    if label is not None:
      self.labels.append([name, label])

  def close(self) -> None:
    """Writes dataset.json, closes the output and renames it to `dest`."""
    meta = json.dumps({'labels': self.labels if self.labels else None})
    if self.kind == 'zip':
      self._zip.writestr('dataset.json', meta)
      self._zip.close()
    elif self.kind == 'lmdb':
      self._txn.put(LmdbSource.META_KEY, meta.encode())
      self._txn.commit()
      self._env.close()
    else:
      (self.partial / 'dataset.json').write_text(meta)
    if self.dest.is_dir():  # the empty folder the user created for it
      self.dest.rmdir()
    self.partial.rename(self.dest)

  def abort(self) -> None:
    """Closes and removes the unfinished output."""
    if self.kind == 'zip':
      self._zip.close()
    elif self.kind == 'lmdb':
      self._txn.abort()
      self._env.close()
    storage.remove_tree(self.partial)


def _label_value(label: np.ndarray):
  """One-hot -> class index (as the official dataset.json stores it); other vectors as lists."""
  if label.size == 0:
    return None
  if np.all((label == 0) | (label == 1)) and label.sum() == 1:
    return int(np.argmax(label))
  return label.tolist()


def convert_dataset(source: str | Path, dest: str | Path, resolution: int,
                    transform: str = 'none', wide_height: Optional[int] = None,
                    max_images: Optional[int] = None, skip_bad: bool = False,
                    progress: Optional[Callable[[Iterator], Iterator]] = None) -> dict[str, int]:
  """Writes `source`'s images, transformed to `resolution`, as a folder, `.zip` or `.lmdb`.

  Args:
    source: folder, dataset zip or LMDB (e.g. LSUN's `car_lmdb`).
    dest: output folder, `*.zip` or `*.lmdb` (must not exist, or be an empty folder); written
      as `DEST.partial` and renamed when complete.
    resolution: output size, a power of two.
    transform: one of TRANSFORMS.
    wide_height: the picture height for `center-crop-wide` (default 3/4 of the resolution).
    max_images: stop after this many input images.
    skip_bad: skip (with a warning) unreadable or wrongly sized images instead of failing.
    progress: wraps the input iterator (e.g. `tqdm.tqdm`).

  Returns:
    Counts: `{'written': ..., 'skipped_transform': ..., 'skipped_bad': ...}`.

  Raises:
    ValueError: an unreadable or wrongly sized image (naming it) unless `skip_bad`.
  """
  check_resolution(resolution, '--resolution')
  if storage.is_remote(dest):
    return _convert_to_bucket(source, dest, resolution, transform, wide_height, max_images,
                              skip_bad, progress)
  images = open_images(source, max_images)
  fn = make_transform(transform, resolution, wide_height)
  count = len(images) if max_images is None else min(max_images, len(images))
  writer = _Writer(Path(dest))  # checks --dest before a progress bar starts
  indices = range(count)
  if progress is not None:
    indices = progress(indices)
  counts = {'written': 0, 'skipped_transform': 0, 'skipped_bad': 0}
  channels = None
  try:
    for i in indices:
      try:
        example = images[i]
        image = fn(example['image'])
        if image is not None:
          if image.shape[:2] != (resolution, resolution):
            h, w = example['image'].shape[:2]
            raise ValueError(f'{images.name(i)} is {w}x{h}, not {resolution}x{resolution}; pass '
                             f'--transform center-crop (or center-crop-wide)')
          if channels is None:
            channels = image.shape[2]
          elif image.shape[2] != channels:
            raise ValueError(f'{images.name(i)} has {image.shape[2]} channels, the dataset '
                             f'{channels}; convert it to {"RGB" if channels == 3 else "greyscale"}')
      except ValueError as e:
        if not skip_bad:
          raise
        warnings.warn(f'skipping {e}')
        counts['skipped_bad'] += 1
        continue
      if image is None:
        counts['skipped_transform'] += 1
        continue
      writer.add(counts['written'], image, _label_value(example['label']))
      counts['written'] += 1
    if not counts['written']:
      raise ValueError(f'no image of {source} was written ({counts["skipped_transform"]} skipped '
                       f'by --transform {transform}, {counts["skipped_bad"]} bad)')
  except BaseException:  # failed or interrupted: leave nothing that looks like a dataset
    writer.abort()
    raise
  writer.close()
  return counts


def _convert_to_bucket(source, dest, resolution, transform, wide_height, max_images, skip_bad,
                       progress) -> dict[str, int]:
  """`convert_dataset` to `gs://`: written locally (as any dataset), then uploaded. A zip is one
  object, which appears only when complete; a folder's files are uploaded one by one with
  dataset.json last. LMDB, a local database, is refused."""
  storage.require_bucket(dest)
  dest = storage.as_path(dest)
  if dest.suffix.lower() == '.lmdb':
    raise ValueError(f'--dest {dest}: an LMDB cannot live in a bucket; write a .zip there')
  if dest.exists():
    raise FileExistsError(f'--dest {dest} already exists; remove it or choose a new --dest')
  staging = storage.LocalStaging(dest, prefix='sg2jax-dataset-')
  try:
    local = staging.local / dest.name
    counts = convert_dataset(source, local, resolution, transform, wide_height, max_images,
                             skip_bad, progress)
    storage.upload(local, dest)
  finally:
    staging.close()
  return counts
