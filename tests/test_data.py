"""Image sources, the grain pipeline and the dataset tool (no networks: quick)."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from sg2jax.data.pipeline import BadImageError, TrainData
from sg2jax.data.prepare import convert_dataset, make_transform
from sg2jax.data.sources import (FolderSource, LmdbSource, ShapesSource, ZipSource, open_source)


def write_images(folder, count, size=(8, 8), labels=None, start=0):
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(start)
  names = []
  for i in range(start, start + count):
    name = f'img{i:03d}.png'
    Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(folder / name)
    names.append(name)
  if labels is not None:
    (folder / 'dataset.json').write_text(json.dumps({'labels': [[n, l] for n, l in
                                                                zip(names, labels)]}))
  return names


def test_folder_source_with_labels(tmp_path):
  write_images(tmp_path, 6, labels=[0, 1, 2, 0, 1, 2])
  source = FolderSource(tmp_path)
  assert len(source) == 6 and source.label_dim == 3
  example = source[4]
  assert example['image'].shape == (8, 8, 3) and example['image'].dtype == np.uint8
  np.testing.assert_array_equal(example['label'], [0, 1, 0])
  np.testing.assert_array_equal(example['image'], np.asarray(Image.open(tmp_path / 'img004.png')))


def test_zip_and_lmdb_written_by_the_dataset_tool_read_back(tmp_path):
  write_images(tmp_path / 'src', 5, labels=[3, 1, 0, 2, 1])
  for dest in ('out.zip', 'out.lmdb', 'outdir'):
    counts = convert_dataset(tmp_path / 'src', tmp_path / dest, 8)
    assert counts == {'written': 5, 'skipped_transform': 0, 'skipped_bad': 0}
    source = {'out.zip': ZipSource, 'out.lmdb': LmdbSource, 'outdir': FolderSource}[dest](
        tmp_path / dest)
    original = FolderSource(tmp_path / 'src')
    assert len(source) == 5 and source.label_dim == 4
    for i in range(5):
      np.testing.assert_array_equal(source[i]['image'], original[i]['image'])
      np.testing.assert_array_equal(source[i]['label'], original[i]['label'])


def test_corrupt_image_is_named(tmp_path):
  write_images(tmp_path, 3)
  (tmp_path / 'img001.png').write_bytes(b'not a png at all')
  source = FolderSource(tmp_path)
  with pytest.raises(ValueError, match=r'img001.png: not a readable image .*--skip-bad'):
    source[1]
  with pytest.raises(ValueError, match=r'img001.png: not a readable image'):
    convert_dataset(tmp_path, tmp_path / 'out.zip', 8)
  counts = convert_dataset(tmp_path, tmp_path / 'out2.zip', 8, skip_bad=True)
  assert counts == {'written': 2, 'skipped_transform': 0, 'skipped_bad': 1}


def test_wrongly_sized_image_is_named(tmp_path):
  write_images(tmp_path, 2)
  write_images(tmp_path, 1, size=(8, 6), start=7)
  with pytest.raises(ValueError, match=r'img007.png is 6x8, not 8x8; pass --transform'):
    convert_dataset(tmp_path, tmp_path / 'out', 8)
  data = TrainData(FolderSource(tmp_path), 8, 3, global_batch_size=3, seed=0, strict=True)
  with pytest.raises(BadImageError, match=r'img007.png is 6x8 with 3 channel\(s\), expected 8x8'):
    data.next_batch(4)


def test_resolution_must_be_a_power_of_two(tmp_path):
  write_images(tmp_path, 1)
  with pytest.raises(ValueError, match='--resolution 48 is not a power of two'):
    convert_dataset(tmp_path, tmp_path / 'out.zip', 48)


def test_center_crop_wide_letterboxes_lsun_car():
  """640x480 photo -> crop to 4:3, resize 512x384, rows 64..447 of a black 512x512 canvas."""
  photo = np.full((480, 640, 3), 200, np.uint8)
  out = make_transform('center-crop-wide', 512)(photo)
  assert out.shape == (512, 512, 3)
  assert (out[:64] == 0).all() and (out[448:] == 0).all()
  assert (out[64:448] == 200).all()
  assert make_transform('center-crop-wide', 512)(np.zeros((300, 500, 3), np.uint8)) is None
  square = make_transform('center-crop', 16)(np.zeros((30, 20, 3), np.uint8))
  assert square.shape == (16, 16, 3)


def test_pipeline_is_deterministic_resumable_and_epoch_shuffled(tmp_path):
  source = ShapesSource(10, 8, seed=1)
  data = TrainData(source, 8, 3, global_batch_size=4, seed=5, mirror=True)
  batches = [data.next_batch(4) for _ in range(3)]
  state = data.get_state()
  after = [data.next_batch(4) for _ in range(4)]
  again = TrainData(source, 8, 3, global_batch_size=4, seed=5, mirror=True)
  np.testing.assert_array_equal(again.next_batch(4)['image'], batches[0]['image'])
  again.set_state(state)
  for a, b in zip(after, [again.next_batch(4) for _ in range(4)]):
    np.testing.assert_array_equal(a['image'], b['image'])
  # Every image of an epoch once: the first 10 draws are the 10 images (some mirrored).
  seen = np.concatenate([b['image'] for b in batches])[:10]
  originals = [source[i]['image'] for i in range(10)]
  matched = sorted(next(i for i, o in enumerate(originals)
                        if np.array_equal(s, o) or np.array_equal(s, o[:, ::-1])) for s in seen)
  assert matched == list(range(10))
  flipped = sum(not any(np.array_equal(s, o) for o in originals) for s in seen)
  assert 0 < flipped < 10


def test_open_source_errors(tmp_path):
  with pytest.raises(ValueError, match='config.data.path is empty; prepare the images'):
    open_source('folder', '')
  with pytest.raises(ValueError, match="config.data.source 'hdf5' is not one of"):
    open_source('hdf5', str(tmp_path))
  write_images(tmp_path, 2)
  with pytest.raises(ValueError, match='has no labels .dataset.json. but config.cond is True'):
    open_source('folder', str(tmp_path), use_labels=True)


def test_dataset_tool_command(tmp_path):
  src = tmp_path / 'photos'
  write_images(src, 3, size=(20, 30))
  out = subprocess.run([sys.executable, '-m', 'sg2jax.dataset_tool', '--source', str(src),
                        '--dest', str(tmp_path / 'ds.zip'), '--resolution', '16',
                        '--transform', 'center-crop'], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert 'wrote 3 images' in out.stdout
  with zipfile.ZipFile(tmp_path / 'ds.zip') as archive:
    names = sorted(archive.namelist())
    assert names[-1] == 'dataset.json' and len(names) == 4
    img = Image.open(io.BytesIO(archive.read(names[0])))
    assert img.size == (16, 16)
  out = subprocess.run([sys.executable, '-m', 'sg2jax.dataset_tool', '--source', str(src),
                        '--dest', str(tmp_path / 'ds.zip'), '--resolution', '16'],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and out.stderr.strip().endswith('choose a new --dest')


def test_tfds_source_reads_images_and_labels():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=12):
    source = open_source('tfds', 'cifar10', 'train', use_labels=True)
    assert len(source) == 12 and source.label_dim == 10
    example = source[3]
    assert example['image'].shape == (32, 32, 3) and example['label'].sum() == 1
    data = TrainData(source, 32, 3, global_batch_size=4, seed=0)
    batch = data.next_batch(4)
    assert batch['image'].shape == (4, 32, 32, 3) and batch['label'].shape == (4, 10)
