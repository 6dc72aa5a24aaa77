"""2-D convolutions whose derivatives, of every order, are ordinary convolutions.

Every convolution in sg2jax is a cross-correlation of NHWC images with HWIO kernels (TF
semantics). `conv2d` (zero padding, stride 1 or more) has a hand-written VJP, and
`transposed_conv2d` (zeros between the input pixels) is computed polyphase from `conv2d`s:

- data gradient: `dy` with zeros between its pixels, correlated with the spatially flipped
  kernel with its in/out axes swapped (for stride 1 one `conv2d`; for stride `s` the polyphase
  `transposed_conv2d`, `s^2` stride-1 `conv2d`s), cropped by the padding;
- weight gradient: `dw[a, b] = x[:, a::s, b::s]^T dy` contracting batch and pixels, computed
  as one convolution with the batch as its feature axis (`_weight_gradient`), whose own VJP is
  again a data gradient and a `conv2d`.

So R1 and the path-length penalty, gradients of gradients, stay within these three
computations. XLA's own derivatives of a convolution are convolutions in other dimension
layouts, and their derivatives once more (`dim_labels=01fb_o01i->f01b` with reversed kernels,
lhs dilation), which XLA:CPU runs in generic loops up to 75x slower than the same arithmetic
here. Values equal XLA's derivatives up to float rounding (tests compare first and second
derivatives with `lax.conv_general_dilated`'s own).

On CPU, the large 3x3 stride-1 correlations and their weight gradients (`winograd_applies`) are
computed by Winograd's F(2x2, 3x3) (`winograd.py`): 2.25x fewer flops, as matrix products.

All of the above is the CPU path. In a program compiled for a GPU or a TPU, `conv2d` and
`transposed_conv2d` are XLA's own convolution (`xla_conv2d`, `xla_transposed_conv2d`: a stride, or
zeros between the input pixels as `lhs_dilation`) differentiated by JAX: cuDNN and the TPU run
those derivatives natively, and the polyphase form, whose phases are padded to a common size and
interleaved, holds several copies of the output in memory at once (measured with the TPU
compiler, docs/TPU.md). The platform is the one the program is lowered for
(`lax.platform_dependent`), not the host's: `sg2jax.aot` compiles TPU programs on a CPU host.
In TPU programs a convolution of feature maps with fewer channels than the TPU's 128 lanes runs
in a space-to-depth layout (`space_to_depth.py`): the same values, in far less memory.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from sg2jax.ops import winograd
from sg2jax.ops.space_to_depth import space_to_depth_conv2d
from sg2jax.ops.winograd import Padding2d

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')

# Where Winograd beats XLA:CPU's direct convolution (benchmarks/winograd_benchmark.py; its
# results in benchmarks/results/): at least this many input and output channels, and this many
# output pixels per device (N Ho Wo: the rows of its matrix products); float32 only (in bfloat16
# the transforms would add rounding of their own). Below, the transforms and the smaller
# products cost more than the flops they save.
WINOGRAD_MIN_CHANNELS = 256
WINOGRAD_MIN_PIXELS = 8 * 32 * 32


def conv2d(x: jnp.ndarray, w: jnp.ndarray, stride: int = 1,
           padding: Padding2d = ((0, 0), (0, 0))) -> jnp.ndarray:
  """Cross-correlation `[N, H, W, I] x [kh, kw, I, O] -> [N, H', W', O]` with zero padding
  `((top, bottom), (left, right))` (negative values crop) and a stride;
  `H' = (H + top + bottom - kh) // stride + 1`."""
  x, padding = _crop(x, padding)
  stride = int(stride)
  return lax.platform_dependent(
      x, w, cpu=lambda x, w: _correlate(x, w, stride, padding),
      tpu=lambda x, w: space_to_depth_conv2d(x, w, stride, padding),
      default=lambda x, w: xla_conv2d(x, w, stride, padding))


def _crop(x: jnp.ndarray, padding: Padding2d) -> tuple[jnp.ndarray, Padding2d]:
  """`x` cropped by the negative entries of `padding`; the padding that is left to add."""
  padding = tuple((int(a), int(b)) for a, b in padding)
  if any(p < 0 for pair in padding for p in pair):
    (t, b), (l, r) = padding
    x = lax.pad(x, jnp.zeros((), x.dtype),
                ((0, 0, 0), (min(t, 0), min(b, 0), 0), (min(l, 0), min(r, 0), 0), (0, 0, 0)))
    padding = ((max(t, 0), max(b, 0)), (max(l, 0), max(r, 0)))
  return x, padding


def _conv2d_cpu(x: jnp.ndarray, w: jnp.ndarray, stride: int = 1,
                padding: Padding2d = ((0, 0), (0, 0))) -> jnp.ndarray:
  """`conv2d` on the CPU path (inside it, no platform to choose again)."""
  x, padding = _crop(x, padding)
  return _correlate(x, w, int(stride), padding)


def xla_conv2d(x: jnp.ndarray, w: jnp.ndarray, stride: int, padding: Padding2d) -> jnp.ndarray:
  """`conv2d` (non-negative padding) as XLA's own convolution."""
  return lax.conv_general_dilated(x, w, window_strides=(stride, stride), padding=padding,
                                  dimension_numbers=_DIMENSION_NUMBERS)


def xla_transposed_conv2d(x: jnp.ndarray, w: jnp.ndarray, up: int) -> jnp.ndarray:
  """`transposed_conv2d` as XLA's own convolution: `up - 1` zeros between the input pixels
  (`lhs_dilation`), padding `k - 1`."""
  kh, kw = w.shape[0], w.shape[1]
  return lax.conv_general_dilated(x, w, window_strides=(1, 1),
                                  padding=((kh - 1, kh - 1), (kw - 1, kw - 1)),
                                  lhs_dilation=(up, up), dimension_numbers=_DIMENSION_NUMBERS)


def winograd_applies(kernel_shape, stride: int, output_shape, dtype=jnp.float32,
                     devices: int = 1) -> bool:
  """Whether a correlation with this `[kh, kw, I, O]` kernel, stride and `[N, Ho, Wo, O]`
  output (or its weight gradient) is computed by `winograd.py` when the program runs on a CPU:
  3x3, stride 1, `I` and `O` at least `WINOGRAD_MIN_CHANNELS`, float32, and at least
  `WINOGRAD_MIN_PIXELS` output pixels `N Ho Wo / devices` on each of the `devices` the batch is
  split over. On other platforms XLA's own convolution always runs."""
  kh, kw, i, o = kernel_shape
  pixels = output_shape[0] * output_shape[1] * output_shape[2] // max(devices, 1)
  return ((kh, kw) == (3, 3) and stride == 1 and min(i, o) >= WINOGRAD_MIN_CHANNELS
          and pixels >= WINOGRAD_MIN_PIXELS and jnp.dtype(dtype) == jnp.float32)


def batch_devices() -> int:
  """How many devices split the batch of the program being traced: the devices of the mesh it is
  traced under (`jax.set_mesh`; sg2jax's training phases are), 1 without one. A mesh splits
  only the batch in sg2jax (one 'data' axis)."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else mesh.size


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _correlate(x: jnp.ndarray, w: jnp.ndarray, stride: int, padding: Padding2d) -> jnp.ndarray:
  (t, b), (l, r) = padding
  output_shape = (x.shape[0], (x.shape[1] + t + b - w.shape[0]) // stride + 1,
                  (x.shape[2] + l + r - w.shape[1]) // stride + 1, w.shape[3])
  if winograd_applies(w.shape, stride, output_shape, jnp.result_type(x, w), batch_devices()):
    return winograd.correlate3x3(x, w, padding)
  return xla_conv2d(x, w, stride, padding)


def _correlate_fwd(x, w, stride, padding):
  return _correlate(x, w, stride, padding), (x, w)


def _correlate_bwd(stride, padding, residuals, dy):
  x, w = residuals
  return (_data_gradient(dy, w, stride, padding, x.shape),
          _weight_gradient(x, dy, stride, padding, (w.shape[0], w.shape[1])))


_correlate.defvjp(_correlate_fwd, _correlate_bwd)


def _data_gradient(dy: jnp.ndarray, w: jnp.ndarray, stride: int, padding: Padding2d,
                   x_shape) -> jnp.ndarray:
  """`d sum(dy * conv2d(x, w)) / dx`, `[N, H, W, I]`."""
  kh, kw = w.shape[0], w.shape[1]
  (t, b), (l, r) = padding
  w_t = jnp.swapaxes(w[::-1, ::-1], 2, 3)  # [kh, kw, O, I]
  h, wd = x_shape[1], x_shape[2]
  if stride == 1:
    # Padded by kh - 1 - t, its correlation with w_t has exactly H rows.
    return _conv2d_cpu(dy, w_t, padding=((kh - 1 - t, h - dy.shape[1] + t),
                                         (kw - 1 - l, wd - dy.shape[2] + l)))
  # The padded input's gradient: [N, (Ho-1)s+kh, (Wo-1)s+kw, I].
  dx = _polyphase_transposed_conv2d(dy, w_t, stride)
  # Crop the padding; rows and columns that no output reached get zeros.
  return lax.pad(dx, jnp.zeros((), dx.dtype),
                 ((0, 0, 0), (-t, h + t - dx.shape[1], 0), (-l, wd + l - dx.shape[2], 0),
                  (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _weight_gradient(x: jnp.ndarray, dy: jnp.ndarray, stride: int, padding: Padding2d,
                     kernel_size: tuple[int, int]) -> jnp.ndarray:
  """`d sum(dy * conv2d(x, w)) / dw`, per tap `(a, b)` the product
  `sum_{n, h, w} x_padded[n, a + s h, b + s w, :]^T dy[n, h, w, :]` -> `[kh, kw, I, O]`.

  One convolution over the image with the batch as the contracted feature axis: x as
  `[batch = I, H, W, feature = N]`, dy as a kernel `[Ho, Wo, in = N, out = O]` dilated by the
  stride (the form XLA itself uses for weight gradients; XLA:CPU's Eigen path runs it at GEMM
  speed). The hand-written VJP keeps its derivatives in standard layouts.
  """
  kh, kw = kernel_size
  (t, _), (l, _) = padding
  # High padding that leaves exactly kh x kw outputs (rows past the last window are unused).
  b = (dy.shape[1] - 1) * stride + kh - x.shape[1] - t
  r = (dy.shape[2] - 1) * stride + kw - x.shape[2] - l

  def direct(x, dy):
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (t, b, 0), (l, r, 0), (0, 0, 0)))
    return lax.conv_general_dilated(x, dy, window_strides=(1, 1), padding='VALID',
                                    rhs_dilation=(stride, stride),
                                    dimension_numbers=('CHWN', 'IHWO', 'HWNC'))

  if winograd_applies((kh, kw, x.shape[-1], dy.shape[-1]), stride, dy.shape,
                      jnp.result_type(x, dy), batch_devices()):
    return winograd.weight_gradient3x3(x, dy, padding)
  return direct(x, dy)


def _weight_gradient_fwd(x, dy, stride, padding, kernel_size):
  return _weight_gradient(x, dy, stride, padding, kernel_size), (x, dy)


def _weight_gradient_bwd(stride, padding, kernel_size, residuals, g):
  del kernel_size
  x, dy = residuals
  # <g, dw> is linear in x and in dy: d/dx back-projects dy through g; d/d(dy) correlates x with g.
  return (_data_gradient(dy, g, stride, padding, x.shape),
          _correlate(x, g, stride, padding))


_weight_gradient.defvjp(_weight_gradient_fwd, _weight_gradient_bwd)


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
  """Correlation of the zero-stuffed input with `w`: `[N, H, W, I] -> [N, (H-1)up+kh, (W-1)up+kw, O]`
  (zeros *between* pixels, pad `k - 1`): on CPU `_polyphase_transposed_conv2d`, elsewhere
  `xla_transposed_conv2d`."""
  return lax.platform_dependent(x, w, cpu=lambda x, w: _polyphase_transposed_conv2d(x, w, up),
                                default=lambda x, w: xla_transposed_conv2d(x, w, up))


def _polyphase_transposed_conv2d(x: jnp.ndarray, w: jnp.ndarray, up: int) -> jnp.ndarray:
  """`transposed_conv2d` computed polyphase: output pixel `(up*j + p, up*l + q)` only meets the taps
  `w[a0_p::up, a0_q::up]`, so each of the `up^2` phases is a small ordinary convolution of `x`,
  and the phases are interleaved. No multiplications by inserted zeros, and the derivatives are
  `conv2d`'s.
  """
  n, h, wd, _ = x.shape
  kh, kw, _, cout = w.shape
  if up == 1:
    return _conv2d_cpu(x, w, padding=((kh - 1, kh - 1), (kw - 1, kw - 1)))
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
        y = _conv2d_cpu(x, w[a0::up, b0::up],
                        padding=((before_h, after_h), (before_w, after_w)))
      # Pad every phase to the longest so they interleave: [N, n_rows, n_cols, O].
      row.append(jnp.pad(y, ((0, 0), (0, n_rows - count_h), (0, n_cols - count_w), (0, 0))))
    phases.append(jnp.stack(row, axis=3))  # [N, n_rows, n_cols, up(q), O]
  y = jnp.stack(phases, axis=2)  # [N, n_rows, up(p), n_cols, up(q), O]
  y = y.reshape(n, n_rows * up, n_cols * up, cout)
  return y[:, :(h - 1) * up + kh, :(wd - 1) * up + kw]
