"""2-D convolution fused with FIR resampling, as in StyleGAN2's up/down layers (REFERENCE.md §1.3).

Every convolution in sg2jax is a cross-correlation with an HWIO kernel (TF semantics); the ADA
loader flips its up-sampling kernels to match (REFERENCE.md §8.1).
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

from sg2jax.ops.conv2d import conv2d, transposed_conv2d
from sg2jax.ops.space_to_depth import LANES, fold_filter, lane_factors
from sg2jax.ops.upfirdn import Padding, parse_padding, upfirdn2d


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
  1x1 kernels filter on the small side of the resampling instead. In TPU programs a larger
  kernel's down case on maps narrower than the TPU's lanes is one strided correlation with the
  FIR filter folded into the kernel (`folded_conv2d_down`, the same linear map): no
  full-resolution filtered copy, and a correlation `space_to_depth.py` lays out for the lanes
  (docs/TPU.md). Folded, a 1x1 kernel becomes a 4x4 one: D's resnet skip is folded only on maps
  of at most a quarter of the lanes (32 channels, D's 1024 block), where it saved R1's
  second-order gradient memory; on 64-channel maps folding needed more, and wide maps would only
  gain arithmetic.

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
      def filter_then_correlate(x, w):
        return conv2d(upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter), w)
      # Folded, the 1x1 kernel becomes fh x fw: worth it only on the narrowest maps.
      foldable = x.shape[-1] <= LANES // 4
    else:
      def filter_then_correlate(x, w):
        return conv2d(upfirdn2d(x, f, padding=pad, flip_filter=flip_filter), w, stride=down)
      foldable = True
    folded_kernel_shape = (fh + kh - 1, fw + kw - 1) + tuple(w.shape[2:])
    if not foldable or lane_factors(x.shape, folded_kernel_shape, down,
                                    ((pad[2], pad[3]), (pad[0], pad[1]))) is None:
      return filter_then_correlate(x, w)
    return lax.platform_dependent(
        x, w, default=filter_then_correlate,
        tpu=lambda x, w: folded_conv2d_down(x, w, f, down, pad, flip_filter))
  return conv2d(x, w, padding=((py0, py1), (px0, px1)))


def folded_conv2d_down(x: jnp.ndarray, w: jnp.ndarray, f: np.ndarray, down: int,
                       pad: tuple[int, int, int, int], flip_filter: bool = False) -> jnp.ndarray:
  """`conv2d_resample`'s down case in TPU programs: `upfirdn2d(x, f, padding=pad)` then a
  correlation with `w` at stride `down`, as one correlation with the kernel `fold_filter`
  makes (equal up to float rounding)."""
  f = np.asarray(f, np.float64)
  correlation_filter = f if flip_filter else f[::-1, ::-1]  # upfirdn2d convolves
  x0, x1, y0, y1 = pad
  return conv2d(x, fold_filter(w, correlation_filter), stride=down, padding=((y0, y1), (x0, x1)))
