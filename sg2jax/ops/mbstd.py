"""Minibatch standard deviation (REFERENCE.md §1.9)."""

from typing import Optional

import jax
import jax.numpy as jnp


def minibatch_group_size(batch_size: int, group_size: Optional[int]) -> int:
  """`min(group_size, N)` (`None`: the whole batch); the batch must be a multiple of it."""
  g = batch_size if group_size is None else min(group_size, batch_size)
  if batch_size % g:
    raise ValueError(
        f'minibatch stddev: batch {batch_size} is not divisible by the group size {g}; use a '
        f'batch (per device) that is a multiple of {g} or smaller than {g}, or change '
        f'mbstd_group_size')
  return g


def minibatch_stddev(x: jnp.ndarray, group_size: Optional[int] = 4, num_channels: int = 1,
                     batch_gpu: Optional[int] = None) -> jnp.ndarray:
  """Appends the minibatch standard deviation as `num_channels` extra feature maps.

  With `G = min(group_size, N)`, `n = N / G`, `F = num_channels`, `c = C / F`:
  1. Split the batch into `n` groups of `G` *strided* samples: sample `i` is in group `i % n`
     (the official `reshape(G, n, ...)`), and the channels into `F` groups of `c`.
  2. Per group: variance over its `G` members (biased), `sd = sqrt(var + 1e-8)`.
  3. Average `sd` over pixels and the `c` channels -> one value per group and feature `F`.
  4. Append it, constant over `H x W`, to every member of the group.
  Computed in float32 whatever the input dtype; returned in the input dtype.

  With `batch_gpu` (the official per-GPU batch), the batch is first cut into consecutive parts
  of that many samples and the groups form within each part, as when every GPU runs D on its own
  part of the batch (REFERENCE.md §2.6). A global batch sharded over devices then gives the same
  groups whatever the number of devices.

  Args:
    x: `[N, H, W, C]`.
    group_size: at most this many samples per group; None for the whole per-GPU batch.
    num_channels: number of extra channels `F`; must divide `C`.
    batch_gpu: samples per GPU, or None for one GPU (the whole batch).

  Returns:
    `[N, H, W, C + F]`.

  Raises:
    ValueError: if the batch is not divisible by the group size (or by `batch_gpu`), or `F`
      does not divide `C`.
  """
  if batch_gpu is not None and batch_gpu < x.shape[0]:
    if x.shape[0] % batch_gpu:
      raise ValueError(f'minibatch stddev: batch {x.shape[0]} is not divisible by batch_gpu '
                       f'{batch_gpu}; make batch_size a multiple of batch_gpu')
    gpus = x.reshape((x.shape[0] // batch_gpu, batch_gpu) + x.shape[1:])  # [GPUs, B, H, W, C]
    y = jax.vmap(lambda part: minibatch_stddev(part, group_size, num_channels))(gpus)
    return y.reshape((x.shape[0],) + y.shape[2:])
  n_total, h, w, c_total = x.shape
  g = minibatch_group_size(n_total, group_size)
  f = num_channels
  if c_total % f:
    raise ValueError(f'minibatch stddev: {c_total} channels are not divisible by num_channels={f}')
  y = x.astype(jnp.float32).reshape(g, n_total // g, h, w, f, c_total // f)  # [G, n, H, W, F, c]
  y = y - y.mean(axis=0)
  y = jnp.sqrt(jnp.square(y).mean(axis=0) + 1e-8)  # [n, H, W, F, c]
  y = y.mean(axis=(1, 2, 4))  # [n, F]
  y = jnp.tile(y, (g, 1))  # [N, F]: sample i gets group i % n
  y = jnp.broadcast_to(y[:, None, None, :], (n_total, h, w, f)).astype(x.dtype)
  return jnp.concatenate([x, y], axis=-1)
