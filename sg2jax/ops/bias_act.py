"""Bias + activation + gain + clamp, fused in one function (REFERENCE.md §1.2)."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

# name -> (function, default gain). lrelu uses slope 0.2 and the gain sqrt(2) of the paper.
ACTIVATIONS: dict[str, tuple[Callable[[jnp.ndarray], jnp.ndarray], float]] = {
    'linear': (lambda x: x, 1.0),
    'relu': (jax.nn.relu, float(np.sqrt(2))),
    'lrelu': (lambda x: jax.nn.leaky_relu(x, 0.2), float(np.sqrt(2))),
    'tanh': (jnp.tanh, 1.0),
    'sigmoid': (jax.nn.sigmoid, 1.0),
    'softplus': (jax.nn.softplus, 1.0),
    'swish': (jax.nn.swish, float(np.sqrt(2))),
}


def default_gain(activation: str) -> float:
  """The gain that keeps the activation variance-preserving (`sqrt(2)` for lrelu and relu)."""
  return activation_spec(activation)[1]


def activation_spec(activation: str) -> tuple[Callable[[jnp.ndarray], jnp.ndarray], float]:
  if activation not in ACTIVATIONS:
    raise ValueError(f'unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}')
  return ACTIVATIONS[activation]


def bias_act(
    x: jnp.ndarray,
    b: Optional[jnp.ndarray] = None,
    activation: str = 'linear',
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
) -> jnp.ndarray:
  """Adds a per-channel bias, applies the activation, scales, then clamps.

  1. `y = x + b`, `b` broadcast along the last (channel) axis.
  2. `y = act(y)`.
  3. `y = y * gain` (`gain=None`: the activation's default, e.g. `sqrt(2)` for lrelu).
  4. If `clamp` is set: `y = clip(y, -clamp, clamp)` (after the gain, as ADA; TF never clamps).

  Args:
    x: `[..., C]`.
    b: `[C]` or None.
    activation: a key of `ACTIVATIONS`.
    gain: output scale; None for the default gain.
    clamp: clip magnitude after the gain, or None.

  Returns:
    Array shaped like `x`, in `x.dtype`.
  """
  fn, def_gain = activation_spec(activation)
  gain = def_gain if gain is None else float(gain)
  if b is not None:
    x = x + b.astype(x.dtype)
  x = fn(x)
  if gain != 1:
    x = x * jnp.asarray(gain, x.dtype)
  if clamp is not None and clamp >= 0:
    x = jnp.clip(x, -clamp, clamp)
  return x
