"""The training input pipeline on grain: epoch shuffling, host sharding, x-flips, batching.

Deterministic given the seed: epoch e is a fresh permutation of the images, global batch s is
elements `s*B .. s*B + B - 1` of that stream, and process p of P loads rows `p*B/P ..` of each
global batch (the rows its devices hold), so any number of processes sees the same global
batches. The mirror flip of an element is drawn from a generator seeded by its stream index.
The iterator's position is a small JSON-able dict stored with each checkpoint, so a resumed run
reads exactly the batches an uninterrupted one would.
"""

from typing import Any, Iterator, Optional

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


class _HostRows:
  """Element i of this process's stream: row `i % Bh` of global batch `i // Bh`, i.e. stream
  element `(i // Bh) * B + p * Bh + i % Bh`."""

  def __init__(self, dataset, global_batch: int, host_batch: int, process_index: int):
    self.dataset, self.global_batch, self.host_batch = dataset, global_batch, host_batch
    self.offset = process_index * host_batch

  def __len__(self) -> int:
    return len(self.dataset) // self.global_batch * self.host_batch

  def __getitem__(self, index: int):
    batch, row = divmod(int(index), self.host_batch)
    return self.dataset[batch * self.global_batch + self.offset + row]


class TrainData:
  """Infinite stream of host batches `{'image': uint8 [B, R, R, C], 'label': [B, c_dim]}`.

  Args:
    source: the images.
    resolution, channels: what every image must be.
    global_batch_size: rows per step over all processes.
    seed: shuffle and flip seed.
    mirror: random x-flips.
    max_images: use only the first N images (before shuffling), or None.
    num_threads: decoding threads; prefetch: batches read ahead.
  """

  def __init__(self, source: ImageSource, resolution: int, channels: int, global_batch_size: int,
               seed: int, mirror: bool = False, max_images: Optional[int] = None,
               num_threads: int = 2, prefetch: int = 2):
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
    host_batch = global_batch_size // jax.process_count()
    dataset = grain.MapDataset.source(
        _HostRows(dataset, global_batch_size, host_batch, jax.process_index()))
    self.dataset = dataset.batch(host_batch, drop_remainder=True)
    self.read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    self.num_images = len(source) if max_images is None else min(max_images, len(source))
    self._iterator = None

  def iterator(self) -> Iterator[dict[str, np.ndarray]]:
    if self._iterator is None:
      self._iterator = iter(self.dataset.to_iter_dataset(self.read_options))
    return self._iterator

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self.iterator())

  def __iter__(self):
    return self

  def get_state(self) -> dict[str, Any]:
    """The position, JSON-able."""
    return dict(self.iterator().get_state())

  def set_state(self, state: dict[str, Any]) -> None:
    self.iterator().set_state(dict(state))
