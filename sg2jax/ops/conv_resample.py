"""2-D convolution fused with FIR resampling, as the StyleGAN2 up/down layers use it (SPEC.md §1.3).

Every convolution in sg2jax is a cross-correlation with an HWIO kernel (TF semantics); the ADA
loader flips its up-sampling kernels to match (SPEC.md §1.15).
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

from sg2jax.ops.upfirdn import Padding, parse_padding, upfirdn2d

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def conv2d(x: jnp.ndarray, w: jnp.ndarray, stride: int = 1,
           padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))) -> jnp.ndarray:
  """Plain cross-correlation `[N, H, W, I] x [kh, kw, I, O] -> [N, H', W', O]`.

  The zero padding is an explicit `lax.pad` before a VALID convolution: the same result, but
  XLA:CPU computes the weight gradient of a padded convolution ~9x slower (GPU and TPU
  compilers fold the pad back into the convolution).
  """
  (py0, py1), (px0, px1) = padding
  if any((py0, py1, px0, px1)):
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (py0, py1, 0), (px0, px1, 0), (0, 0, 0)))
  return lax.conv_general_dilated(x, w, window_strides=(stride, stride), padding='VALID',
                                  dimension_numbers=_DIMENSION_NUMBERS)


def _phase_taps(kernel_size: int, length: int, up: int, phase: int):
  """For output phase `phase` of a stride-`up` transposed correlation along one axis: the first
  tap `a0` that lands on an input pixel, the taps' count, the input pad before/after, the count."""
  a0 = (kernel_size - 1 - phase) % up
  taps = len(range(a0, kernel_size, up))
  out_length = (length - 1) * up + kernel_size
  count = -(-(out_length - phase) // up)  # ceil
  pad_before = -((phase + a0 - (kernel_size - 1)) // up)
  pad_after = count - 1 + taps - length - pad_before
  return a0, taps, pad_before, pad_after, count


def transposed_conv2d(x: jnp.ndarray, w: jnp.ndarray, up: int) -> jnp.ndarray:
  """Correlation of the zero-stuffed input with `w`: `[N, H, W, I] -> [N, (H-1)up+kh, (W-1)up+kw, O]`.

  Equal to `conv2d(x, w, padding=k-1, lhs_dilation=up)` (zeros *between* pixels, pad `k - 1`),
  computed polyphase: output pixel `(up*j + p, up*l + q)` only meets the taps
  `w[a0_p::up, a0_q::up]`, so each of the `up^2` phases is a small ordinary convolution of `x`,
  and the phases are interleaved. No multiplications by inserted zeros, and the gradients are
  ordinary convolutions too (XLA:CPU runs the gradient of an `lhs_dilation` convolution ~10x
  slower than this).
  """
  n, h, wd, _ = x.shape
  kh, kw, _, cout = w.shape
  rows = [_phase_taps(kh, h, up, p) for p in range(up)]
  cols = [_phase_taps(kw, wd, up, q) for q in range(up)]
  n_rows, n_cols = rows[0][4], cols[0][4]  # phase 0 is the longest
  phases = []
  for a0, taps_h, before_h, after_h, count_h in rows:
    row = []
    for b0, taps_w, before_w, after_w, count_w in cols:
      if taps_h == 0 or taps_w == 0:
        y = jnp.zeros((n, count_h, count_w, cout), x.dtype)
      else:
        y = conv2d(x, w[a0::up, b0::up], padding=((before_h, after_h), (before_w, after_w)))
      # Pad every phase to the longest so they interleave: [N, n_rows, n_cols, O].
      row.append(jnp.pad(y, ((0, 0), (0, n_rows - count_h), (0, n_cols - count_w), (0, 0))))
    phases.append(jnp.stack(row, axis=3))  # [N, n_rows, n_cols, up(q), O]
  y = jnp.stack(phases, axis=2)  # [N, n_rows, up(p), n_cols, up(q), O]
  y = y.reshape(n, n_rows * up, n_cols * up, cout)
  return y[:, :(h - 1) * up + kh, :(wd - 1) * up + kw]


def conv2d_resample(
    x: jnp.ndarray,
    w: jnp.ndarray,
    f: np.ndarray | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
) -> jnp.ndarray:
  """Correlates `x` with `w`, upsampling or downsampling with the FIR filter `f` on the way.

  Defined (as the official op) by its generic form:
  - `up > 1`: `correlate(upfirdn2d(x, f, up, pad=(p + (fw+up-1)//2, p + (fw-up)//2), gain=up^2), w)`.
  - `down > 1`: `correlate_stride_down(upfirdn2d(x, f, pad=(p + (fw-down+1)//2, p + (fw-down)//2)), w)`.
  - otherwise a plain correlation with zero padding `p`.
  The up case is computed as a transposed convolution (zeros between pixels, pad `k-1`) followed
  by the FIR filter, which XLA runs as one backward-data convolution instead of a convolution on
  the 4x larger upsampled image. Valid-mode convolutions commute, so both give the same result;
  the FIR pads are the generic ones minus the `k-1` the transposed convolution already added.
  1x1 kernels filter on the small side of the resampling instead.

  Args:
    x: `[N, H, W, I]`.
    w: `[kh, kw, I, O]`, applied by correlation.
    f: FIR filter `[fh, fw]` (needed when `up > 1` or `down > 1`).
    up: 1 or an integer upsampling factor.
    down: 1 or an integer downsampling factor (not together with `up`).
    padding: zero padding of the convolution, `(x0, x1, y0, y1)` or an int (`kernel_size // 2`
      in StyleGAN2).
    flip_filter: passed to `upfirdn2d`.

  Returns:
    `[N, H * up / down, W * up / down, O]` for `padding = kernel_size // 2`.
  """
  kh, kw = w.shape[0], w.shape[1]
  px0, px1, py0, py1 = parse_padding(padding)
  if up > 1 and down > 1:
    raise ValueError('conv2d_resample does both up- and downsampling in no StyleGAN2 layer; '
                     'call it twice instead')
  if up > 1:
    fh, fw = np.asarray(f).shape
    gx0, gx1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2  # generic-form FIR pads
    gy0, gy1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if kh == 1 and kw == 1:
      x = conv2d(x, w)
      return upfirdn2d(x, f, up=up, padding=(gx0, gx1, gy0, gy1), flip_filter=flip_filter,
                       gain=up * up)
    x = transposed_conv2d(x, w, up)  # [N, (H-1)*up + kh, (W-1)*up + kw, O]
    pad = (gx0 - (kw - 1), gx1 + up - 1 - (kw - 1), gy0 - (kh - 1), gy1 + up - 1 - (kh - 1))
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=up * up)
  if down > 1:
    fh, fw = np.asarray(f).shape
    pad = (px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2,
           py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2)
    if kh == 1 and kw == 1:
      x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
      return conv2d(x, w)
    x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
    return conv2d(x, w, stride=down)
  return conv2d(x, w, padding=((py0, py1), (px0, px1)))
