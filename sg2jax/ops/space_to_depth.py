"""Convolutions of narrow feature maps in a space-to-depth layout, for TPU programs.

A TPU keeps the last dimension of an array in 128 lanes. Feature maps with fewer channels, as
config F's 32 at 1024x1024 and 64 at 512x512, leave lanes empty, and the TPU compiler's
convolutions and their derivatives lay such maps out with the channels in the lanes: in
D at 1024 several copies of each map at 4x their size (docs/TPU.md). Reshaping
`[N, H, W, C]` to `[N, H, W / s, s C]` (free: W and C are adjacent in memory) gives the
convolution `s C` channels to fill the lanes with; the kernel becomes one over cells of `s`
pixels whose entries are the original taps placed by a fixed 0/1 tensor, so the result, and
JAX's derivatives of every order, are those of the original convolution (the extra
multiplications are by zeros). XLA counts the zeros' arithmetic in its flops.

A strided convolution also takes its rows in phases: rows `s i + p` for `p < s` become `s`
groups of channels of one row of cells, so that no convolution in cells has a stride (nor, in
its derivatives, zeros between pixels). With the rows strided, the TPU
compiler for v4 and v5p chips aborted on R1's second-order gradient (a failed check in its
fusion emitter), and on v5e the phases need less memory (docs/TPU.md).
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

from sg2jax.ops.winograd import Padding2d

LANES = 128
IMAGE_CHANNELS = 4  # RGB(A): a 1x1 kernel with this few input channels takes cells
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def _power_of_two_at_most(value: int) -> int:
  return 1 << (max(int(value), 1).bit_length() - 1)


def lane_factors(x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], stride: int,
                 padding: Padding2d) -> tuple[int, int] | None:
  """For a correlation of `[N, H, W, I]` with a `[kh, kw, I, O]` kernel (stride, non-negative
  padding): `(s_in, s_out)`, pixels per cell of the input and of the output (`s_in = stride *
  s_out`), the most that keep `s_out * O` and `s_in * I / stride` within the lanes. A 1x1
  stride-1 kernel (a matrix product per pixel; over cells, one with `s` copies of the kernel on
  the diagonal) takes cells only when its input is an image's few channels (at most
  `IMAGE_CHANNELS`: D's fromrgb), as many as keep the input within the lanes (32 for 3
  channels). Other 1x1 kernels needed more memory with cells than without in the TPU
  compiler's programs (between feature maps: D's resnet skip; G's torgb, images out:
  docs/TPU.md). None where the convolution keeps its own layout: the input's channels fill the
  lanes already, a 1x1 stride-1 kernel whose input is not an image, or widths the cells do not
  divide (or, strided, heights the stride does not divide)."""
  width, in_channels = x_shape[2], x_shape[3]
  kh, kw, _, out_channels = kernel_shape
  (_, _), (left, right) = padding
  out_width = (width + left + right - kw) // stride + 1
  if in_channels >= LANES:
    return None
  pointwise = (kh, kw) == (1, 1) and stride == 1
  if pointwise and in_channels > IMAGE_CHANNELS:
    return None
  filled_channels = in_channels if pointwise else out_channels  # the side the cells fill
  s_out = _power_of_two_at_most(max(LANES // filled_channels, 1))
  while s_out >= 1 and (out_width % s_out or width % (s_out * stride)
                        or (not pointwise and s_out * in_channels > LANES)):
    s_out //= 2
  if s_out == 0 or s_out * stride == 1 or x_shape[1] % stride:
    return None
  return s_out * stride, s_out


def placement(taps: int, stride: int, pad_before: int, s_in: int,
              s_out: int) -> tuple[np.ndarray, int]:
  """Along one axis, where tap `d` of a correlation (stride `stride`, `pad_before` zeros before
  the input) lands in cells of `s_in` input and `s_out` output pixels: `P[cell, i, k, d] = 1`
  where output pixel `s_out j + k` reads tap `d` at input pixel `i` of cell `j + first + cell`;
  and `first` (<= 0), the first cell offset read.

  Output pixel `s_out j + k` reads input pixel `s_in j + stride k + d - pad_before`: cell
  `j + (stride k + d - pad_before) // s_in`, position `(stride k + d - pad_before) % s_in`."""
  offsets = [(stride * k + d - pad_before) for k in range(s_out) for d in range(taps)]
  first = min(o // s_in for o in offsets)
  cells = max(o // s_in for o in offsets) - first + 1
  result = np.zeros((cells, s_in, s_out, taps), np.float32)
  for k in range(s_out):
    for d in range(taps):
      offset = stride * k + d - pad_before
      result[offset // s_in - first, offset % s_in, k, d] = 1
  return result, first


def cell_kernel(w: jnp.ndarray, stride: int, left: int, s_in: int,
                s_out: int) -> tuple[jnp.ndarray, int]:
  """The `[kh, A, s_in I, s_out O]` kernel over cells of `s_in` input pixels of a row equal to
  `w` `[kh, kw, I, O]` (stride `stride`, `left` zero columns of padding), and the first cell
  offset it reads (<= 0)."""
  kh, kw, in_channels, out_channels = w.shape
  columns, first = placement(kw, stride, left, s_in, s_out)
  kernel = jnp.einsum('akld,hdco->hakclo', jnp.asarray(columns, w.dtype), w)
  return kernel.reshape(kh, columns.shape[0], s_in * in_channels, s_out * out_channels), first


def row_phase_kernel(kernel: jnp.ndarray, stride: int, top: int) -> tuple[jnp.ndarray, int]:
  """`kernel` `[kh, A, C, O]` (rows at stride `stride`, `top` zero rows of padding) as the
  `[B, A, stride C, O]` kernel of a stride-1 correlation over rows of `stride` phases, and the
  first row offset it reads (<= 0)."""
  rows, first = placement(kernel.shape[0], stride, top, stride, 1)
  kernel = jnp.einsum('bmd,dako->bamko', jnp.asarray(rows[:, :, 0], kernel.dtype), kernel)
  b, a, m, k, o = kernel.shape
  return kernel.reshape(b, a, m * k, o), first


def space_to_depth_conv2d(x: jnp.ndarray, w: jnp.ndarray, stride: int,
                          padding: Padding2d) -> jnp.ndarray:
  """XLA's convolution `[N, H, W, I] x [kh, kw, I, O]` (non-negative `padding`, a stride) in the
  space-to-depth layout where `lane_factors` finds one, else as it is."""
  n, height, width, in_channels = x.shape
  kh, kw, _, out_channels = w.shape
  (top, bottom), (left, right) = padding
  out_height = (height + top + bottom - kh) // stride + 1
  out_width = (width + left + right - kw) // stride + 1
  factors = lane_factors(x.shape, w.shape, stride, padding)
  if factors is None:
    return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                    dimension_numbers=_DIMENSION_NUMBERS)
  s_in, s_out = factors
  kernel, first = cell_kernel(w, stride, left, s_in, s_out)
  cells_in, cells_out = width // s_in, out_width // s_out
  # Whole cells of zeros around the input: every pixel the original reads outside the image is
  # a padding zero, and every cell read here holds only pixels it reads or never-read ones.
  cell_left = -first
  cell_right = cells_out - 1 + first + kernel.shape[1] - 1 - (cells_in - 1)
  x = x.reshape(n, height, cells_in, s_in * in_channels)
  if stride > 1:  # rows in phases too: [N, H / s, W / s_in, s s_in I], a stride-1 correlation
    kernel, first_row = row_phase_kernel(kernel, stride, top)
    rows_in = height // stride
    x = x.reshape(n, rows_in, stride, cells_in, s_in * in_channels).transpose(0, 1, 3, 2, 4)
    x = x.reshape(n, rows_in, cells_in, stride * s_in * in_channels)
    top, bottom = -first_row, out_height - 1 + first_row + kernel.shape[0] - 1 - (rows_in - 1)
  y = lax.conv_general_dilated(x, kernel, (1, 1), ((top, bottom), (cell_left, cell_right)),
                               dimension_numbers=_DIMENSION_NUMBERS)
  return y.reshape(n, out_height, out_width, out_channels)


def fold_filter(w: jnp.ndarray, correlation_filter: np.ndarray) -> jnp.ndarray:
  """The kernel `[fh + kh - 1, fw + kw - 1, I, O]` of correlating with the FIR filter (per
  channel) and then with `w`: `K[m] = sum_{u + v = m} f[u] w[v]`."""
  f = np.asarray(correlation_filter, np.float64)
  kh, kw = w.shape[0], w.shape[1]
  fh, fw = f.shape
  kernel = jnp.zeros((fh + kh - 1, fw + kw - 1) + w.shape[2:], w.dtype)
  for u in range(fh):
    for v in range(fw):
      if f[u, v] != 0:
        kernel = kernel.at[u:u + kh, v:v + kw].add(w * jnp.asarray(f[u, v], w.dtype))
  return kernel
