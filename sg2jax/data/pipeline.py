"""The training input pipeline on grain: epoch shuffling, host sharding, x-flips, batching.

Deterministic given the seed: epoch e is a fresh permutation of the images (grain), a global
batch is the next B elements of that stream, and process p of P loads rows `p*B/P ..` of it (the
rows its devices hold), so any number of processes sees the same global batches. The mirror flip
of an element is drawn from a generator seeded by its stream index. The position is a small
JSON-able dict stored with each checkpoint, so a resumed run reads exactly the batches an
uninterrupted one would.

A bad image (unreadable, or of the wrong size) does not stop a run: it is skipped with a warning
naming it, and the next good image of the dataset (index i+1, i+2, ... wrapping around) takes its
place. The replacement depends only on the data, so resumed and multi-process runs read the
same batches as a straight run. Unreadable images at the start of the dataset, which
`sources.first_image` skips while it learns the data's size, are passed in (`bad_images`) and
counted from the start. With `strict`, the first bad image raises `BadImageError` instead (the
loop saves a checkpoint first).
"""

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional, Sequence

import grain
import jax
import numpy as np
from absl import logging

from sg2jax.data.sources import READ_ERRORS, BadImageError, ImageSource, check_image


class _Checked:
  """Random-access view of the first `num_images` images of a source that validates each one and
  replaces a bad one by the next good one (or raises BadImageError with `strict`).

  Thread-safe (decoding threads and the prefetch thread read at once); `bad` holds the indices
  of the bad images found so far.
  """

  def __init__(self, source: ImageSource, resolution: int, channels: int, num_images: int,
               strict: bool):
    self.source, self.resolution, self.channels = source, resolution, channels
    self.num_images, self.strict = num_images, strict
    self.bad: set[int] = set()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self.num_images

  def _read(self, index: int) -> dict[str, np.ndarray]:
    example = self.source[index]
    check_image(example['image'], self.resolution, self.channels, self.source.name(index))
    return example

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    for offset in range(self.num_images):
      candidate = (index + offset) % self.num_images
      if candidate in self.bad:
        continue
      try:
        return self._read(candidate)
      except READ_ERRORS as e:
        message = ' '.join(str(e).split()) or type(e).__name__
        if self.strict:
          raise BadImageError(f'{message} (config.data.strict is set)') from None
        with self._lock:
          new = candidate not in self.bad
          self.bad.add(candidate)
        if new:
          logging.warning('skipping a bad training image (%d skipped so far; the next good one '
                          'replaces it): %s', len(self.bad), message)
    raise BadImageError(f'none of the {self.num_images} images of {self.source.name(0)} ... '
                        f'can be read; check the dataset')


def _mirror(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
  """x-flip with probability 0.5, per sample (TF's mirror augmentation, REFERENCE.md §2.1)."""
  if rng.random() < 0.5:
    example = {**example, 'image': example['image'][:, ::-1]}
  return example


class TrainData:
  """The shuffled, mirrored image stream, read one global batch at a time.

  `next_batch(B)` returns this process's rows of the next global batch of B images as
  `{'image': uint8 [B / P, R, R, C], 'label': [B / P, c_dim]}`; B may change between calls (the
  progressive-growing schedule changes the minibatch per resolution). The state is the number of
  stream elements consumed. Images are decoded on `num_threads` threads, and the next batch (of
  the same size) is read in the background while the current one trains.

  Args:
    source: the images.
    resolution, channels: what every image must be.
    global_batch_size: the first (and usual) batch size, checked against the dataset size.
    seed: shuffle and flip seed.
    mirror: random x-flips.
    max_images: use only the first N images (before shuffling), or None.
    num_threads: decoding threads; prefetch: read the next batch ahead (0 to disable).
    strict: raise BadImageError at the first bad image instead of skipping it.
    bad_images: indices known to be bad already (`sources.first_image` skipped them): counted
      from the start, and replaced without being read again.
  """

  def __init__(self, source: ImageSource, resolution: int, channels: int, global_batch_size: int,
               seed: int, mirror: bool = False, max_images: Optional[int] = None,
               num_threads: int = 2, prefetch: int = 1, strict: bool = False,
               bad_images: Sequence[int] = ()):
    self.source = source
    num_images = len(source) if max_images is None else min(max_images, len(source))
    self._checked = _Checked(source, resolution, channels, num_images, strict)
    self._checked.bad.update(int(i) for i in bad_images)
    dataset = grain.MapDataset.source(self._checked)
    if len(dataset) < global_batch_size:
      raise ValueError(f'the dataset has {len(dataset)} images, fewer than one batch '
                       f'({global_batch_size})')
    dataset = dataset.seed(seed).shuffle().repeat()
    if mirror:
      dataset = dataset.random_map(_mirror)
    self.stream = dataset
    self.num_images = num_images
    self.position = 0
    self._readers = ThreadPoolExecutor(max(1, num_threads), thread_name_prefix='sg2jax-decode')
    self._ahead = ThreadPoolExecutor(1, thread_name_prefix='sg2jax-prefetch') if prefetch else None
    self._pending: Optional[tuple[tuple[int, int], Future]] = None

  def _read(self, position: int, batch_size: int) -> dict[str, np.ndarray]:
    processes = jax.process_count()
    if batch_size % processes:
      raise ValueError(f'batch {batch_size} is not divisible by the {processes} processes')
    rows = batch_size // processes
    start = position + jax.process_index() * rows
    examples = list(self._readers.map(self.stream.__getitem__, range(start, start + rows)))
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}

  def next_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    """This process's rows of the next global batch of `batch_size` images."""
    key = (self.position, batch_size)
    if self._pending is not None and self._pending[0] == key:
      batch = self._pending[1].result()
    else:
      batch = self._read(*key)
    self.position += batch_size
    self._pending = None
    if self._ahead is not None:
      ahead = (self.position, batch_size)
      self._pending = (ahead, self._ahead.submit(self._read, *ahead))
    return batch

  def __len__(self) -> int:
    return self.num_images

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    """Image `index` of the dataset (unshuffled, unflipped; a bad one replaced as in batches)."""
    return self._checked[index]

  @property
  def skipped_images(self) -> int:
    """How many bad images were found (and are being replaced) so far."""
    return len(self._checked.bad)

  def get_state(self) -> dict[str, Any]:
    """The position (stream elements consumed) and the bad images found, JSON-able."""
    return {'position': self.position, 'bad_images': sorted(self._checked.bad)}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from `get_state()`'s value (states without `bad_images` are accepted)."""
    self.position = int(state['position'])
    self._checked.bad.update(int(i) for i in state.get('bad_images', ()))
    self._pending = None
