"""Equalized learning rate: weights stored at unit scale, scaled at run time (REFERENCE.md §1.1).

A layer stores `theta ~ N(0, (1/lr)^2)` and uses `W = theta * lr / sqrt(fan_in)`; its bias is
stored as `beta` and used as `beta * lr`. With Adam this makes `lr` a per-layer learning rate.
"""

from typing import Optional

import jax.numpy as jnp
import numpy as np

from sg2jax.ops.bias_act import bias_act, default_gain
from sg2jax.ops.conv_resample import conv2d_resample


def weight_gain(fan_in: int, lr_multiplier: float = 1.0) -> float:
  """`lr_multiplier / sqrt(fan_in)`: the run-time scale of an equalized weight."""
  return float(lr_multiplier / np.sqrt(fan_in))


def equalized_dense(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    bias: Optional[jnp.ndarray] = None,
    lr_multiplier: float = 1.0,
    activation: str = 'linear',
) -> jnp.ndarray:
  """Equalized fully connected layer `[N, I] -> [N, O]`.

  1. `y = x @ (weight * lr / sqrt(I))` with `weight` `[I, O]`.
  2. `y = act(y + bias * lr) * default_gain(act)` (lrelu: slope 0.2, gain sqrt(2)).
  """
  w = weight.astype(x.dtype) * jnp.asarray(weight_gain(weight.shape[0], lr_multiplier), x.dtype)
  y = x @ w
  b = None
  if bias is not None:
    b = bias.astype(x.dtype)
    if lr_multiplier != 1:
      b = b * jnp.asarray(lr_multiplier, x.dtype)
  return bias_act(y, b, activation)


def equalized_conv2d(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    bias: Optional[jnp.ndarray] = None,
    activation: str = 'linear',
    up: int = 1,
    down: int = 1,
    resample_filter: Optional[np.ndarray] = None,
    gain: float = 1.0,
    conv_clamp: Optional[float] = None,
) -> jnp.ndarray:
  """Equalized convolution with optional FIR resampling `[N, H, W, I] -> [N, H', W', O]`.

  1. `W = weight / sqrt(kh * kw * I)` (`weight` `[kh, kw, I, O]`), correlated with `x` with
     `kernel_size // 2` padding and resampling as `conv2d_resample`.
  2. `y = act(y + bias) * default_gain(act) * gain`, clipped to `conv_clamp * gain` when set.

  `gain` is the extra scale of resnet branches (`sqrt(0.5)`, REFERENCE.md §1.7, §1.9).
  """
  kh, kw, cin, _ = weight.shape
  w = weight.astype(x.dtype) * jnp.asarray(weight_gain(kh * kw * cin), x.dtype)
  y = conv2d_resample(x, w, resample_filter, up=up, down=down, padding=kh // 2)
  clamp = conv_clamp * gain if conv_clamp is not None else None
  return bias_act(y, bias, activation, gain=default_gain(activation) * gain, clamp=clamp)
