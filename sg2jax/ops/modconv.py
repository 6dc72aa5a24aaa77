"""Modulated convolution (REFERENCE.md §1.4) for one sample; the fused form is `jax.vmap`-ed.

Vmapping the fused form, whose kernel differs per sample, makes XLA's batching rule emit one
grouped convolution (`feature_group_count = N`); the non-fused form, whose kernel is shared,
is an ordinary convolution of the whole batch between a per-sample scaling of its input and
output channels. No batch is reshaped into groups by hand.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sg2jax.ops.conv_resample import conv2d_resample

DEMODULATION_EPS = 1e-8


def modulate_weight(weight: jnp.ndarray, style: jnp.ndarray) -> jnp.ndarray:
  """`w'[kh, kw, i, o] = weight[kh, kw, i, o] * style[i]`, in float32."""
  return weight.astype(jnp.float32) * style.astype(jnp.float32)[None, None, :, None]


def demodulation_coefficients(modulated_weight: jnp.ndarray) -> jnp.ndarray:
  """`1 / sqrt(sum_{kh, kw, i} w'^2 + 1e-8)` per output channel `[O]` (epsilon inside the root)."""
  return lax.rsqrt(jnp.sum(jnp.square(modulated_weight), axis=(0, 1, 2)) + DEMODULATION_EPS)


def modulated_conv2d_single(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    style: jnp.ndarray,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: Optional[np.ndarray] = None,
    fused: bool = True,
) -> jnp.ndarray:
  """Modulated (and demodulated) convolution of ONE sample.

  1. Modulate: `w' = weight * style` along the input channels.
  2. Demodulate (unless `demodulate=False`, e.g. ToRGB): `w'' = w' * d`,
     `d[o] = rsqrt(sum_{kh, kw, i} w'^2 + 1e-8)`.
  3. Correlate `x` with `w''`, upsampling first if `up = 2` (`conv2d_resample`).
  The non-fused form (`fused=False`) computes the same thing without a per-sample kernel:
  `conv(x * style, weight) * d`.

  Style and demodulation coefficients are float32; the convolution runs in `x.dtype`.

  Args:
    x: `[H, W, I]`.
    weight: `[kh, kw, I, O]` raw weight (any constant scale cancels under demodulation).
    style: `[I]`.
    demodulate: apply step 2.
    up: 1 or 2.
    padding: convolution padding (`kernel_size // 2`).
    resample_filter: FIR filter for `up > 1`.
    fused: modulate the weight (True) or the activations (False).

  Returns:
    `[H', W', O]` in `x.dtype`.
  """
  dtype = x.dtype
  w = modulate_weight(weight, style)  # [kh, kw, I, O]
  d = demodulation_coefficients(w) if demodulate else None  # [O]
  if fused:
    if d is not None:
      w = w * d
    y = conv2d_resample(x[None], w.astype(dtype), resample_filter, up=up, padding=padding)[0]
  else:
    y = conv2d_resample((x * style.astype(dtype))[None], weight.astype(dtype), resample_filter,
                        up=up, padding=padding)[0]
    if d is not None:
      y = y * d.astype(dtype)
  return y


def modulated_conv2d(
    x: jnp.ndarray,
    weight: jnp.ndarray,
    styles: jnp.ndarray,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: Optional[np.ndarray] = None,
    fused: bool = True,
    noise: Optional[jnp.ndarray] = None,
) -> jnp.ndarray:
  """`modulated_conv2d_single` over the batch, plus noise added after demodulation.

  The fused form is `jax.vmap`-ed (one kernel per sample: XLA's batching rule makes it a grouped
  convolution). The non-fused form's kernel is shared, so its convolution runs on the whole
  batch at once, between the per-sample modulation and demodulation; its demodulation
  coefficients are `rsqrt(styles^2 @ sum_{kh, kw} weight^2 + 1e-8)`, the same sum as step 2 of
  `modulated_conv2d_single` without an `[N, kh, kw, I, O]` modulated kernel (and its gradient's
  weight part stays one convolution over the batch, not N summed per-sample ones).

  Args:
    x: `[N, H, W, I]`.
    weight: `[kh, kw, I, O]`, shared by all samples.
    styles: `[N, I]`.
    demodulate, up, padding, resample_filter, fused: as `modulated_conv2d_single`.
    noise: already scaled noise `[N, H', W', 1]` (or anything broadcastable to it) or None.

  Returns:
    `[N, H', W', O]`.
  """
  if fused:
    single = functools.partial(modulated_conv2d_single, demodulate=demodulate, up=up,
                               padding=padding, resample_filter=resample_filter, fused=True)
    y = jax.vmap(single, in_axes=(0, None, 0))(x, weight, styles)
  else:
    dtype = x.dtype
    y = conv2d_resample(x * styles.astype(dtype)[:, None, None, :], weight.astype(dtype),
                        resample_filter, up=up, padding=padding)  # [N, H', W', O]
    if demodulate:
      styles32, weight32 = styles.astype(jnp.float32), weight.astype(jnp.float32)
      d = lax.rsqrt(jnp.square(styles32) @ jnp.sum(jnp.square(weight32), axis=(0, 1))
                    + DEMODULATION_EPS)  # [N, O]
      y = y * d.astype(dtype)[:, None, None, :]
  if noise is not None:
    y = y + noise.astype(y.dtype)
  return y
