"""Random-access image sources with one interface: a folder, an official dataset zip, an LMDB
(LSUN, or one written by dataset_tool), or a tensorflow-datasets dataset.

`source[i]` is `{'image': uint8 [H, W, C], 'label': float32 [c_dim]}`; `source.name(i)` names the
file or record for error messages. Sources open files lazily, so they pickle (grain workers).
Labels follow the official `dataset.json` (`{"labels": [[relative path, label], ...]}`): integer
labels become one-hot vectors, lists are used as they are.
"""

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from absl import logging
from PIL import Image

from sg2jax import storage

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.ppm', '.tif', '.tiff')
# What reading a broken image raises: decoding and size checks (ValueError), a file that went
# away or cannot be read (OSError), a damaged zip member (BadZipFile: bad CRC), a cut-off file.
READ_ERRORS = (ValueError, OSError, zipfile.BadZipFile, EOFError)


class BadImageError(ValueError):
  """An image of the training data cannot be used (raised with `strict`, or when none can)."""


def decode_image(data: bytes, name: str) -> np.ndarray:
  """Encoded bytes -> uint8 `[H, W, C]` (C = 1 for greyscale, 3 for colour)."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      if img.mode not in ('L', 'RGB'):
        img = img.convert('RGB')
      array = np.asarray(img, dtype=np.uint8)
  except Exception as e:  # PIL raises many types for broken files
    raise ValueError(f'{name}: not a readable image ({type(e).__name__}: {e}); fix or remove '
                     f'it, or rebuild the dataset with dataset_tool --skip-bad') from None
  return array[..., None] if array.ndim == 2 else array


def _labels_from_json(text: str, names: Sequence[str], where: str) -> Optional[np.ndarray]:
  labels = json.loads(text).get('labels')
  if labels is None:
    return None
  by_name = {str(k).replace('\\', '/'): v for k, v in labels}
  missing = [n for n in names if n not in by_name]
  if missing:
    raise ValueError(f'{where}: dataset.json has no label for {missing[0]} '
                     f'(and {len(missing) - 1} more)')
  values = [by_name[n] for n in names]
  if all(isinstance(v, (int, np.integer)) for v in values):
    onehot = np.zeros((len(values), max(values) + 1), np.float32)
    onehot[np.arange(len(values)), values] = 1
    return onehot
  return np.asarray(values, np.float32).reshape(len(values), -1)


class ImageSource:
  """Base class: subclasses set `self.labels` (or None) and implement `_read(i)`, `name(i)`."""

  labels: Optional[np.ndarray] = None

  def __len__(self) -> int:
    raise NotImplementedError

  def name(self, index: int) -> str:
    raise NotImplementedError

  def _read(self, index: int) -> np.ndarray:
    raise NotImplementedError

  @property
  def label_dim(self) -> int:
    return 0 if self.labels is None else self.labels.shape[1]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    label = (np.zeros((0,), np.float32) if self.labels is None
             else self.labels[index].astype(np.float32))
    return {'image': self._read(int(index)), 'label': label}


class FolderSource(ImageSource):
  """Every image file under `root` (recursively, sorted), with labels from `root/dataset.json`."""

  def __init__(self, root: str | Path):
    self.root = storage.as_path(root)
    if not self.root.is_dir():
      raise FileNotFoundError(f'image folder {self.root} not found')
    if storage.is_remote(self.root):
      names = storage.remote_files(self.root)
    else:
      names = [str(p.relative_to(self.root)).replace(os.sep, '/') for p in self.root.rglob('*')]
    self.files = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
    if not self.files:
      raise ValueError(f'{self.root} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    meta = self.root / 'dataset.json'
    if meta.is_file():
      self.labels = _labels_from_json(meta.read_text(), self.files, str(meta))

  def __len__(self) -> int:
    return len(self.files)

  def name(self, index: int) -> str:
    return str(self.root / self.files[index])

  def _read(self, index: int) -> np.ndarray:
    return decode_image((self.root / self.files[index]).read_bytes(), self.name(index))


class ZipSource(ImageSource):
  """An official dataset zip (`dataset_tool` output): images plus an optional dataset.json."""

  def __init__(self, path: str | Path):
    self.path = storage.as_path(path)
    if not self.path.is_file():
      raise FileNotFoundError(f'dataset zip {self.path} not found')
    try:
      with zipfile.ZipFile(self._open()) as archive:
        names = archive.namelist()
        self.files = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)
        meta = archive.read('dataset.json').decode() if 'dataset.json' in names else None
    except zipfile.BadZipFile as e:
      raise ValueError(f'{self.path} is not a zip file ({e})') from None
    if not self.files:
      raise ValueError(f'{self.path} holds no images')
    if meta is not None:
      self.labels = _labels_from_json(meta, self.files, f'{self.path}:dataset.json')
    self._archive = None

  def __getstate__(self):
    return {**self.__dict__, '_archive': None}

  def _open(self):
    """The zip file; on Cloud Storage a file object that reads byte ranges on demand (the
    directory at the end, then each image), so no copy of the whole archive is made."""
    return storage.open_read(self.path) if storage.is_remote(self.path) else self.path

  def __len__(self) -> int:
    return len(self.files)

  def name(self, index: int) -> str:
    return f'{self.path}:{self.files[index]}'

  def _read(self, index: int) -> np.ndarray:
    if self._archive is None:
      self._archive = zipfile.ZipFile(self._open())
    return decode_image(self._archive.read(self.files[index]), self.name(index))


class LmdbSource(ImageSource):
  """An LMDB of encoded images (LSUN's `*_lmdb` folders, or one written by dataset_tool).

  Keys are read once at construction; dataset_tool LMDBs may hold a `__dataset_json__` record.
  """

  META_KEY = b'__dataset_json__'

  def __init__(self, path: str | Path, max_images: Optional[int] = None):
    import lmdb  # only needed for LMDB data
    self.path = Path(path)
    if not self.path.exists():
      raise FileNotFoundError(f'LMDB {self.path} not found')
    env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, max_readers=64)
    with env.begin() as txn:
      keys = []
      for key in txn.cursor().iternext(values=False):
        if key != self.META_KEY:
          keys.append(bytes(key))
          if max_images is not None and len(keys) >= max_images:
            break
      meta = txn.get(self.META_KEY)
    env.close()
    self.keys = keys
    if not self.keys:
      raise ValueError(f'{self.path} holds no records')
    if meta is not None:
      self.labels = _labels_from_json(meta.decode(), [k.decode() for k in self.keys],
                                      f'{self.path}:{self.META_KEY.decode()}')
    self._env = None

  def __getstate__(self):
    return {**self.__dict__, '_env': None}

  def __len__(self) -> int:
    return len(self.keys)

  def name(self, index: int) -> str:
    return f'{self.path}:{self.keys[index].decode(errors="replace")}'

  def _read(self, index: int) -> np.ndarray:
    if self._env is None:
      import lmdb
      self._env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False,
                            max_readers=64)
    with self._env.begin() as txn:
      data = txn.get(self.keys[index])
    return decode_image(data, self.name(index))


class TfdsSource(ImageSource):
  """A tensorflow-datasets dataset through `tfds.data_source` (array_record builds, no TF graph).

  Images come from the `image` feature; with `use_labels`, the integer `label` feature becomes a
  one-hot label (read with the image, so nothing is scanned up front).
  """

  def __init__(self, name: str, split: str = 'train', data_dir: Optional[str] = None,
               use_labels: bool = False):
    import tensorflow_datasets as tfds  # only needed for tfds data
    self.dataset_name, self.split = name, split
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:
      raise ValueError(f'tfds dataset {name!r} (split {split!r}) is not available: {e}') from None
    self.num_classes = 0
    if use_labels:
      features = self._source.dataset_info.features
      if 'label' not in features:
        raise ValueError(f'tfds dataset {name!r} has no label feature but config.cond is True')
      self.num_classes = features['label'].num_classes

  @property
  def label_dim(self) -> int:
    return self.num_classes

  def __len__(self) -> int:
    return len(self._source)

  def name(self, index: int) -> str:
    return f'tfds:{self.dataset_name}/{self.split}[{index}]'

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    record = self._source[int(index)]
    image = np.asarray(record['image'], np.uint8)
    label = np.zeros((self.num_classes,), np.float32)
    if self.num_classes:
      label[int(record['label'])] = 1
    return {'image': image[..., None] if image.ndim == 2 else image, 'label': label}


class ShapesSource(ImageSource):
  """Generated images: one filled circle or square of a random colour on a plain background.

  Image i depends only on (seed, i), so the set is a fixed, shareable dataset that needs no files
  (the demo trains on it). Edges are anti-aliased by 4x supersampling.
  """

  def __init__(self, num_images: int, resolution: int, seed: int = 0):
    self.num_images, self.resolution, self.seed = int(num_images), int(resolution), int(seed)

  def __len__(self) -> int:
    return self.num_images

  def name(self, index: int) -> str:
    return f'shapes[{index}]'

  def _read(self, index: int) -> np.ndarray:
    rng = np.random.default_rng([self.seed, index])
    s = 4 * self.resolution
    yy, xx = (np.mgrid[0:s, 0:s] + 0.5) / s  # pixel centres in [0, 1]
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    radius = rng.uniform(0.15, 0.3)
    if rng.random() < 0.5:
      mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    else:
      mask = (np.abs(yy - cy) < radius * 0.85) & (np.abs(xx - cx) < radius * 0.85)
    background = rng.uniform(0.0, 0.35, size=3)
    colour = rng.uniform(0.45, 1.0, size=3)
    image = np.where(mask[..., None], colour, background)  # [4R, 4R, 3]
    image = image.reshape(self.resolution, 4, self.resolution, 4, 3).mean(axis=(1, 3))
    return np.round(image * 255).astype(np.uint8)


SOURCES = ('folder', 'zip', 'lmdb', 'tfds', 'shapes')


def open_source(kind: str, path: str, split: str = 'train', use_labels: bool = False,
                data_dir: Optional[str] = None, num_images: int = 0, resolution: int = 0,
                seed: int = 0) -> ImageSource:
  """Opens a source by kind ('folder', 'zip', 'lmdb', 'tfds', 'shapes'); `path` is the tfds name
  for tfds and unused for the generated 'shapes' (`num_images` at `resolution`)."""
  if kind == 'shapes':
    if use_labels:
      raise ValueError("the generated 'shapes' data has no labels; set config.cond=False")
    if num_images <= 0 or not resolution:
      raise ValueError("data source 'shapes' needs config.data.num_images > 0 and "
                       "config.resolution")
    return ShapesSource(num_images, resolution, seed)
  if not path:
    raise ValueError('config.data.path is empty; prepare the images with `python -m '
                     'sg2jax.dataset_tool` and pass --config.data.path=DATASET')
  if kind == 'folder':
    source = FolderSource(path)
  elif kind == 'zip':
    source = ZipSource(path)
  elif kind == 'lmdb':
    if storage.is_remote(path):
      raise ValueError(f'{path}: LMDB is read from local disk only; convert it to a zip '
                       f'(python -m sg2jax.dataset_tool --source {path} --dest DATASET.zip) and '
                       f'put that in the bucket')
    source = LmdbSource(path)
  elif kind == 'tfds':
    return TfdsSource(path, split, data_dir, use_labels)
  else:
    raise ValueError(f'config.data.source {kind!r} is not one of {", ".join(SOURCES)}')
  if not use_labels:
    source.labels = None
  elif source.labels is None:
    raise ValueError(f'{path} has no labels (dataset.json) but config.cond is True')
  return source


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Where a run's images come from and how they are used (`train/build.py` makes it from
  `config.data`, `resolution`, `cond`, `mirror` and `seed`; the eval CLI from a run's saved
  config)."""
  source: str = 'auto'  # 'auto' (from the path) or one of SOURCES
  path: str = ''
  split: str = 'train'  # tfds
  use_labels: bool = False
  tfds_data_dir: Optional[str] = None
  num_images: int = 0  # 'shapes': how many to generate
  resolution: int = 0  # 'shapes': their size
  seed: int = 0  # 'shapes'
  max_images: Optional[int] = None  # use the first N only
  mirror: bool = False  # x-flip augmentation of the reals

  @property
  def kind(self) -> str:
    """The source kind, guessed from the path when `source` is 'auto'."""
    return guess_source_kind(self.path) if self.source == 'auto' else self.source

  def open(self) -> ImageSource:
    return open_source(self.kind, self.path, self.split, self.use_labels, self.tfds_data_dir,
                       self.num_images, self.resolution, self.seed)


def guess_source_kind(path: str) -> str:
  """'zip' for *.zip, 'lmdb' for a folder with data.mdb, else 'folder'."""
  p = storage.as_path(path)
  if p.suffix.lower() == '.zip':
    return 'zip'
  if not storage.is_remote(p) and (p / 'data.mdb').is_file():
    return 'lmdb'
  return 'folder'


def first_image(source: ImageSource, num_images: Optional[int] = None,
                strict: bool = False) -> tuple[int, tuple[int, int, int]]:
  """`(index, (H, W, C))` of the first readable image among the first `num_images` (None: all),
  which gives the dataset's size and channels.

  Unreadable images before it are skipped with a warning naming each, as training skips any bad
  image: the caller passes their indices, `range(index)`, to `TrainData` (`bad_images`), which
  counts them and replaces each by the next good one.

  Raises:
    BadImageError: with `strict`, the first image is unreadable; or none of them reads.
  """
  count = len(source) if num_images is None else min(num_images, len(source))
  first_error = None
  for index in range(count):
    try:
      return index, tuple(source[index]['image'].shape)  # type: ignore[return-value]
    except READ_ERRORS as e:
      message = ' '.join(str(e).split()) or type(e).__name__
      if strict:
        raise BadImageError(f'{message} (config.data.strict is set)') from None
      first_error = first_error or message
      logging.warning('skipping a bad training image (%d skipped so far; the dataset\'s size '
                      'comes from the first good one): %s', index + 1, message)
  raise BadImageError(f'none of the {count} images of the dataset can be read; the first: '
                      f'{first_error}')


def image_shape(source: ImageSource) -> tuple[int, int, int]:
  """`(H, W, C)` of the first readable image (`first_image`)."""
  return first_image(source)[1]


def check_image(image: np.ndarray, resolution: int, channels: int, name: str) -> np.ndarray:
  """One-line error unless the image is `resolution x resolution` with `channels` channels."""
  if image.shape != (resolution, resolution, channels):
    h, w, c = image.shape
    raise ValueError(f'{name} is {w}x{h} with {c} channel(s), expected {resolution}x{resolution} '
                     f'with {channels}; prepare the data with `python -m sg2jax.dataset_tool '
                     f'--resolution {resolution}`')
  return image
