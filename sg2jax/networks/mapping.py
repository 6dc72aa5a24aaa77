"""Mapping network z -> w with w_avg tracking and truncation (REFERENCE.md §1.5, §1.6, §1.11)."""

from typing import Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sg2jax.networks.layers import EqualizedDense
from sg2jax.ops.normalize import normalize_2nd_moment

Scalar = Union[float, jnp.ndarray]


def truncate(ws: jnp.ndarray, w_avg: jnp.ndarray, truncation_psi: Scalar,
             truncation_cutoff: Optional[Scalar] = None) -> jnp.ndarray:
  """`w_avg + psi * (w - w_avg)` on layers `l < cutoff` (all layers if cutoff is None).

  Args:
    ws: `[N, num_ws, w_dim]`.
    w_avg: `[w_dim]`.
    truncation_psi: psi; a Python 1 returns `ws` unchanged.
    truncation_cutoff: number of leading layers to truncate, or None for all.
  """
  if isinstance(truncation_psi, (int, float)) and truncation_psi == 1:
    return ws
  truncated = w_avg + truncation_psi * (ws - w_avg)
  if truncation_cutoff is None:
    return truncated
  layer = jnp.arange(ws.shape[1])[None, :, None]
  return jnp.where(layer < truncation_cutoff, truncated, ws)


def tracked_w_avg(mapping: nn.Module, w: jnp.ndarray, update: bool) -> jnp.ndarray:
  """`mapping`'s `stats` variable `w_avg [w_dim]` (init zeros); with `update` (outside init) first
  `w_avg <- mean_batch(w) + w_avg_beta * (w_avg - mean_batch(w))`, the mean without gradient."""
  w_avg = mapping.variable('stats', 'w_avg', jnp.zeros, (mapping.w_dim,), jnp.float32)
  if update and not mapping.is_initializing():
    batch_mean = jax.lax.stop_gradient(w.mean(axis=0))
    w_avg.value = batch_mean + mapping.w_avg_beta * (w_avg.value - batch_mean)
  return w_avg.value


class MappingNetwork(nn.Module):
  """z (and a label c) -> w, broadcast to `num_ws` layers.

  1. `x = normalize_2nd_moment(z)`; with labels, `concat(x, normalize_2nd_moment(embed(c)))`
     (ADA's conditioning, REFERENCE.md §1.11).
  2. `num_layers` equalized dense layers, lr multiplier 0.01, each followed by lrelu * sqrt(2).
  3. With `update_w_avg=True` (training; needs `mutable=['stats']`):
     `w_avg <- mean_batch(w) + w_avg_beta * (w_avg - mean_batch(w))`.
  4. Broadcast to `[N, num_ws, w_dim]` and truncate towards `w_avg`.

  Variables: `params` `fc0..fc{L-1}` (+ `embed`), `stats` `w_avg [w_dim]` (when `w_avg_beta`).
  With `num_ws=None` the output is `[N, w_dim]` (the discriminator's label mapping).
  """
  z_dim: int
  c_dim: int
  w_dim: int
  num_ws: Optional[int]
  num_layers: int = 8
  embed_features: Optional[int] = None
  layer_features: Optional[int] = None
  activation: str = 'lrelu'
  lr_multiplier: float = 0.01
  w_avg_beta: Optional[float] = 0.995

  @nn.compact
  def __call__(self, z: Optional[jnp.ndarray], c: Optional[jnp.ndarray] = None,
               truncation_psi: Scalar = 1.0, truncation_cutoff: Optional[Scalar] = None,
               update_w_avg: bool = False) -> jnp.ndarray:
    embed_features = self.w_dim if self.embed_features is None else self.embed_features
    layer_features = self.w_dim if self.layer_features is None else self.layer_features
    x = None
    if self.z_dim > 0:
      if z is None or z.shape[-1] != self.z_dim:
        raise ValueError(f'mapping expects z of shape [N, {self.z_dim}], got '
                         f'{None if z is None else z.shape}')
      x = normalize_2nd_moment(z.astype(jnp.float32))
    if self.c_dim > 0:
      if c is None or c.shape[-1] != self.c_dim:
        raise ValueError(f'this network is conditional: pass labels c of shape [N, {self.c_dim}]')
      y = EqualizedDense(embed_features, name='embed')(c.astype(jnp.float32))
      y = normalize_2nd_moment(y)
      x = y if x is None else jnp.concatenate([x, y], axis=1)
    for idx in range(self.num_layers):
      features = self.w_dim if idx == self.num_layers - 1 else layer_features
      x = EqualizedDense(features, lr_multiplier=self.lr_multiplier, activation=self.activation,
                         name=f'fc{idx}')(x)
    w_avg = None if self.w_avg_beta is None else tracked_w_avg(self, x, update_w_avg)
    if self.num_ws is None:
      return x
    x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
    if not (isinstance(truncation_psi, (int, float)) and truncation_psi == 1):
      if w_avg is None:
        raise ValueError('truncation needs w_avg, but this mapping has w_avg_beta=None')
      x = truncate(x, w_avg, truncation_psi, truncation_cutoff)
    return x
