"""Homogeneous 2-D (3x3) and 3-D (4x4) transform matrices for one sample (REFERENCE.md §7).

Arguments are scalars (Python numbers or 0-d arrays); batch with `jax.vmap`. Products use
`matmul`, which multiplies in full float32 (XLA's default matmul precision on GPU/TPU may
round the operands to tf32/bf16).
"""

import jax.numpy as jnp
import numpy as np
from jax import lax

# Luma axis of the colour transforms: grey (1, 1, 1), homogeneous coordinate 0 (REFERENCE.md §7.4).
LUMA_AXIS = np.asarray([1, 1, 1, 0], np.float32) / np.sqrt(3).astype(np.float32)


def matmul(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """`a @ b` at full float32 precision."""
  return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _matrix(*rows) -> jnp.ndarray:
  return jnp.stack([jnp.stack([jnp.asarray(x, jnp.float32) for x in row]) for row in rows])


def translate2d(tx, ty) -> jnp.ndarray:
  """`T(tx, ty)`: `[3, 3]`, maps `(x, y)` to `(x + tx, y + ty)`."""
  return _matrix([1, 0, tx], [0, 1, ty], [0, 0, 1])


def scale2d(sx, sy) -> jnp.ndarray:
  """`S(sx, sy)`: `[3, 3]`."""
  return _matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1])


def rotate2d(theta) -> jnp.ndarray:
  """`R(theta) = [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]` (x right, y down)."""
  c, s = jnp.cos(theta), jnp.sin(theta)
  return _matrix([c, -s, 0], [s, c, 0], [0, 0, 1])


def translate3d(tx, ty, tz) -> jnp.ndarray:
  """`T3(tx, ty, tz)`: `[4, 4]`, adds the offsets to R, G, B."""
  return _matrix([1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1])


def scale3d(sx, sy, sz) -> jnp.ndarray:
  """`S3(sx, sy, sz)`: `[4, 4]`."""
  return _matrix([sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1])


def rotate3d(v: np.ndarray, theta) -> jnp.ndarray:
  """`R3(v, theta)`: `[4, 4]`, rotation by `theta` about the unit axis `v[:3]` (Rodrigues).

  `R = cos(theta) I + sin(theta) [v]_x + (1 - cos(theta)) v v^T` on the first three coordinates.
  """
  vx, vy, vz = (float(x) for x in v[:3])
  s, c = jnp.sin(theta), jnp.cos(theta)
  cc = 1 - c
  return _matrix(
      [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
      [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
      [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
      [0, 0, 0, 1])
