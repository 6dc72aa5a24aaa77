"""3x3 stride-1 convolutions and their weight gradients by Winograd's F(2x2, 3x3) algorithm.

A 2x2 block of a 3x3 correlation's output needs 36 multiply-adds per channel pair directly;
F(2, 3) along each axis gets the block from a 4x4 input tile `d` with 16:
`Y = A^T [(G g G^T) . (B^T d B)] A`
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016), with

  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
  G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],
  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

Summed over the input channels, the products `.` become 16 matrix products `[P, I] x [I, O]`
(`P` = tiles x batch): 2.25x fewer flops than the direct convolution, in the form CPUs run
fastest. The transforms are additions and halvings, so the values equal the direct
correlation's up to float32 rounding (about 1e-6 relative; tests compare them).

The weight gradient `dw[a, b] = sum_{n,h,w} x[n, a+h, b+w]^T dy[n, h, w]` is the same bilinear
form read the other way: `dw = G^T [(A dy_tile A^T) . (B^T d B)] G`, summed over tiles and the
batch, again 16 matrix products `[I, P] x [P, O]`.

These are the primal computations of `conv2d.py`'s custom-VJP convolutions on CPU (see
`conv2d.winograd_applies`); their derivatives are `conv2d.py`'s, so every order of derivative
goes through them too.
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

Padding2d = tuple[tuple[int, int], tuple[int, int]]

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]],
              np.float32)  # [4, 3]


def _split(x: jnp.ndarray, axis: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Even and odd entries along `axis`."""
  n = x.shape[axis]
  return lax.slice_in_dim(x, 0, n, 2, axis), lax.slice_in_dim(x, 1, n, 2, axis)


def _input_transform(x: jnp.ndarray, axis: int) -> list[jnp.ndarray]:
  """`B^T d` for the windows `d = x[2t : 2t + 4]` along `axis` (length `2T + 2`): four arrays
  with `T` entries there."""
  even, odd = _split(x, axis)  # T + 1 each
  count = even.shape[axis] - 1
  e0, e1 = (lax.slice_in_dim(even, s, s + count, axis=axis) for s in (0, 1))
  o0, o1 = (lax.slice_in_dim(odd, s, s + count, axis=axis) for s in (0, 1))
  return [e0 - e1, o0 + e1, e1 - o0, o0 - o1]


def _tiles(x: jnp.ndarray) -> list[jnp.ndarray]:
  """`B^T d B` of every 4x4 tile at stride 2: `[N, 2Th + 2, 2Tw + 2, C]` -> 16 arrays
  `[N Th Tw, C]`, one per entry of the 4x4 transformed tile (kept apart: XLA:CPU writes 16
  separate outputs of one fusion 4x faster than their stack)."""
  rows = _input_transform(x, 1)
  return [t.reshape(-1, x.shape[-1]) for row in rows for t in _input_transform(row, 2)]


def _output_transform(m: list[jnp.ndarray]) -> jnp.ndarray:
  """`A^T M A` of the 16 entries (row-major 4x4) -> the 2x2 output tiles: `[2, 2, ...]`."""
  rows = [m[4 * i:4 * i + 4] for i in range(4)]
  along_rows = [[r0 + r1 + r2 for r0, r1, r2 in zip(*rows[:3])],
                [r1 - r2 - r3 for r1, r2, r3 in zip(*rows[1:])]]  # A^T M: 2 x 4
  return jnp.stack([jnp.stack([c[0] + c[1] + c[2], c[1] - c[2] - c[3]])
                    for c in along_rows])  # (A^T M) A: 2 x 2


def _grad_transform(dy: jnp.ndarray, axis: int) -> list[jnp.ndarray]:
  """`A dy` for the pairs `dy[2t : 2t + 2]` along `axis` (length `2T`): four arrays of `T`."""
  d0, d1 = _split(dy, axis)
  return [d0, d0 + d1, d0 - d1, -d1]


def correlate3x3(x: jnp.ndarray, w: jnp.ndarray, padding: Padding2d) -> jnp.ndarray:
  """`lax.conv_general_dilated(x, w, (1, 1), padding)` for NHWC x HWIO with a 3x3 kernel and
  non-negative zero padding `((top, bottom), (left, right))`: `[N, H, W, I] -> [N, Ho, Wo, O]`,
  `Ho = H + top + bottom - 2`."""
  (t, b), (l, r) = padding
  n, h, wd, _ = x.shape
  ho, wo = h + t + b - 2, wd + l + r - 2
  th, tw = -(-ho // 2), -(-wo // 2)  # 2x2 output tiles; an odd size gets a zero row/column more
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (t, b + 2 * th - ho, 0), (l, r + 2 * tw - wo, 0), (0, 0, 0)))
  u = _tiles(x)  # 16 x [P, I]
  g = jnp.asarray(_G, w.dtype)
  v = jnp.einsum('xa,yb,abio->xyio', g, g, w, precision=lax.Precision.HIGHEST)
  v = v.reshape((16,) + w.shape[2:])  # [16, I, O]
  # 16 x [N, Th, Tw, O]
  m = [jnp.dot(u_k, v[k]).reshape(n, th, tw, -1) for k, u_k in enumerate(u)]
  y = _output_transform(m)  # [2, 2, N, Th, Tw, O]
  y = jnp.transpose(y, (2, 3, 0, 4, 1, 5)).reshape(n, 2 * th, 2 * tw, w.shape[3])
  return y[:, :ho, :wo]


def weight_gradient3x3(x: jnp.ndarray, dy: jnp.ndarray, padding: Padding2d) -> jnp.ndarray:
  """`d sum(dy * correlate3x3(x, w, padding)) / dw`: `[N, H, W, I], [N, Ho, Wo, O] ->
  [3, 3, I, O]`."""
  (t, _), (l, _) = padding
  n, ho, wo, _ = dy.shape
  th, tw = -(-ho // 2), -(-wo // 2)
  dy = jnp.pad(dy, ((0, 0), (0, 2 * th - ho), (0, 2 * tw - wo), (0, 0)))  # zero gradient
  # The padded input, exactly the rows and columns the tiles read (a negative pad crops).
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (t, 2 * th + 2 - x.shape[1] - t, 0),
               (l, 2 * tw + 2 - x.shape[2] - l, 0), (0, 0, 0)))
  u = _tiles(x)  # 16 x [P, I]
  d = [c.reshape(-1, dy.shape[-1])
       for row in _grad_transform(dy, 1) for c in _grad_transform(row, 2)]  # 16 x [P, O]
  m = jnp.stack([jnp.dot(u_k.T, d_k) for u_k, d_k in zip(u, d)])  # [16, I, O]
  g = jnp.asarray(_G, m.dtype)
  return jnp.einsum('xa,yb,xyio->abio', g, g, m.reshape((4, 4) + m.shape[1:]),
                    precision=lax.Precision.HIGHEST)
