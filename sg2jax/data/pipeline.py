"""The training input pipeline on grain: epoch shuffling, host sharding, x-flips, batching.

Deterministic given the seed: epoch e is a fresh permutation of the images (grain), a global
batch is the next B elements of that stream, and process p of P loads rows `p*B/P ..` of it (the
rows its devices hold), so any number of processes sees the same global batches. The mirror flip
of an element is drawn from a generator seeded by its stream index. The position is a small
JSON-able dict stored with each checkpoint, so a resumed run reads exactly the batches an
uninterrupted one would.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import grain
import jax
import numpy as np

from sg2jax.data.sources import ImageSource, check_image


class _Checked:
  """Random-access view of a source that validates every image's size."""

  def __init__(self, source: ImageSource, resolution: int, channels: int):
    self.source, self.resolution, self.channels = source, resolution, channels

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self.source[index]
    check_image(example['image'], self.resolution, self.channels, self.source.name(index))
    return example


def _mirror(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
  """x-flip with probability 0.5, per sample (TF's mirror augmentation, SPEC.md §3.1)."""
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
  """

  def __init__(self, source: ImageSource, resolution: int, channels: int, global_batch_size: int,
               seed: int, mirror: bool = False, max_images: Optional[int] = None,
               num_threads: int = 2, prefetch: int = 1):
    self.source = source
    dataset = grain.MapDataset.source(_Checked(source, resolution, channels))
    if max_images is not None:
      dataset = dataset[:max_images]
    if len(dataset) < global_batch_size:
      raise ValueError(f'the dataset has {len(dataset)} images, fewer than one batch '
                       f'({global_batch_size})')
    dataset = dataset.seed(seed).shuffle().repeat()
    if mirror:
      dataset = dataset.random_map(_mirror)
    self.stream = dataset
    self.num_images = len(source) if max_images is None else min(max_images, len(source))
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

  def get_state(self) -> dict[str, Any]:
    """The position (stream elements consumed), JSON-able."""
    return {'position': self.position}

  def set_state(self, state: dict[str, Any]) -> None:
    self.position = int(state['position'])
    self._pending = None
