"""Per-sample ADA parameter draws and the matrices built from them (REFERENCE.md §7.1-§7.4).

Draws are written for one sample and `jax.vmap`-ed over one key per sample. Every transform draws
its parameter and a gate `u ~ U(0, 1)`; where `u >= probability` the parameter takes its
identity value (0 for flags, angles and offsets, 1 for scales). A transform whose multiplier is
0 draws nothing and keeps the identity value (a static decision: the spec is static, `p` is
traced).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.augment import matrices
from sg2jax.augment.spec import AugmentSpec


class GeometricParams(NamedTuple):
  """Gated geometric parameters of a batch, in the official units (REFERENCE.md §7.2 table).

  Attributes:
    xflip: `[B]`, 1 = mirror x, else 0.
    rotate90: `[B]`, number `i` of quarter turns in {0, 1, 2, 3}.
    xint: `[B, 2]`, integer translation `(tx, ty)` relative to `(W, H)`, in
      `[-xint_max, xint_max]`; rounded to whole pixels when the matrix is built.
    scale: `[B]`, isotropic scale `s` (> 1 enlarges).
    rotate_pre: `[B]`, angle of the rotation before the anisotropic scaling (radians).
    aniso: `[B]`, anisotropic scale: x by `s`, y by `1 / s`.
    rotate_post: `[B]`, angle of the rotation after the anisotropic scaling (radians).
    xfrac: `[B, 2]`, fractional translation `(tx, ty)` relative to `(W, H)`.
  """
  xflip: jnp.ndarray
  rotate90: jnp.ndarray
  xint: jnp.ndarray
  scale: jnp.ndarray
  rotate_pre: jnp.ndarray
  aniso: jnp.ndarray
  rotate_post: jnp.ndarray
  xfrac: jnp.ndarray


class ColorParams(NamedTuple):
  """Gated colour parameters of a batch (REFERENCE.md §7.4 table); all `[B]`.

  Attributes:
    brightness: offset `b` added to R, G, B.
    contrast: scale `c` of R, G, B.
    lumaflip: 1 = reflect the colour through the plane orthogonal to the luma axis, else 0.
    hue: rotation angle about the luma axis (radians).
    saturation: scale `s` of the chroma (the part orthogonal to the luma axis).
  """
  brightness: jnp.ndarray
  contrast: jnp.ndarray
  lumaflip: jnp.ndarray
  hue: jnp.ndarray
  saturation: jnp.ndarray


def rotation_probability(p: jnp.ndarray, rotate: float) -> jnp.ndarray:
  """`p_rot = 1 - sqrt(clip(1 - rotate * p, 0, 1))`: `P(pre or post rotation) = rotate * p`."""
  return 1 - jnp.sqrt(jnp.clip(1 - rotate * p, 0, 1))


def _gated(key: jax.Array, probability: jnp.ndarray, value: jnp.ndarray,
           identity: float) -> jnp.ndarray:
  """`value` with probability `probability`, else `identity` (one gate per sample)."""
  fire = jax.random.uniform(key, ()) < probability
  return jnp.where(fire, value, jnp.asarray(identity, jnp.float32))


def _sample_geometric_one(key: jax.Array, p: jnp.ndarray, spec: AugmentSpec) -> GeometricParams:
  """Draws one sample's geometric parameters (REFERENCE.md §7.2 table, rows 1-8)."""
  keys = iter(jax.random.split(key, 16))
  zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
  zero2 = jnp.zeros((2,), jnp.float32)
  xflip = rotate90 = rotate_pre = rotate_post = zero
  scale = aniso = one
  xint = xfrac = zero2
  # Keys are taken in a fixed order whatever the spec, so one transform's draws do not depend
  # on which others are enabled.
  k_xflip, k_xflip_gate = next(keys), next(keys)
  k_rot90, k_rot90_gate = next(keys), next(keys)
  k_xint, k_xint_gate = next(keys), next(keys)
  k_scale, k_scale_gate = next(keys), next(keys)
  k_pre, k_pre_gate = next(keys), next(keys)
  k_aniso, k_aniso_gate = next(keys), next(keys)
  k_post, k_post_gate = next(keys), next(keys)
  k_xfrac, k_xfrac_gate = next(keys), next(keys)
  if spec.xflip > 0:
    i = jax.random.randint(k_xflip, (), 0, 2).astype(jnp.float32)
    xflip = _gated(k_xflip_gate, spec.xflip * p, i, 0.0)
  if spec.rotate90 > 0:
    i = jax.random.randint(k_rot90, (), 0, 4).astype(jnp.float32)
    rotate90 = _gated(k_rot90_gate, spec.rotate90 * p, i, 0.0)
  if spec.xint > 0:
    t = jax.random.uniform(k_xint, (2,), minval=-1.0, maxval=1.0) * spec.xint_max
    xint = _gated(k_xint_gate, spec.xint * p, t, 0.0)
  if spec.scale > 0:
    s = jnp.exp2(jax.random.normal(k_scale, ()) * spec.scale_std)
    scale = _gated(k_scale_gate, spec.scale * p, s, 1.0)
  if spec.rotate > 0:
    p_rot = rotation_probability(p, spec.rotate)
    theta = jax.random.uniform(k_pre, (), minval=-1.0, maxval=1.0) * np.pi * spec.rotate_max
    rotate_pre = _gated(k_pre_gate, p_rot, theta, 0.0)
    theta = jax.random.uniform(k_post, (), minval=-1.0, maxval=1.0) * np.pi * spec.rotate_max
    rotate_post = _gated(k_post_gate, p_rot, theta, 0.0)
  if spec.aniso > 0:
    s = jnp.exp2(jax.random.normal(k_aniso, ()) * spec.aniso_std)
    aniso = _gated(k_aniso_gate, spec.aniso * p, s, 1.0)
  if spec.xfrac > 0:
    t = jax.random.normal(k_xfrac, (2,)) * spec.xfrac_std
    xfrac = _gated(k_xfrac_gate, spec.xfrac * p, t, 0.0)
  return GeometricParams(xflip, rotate90, xint, scale, rotate_pre, aniso, rotate_post, xfrac)


def sample_geometric(key: jax.Array, batch_size: int, p: jnp.ndarray,
                     spec: AugmentSpec) -> GeometricParams:
  """Draws the gated geometric parameters of every sample, independently per sample.

  Laws (REFERENCE.md §7.2; `m_*` the spec's multipliers, `U` uniform, `N` normal):
  1. xflip `i ~ U{0, 1}`, gate `m_xflip * p`.
  2. rotate90 `i ~ U{0, 1, 2, 3}`, gate `m_rotate90 * p`.
  3. xint `t ~ U(-xint_max, xint_max)^2`, one gate `m_xint * p` for both axes.
  4. scale `s = 2^(N(0, 1) * scale_std)`, gate `m_scale * p`.
  5. and 7. pre- and post-rotation, independent `theta ~ U(-pi, pi) * rotate_max`, each gated
     with `p_rot = 1 - sqrt(clip(1 - m_rotate * p, 0, 1))`.
  6. aniso `s = 2^(N(0, 1) * aniso_std)`, gate `m_aniso * p`.
  8. xfrac `t ~ N(0, xfrac_std^2)^2`, one gate `m_xfrac * p` for both axes.

  Args:
    key: a `jax.random` key, split into one key per sample.
    batch_size: `B`.
    p: overall probability, a (traced) float32 scalar; values above 1 act as 1 in every gate.
    spec: multipliers and constants (static).

  Returns:
    `GeometricParams` with leading dimension `B`.
  """
  keys = jax.random.split(key, batch_size)
  return jax.vmap(_sample_geometric_one, in_axes=(0, None, None))(
      keys, jnp.asarray(p, jnp.float32), spec)


def _sample_color_one(key: jax.Array, p: jnp.ndarray, spec: AugmentSpec) -> ColorParams:
  """Draws one sample's colour parameters (REFERENCE.md §7.4 table)."""
  (k_bright, k_bright_gate, k_contrast, k_contrast_gate, k_luma, k_luma_gate, k_hue, k_hue_gate,
   k_sat, k_sat_gate) = jax.random.split(key, 10)
  zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
  brightness = lumaflip = hue = zero
  contrast = saturation = one
  if spec.brightness > 0:
    b = jax.random.normal(k_bright, ()) * spec.brightness_std
    brightness = _gated(k_bright_gate, spec.brightness * p, b, 0.0)
  if spec.contrast > 0:
    c = jnp.exp2(jax.random.normal(k_contrast, ()) * spec.contrast_std)
    contrast = _gated(k_contrast_gate, spec.contrast * p, c, 1.0)
  if spec.lumaflip > 0:
    i = jax.random.randint(k_luma, (), 0, 2).astype(jnp.float32)
    lumaflip = _gated(k_luma_gate, spec.lumaflip * p, i, 0.0)
  if spec.hue > 0:
    theta = jax.random.uniform(k_hue, (), minval=-1.0, maxval=1.0) * np.pi * spec.hue_max
    hue = _gated(k_hue_gate, spec.hue * p, theta, 0.0)
  if spec.saturation > 0:
    s = jnp.exp2(jax.random.normal(k_sat, ()) * spec.saturation_std)
    saturation = _gated(k_sat_gate, spec.saturation * p, s, 1.0)
  return ColorParams(brightness, contrast, lumaflip, hue, saturation)


def sample_color(key: jax.Array, batch_size: int, p: jnp.ndarray,
                 spec: AugmentSpec) -> ColorParams:
  """Draws the gated colour parameters of every sample, independently per sample.

  Laws (REFERENCE.md §7.4), each with its own gate `m_* * p`:
  1. brightness `b ~ N(0, brightness_std^2)`.
  2. contrast `c = 2^(N(0, 1) * contrast_std)`.
  3. lumaflip `i ~ U{0, 1}`.
  4. hue `theta ~ U(-pi, pi) * hue_max`.
  5. saturation `s = 2^(N(0, 1) * saturation_std)`.
  Hue and saturation are drawn for any image; `color_matrix` ignores them for 1 channel.

  Args:
    key: a `jax.random` key, split into one key per sample.
    batch_size: `B`.
    p: overall probability, a (traced) float32 scalar.
    spec: multipliers and constants (static).

  Returns:
    `ColorParams` with leading dimension `B`.
  """
  keys = jax.random.split(key, batch_size)
  return jax.vmap(_sample_color_one, in_axes=(0, None, None))(
      keys, jnp.asarray(p, jnp.float32), spec)


def _geometric_matrix_one(g: GeometricParams, height: int, width: int) -> jnp.ndarray:
  """One sample's `G_inv` `[3, 3]`; see `geometric_matrix`."""
  mm = matrices.matmul
  g_inv = jnp.eye(3, dtype=jnp.float32)
  g_inv = mm(g_inv, matrices.scale2d(1 - 2 * g.xflip, 1))
  g_inv = mm(g_inv, matrices.rotate2d(np.pi / 2 * g.rotate90))
  g_inv = mm(g_inv, matrices.translate2d(-jnp.round(g.xint[0] * width),
                                         -jnp.round(g.xint[1] * height)))
  g_inv = mm(g_inv, matrices.scale2d(1 / g.scale, 1 / g.scale))
  g_inv = mm(g_inv, matrices.rotate2d(g.rotate_pre))
  g_inv = mm(g_inv, matrices.scale2d(1 / g.aniso, g.aniso))
  g_inv = mm(g_inv, matrices.rotate2d(g.rotate_post))
  return mm(g_inv, matrices.translate2d(-g.xfrac[0] * width, -g.xfrac[1] * height))


def geometric_matrix(params: GeometricParams, height: int, width: int) -> jnp.ndarray:
  """The per-sample inverse geometric transform `G_inv` (output pixel -> input pixel).

  Coordinates are centred pixel coordinates (origin at the image centre, x right, y down).
  Starting from `I_3`, each transform right-multiplies its inverse, in the official order
  (REFERENCE.md §7.2; ADA `augment.py:192-263`):
  1. `S(1 - 2 i, 1)` (x-flip, its own inverse).
  2. `R(pi/2 * i)` (undoes a turn by `-90 * i` degrees).
  3. `T(-round(tx W), -round(ty H))` (round half to even).
  4. `S(1/s, 1/s)`.
  5. `R(theta_pre)`.
  6. `S(1/s, s)` (anisotropic).
  7. `R(theta_post)`.
  8. `T(-tx W, -ty H)`.

  Args:
    params: gated parameters, leading dimension `B`.
    height: image height `H` in pixels.
    width: image width `W` in pixels.

  Returns:
    `[B, 3, 3]` float32.
  """
  return jax.vmap(_geometric_matrix_one, in_axes=(0, None, None))(params, height, width)


def _color_matrix_one(c: ColorParams, num_channels: int) -> jnp.ndarray:
  """One sample's `C` `[4, 4]`; see `color_matrix`."""
  mm = matrices.matmul
  v = matrices.LUMA_AXIS
  vv = jnp.asarray(np.outer(v, v))
  eye = jnp.eye(4, dtype=jnp.float32)
  color = eye
  color = mm(matrices.translate3d(c.brightness, c.brightness, c.brightness), color)
  color = mm(matrices.scale3d(c.contrast, c.contrast, c.contrast), color)
  color = mm(eye - 2 * vv * c.lumaflip, color)
  if num_channels > 1:
    color = mm(matrices.rotate3d(v, c.hue), color)
    color = mm(vv + (eye - vv) * c.saturation, color)
  return color


def color_matrix(params: ColorParams, num_channels: int = 3) -> jnp.ndarray:
  """The per-sample colour matrix `C` (homogeneous RGB in -> RGB out).

  Starting from `I_4`, each transform left-multiplies, in the official order
  (REFERENCE.md §7.4; ADA `augment.py:307-350`), with `v = (1, 1, 1, 0) / sqrt(3)`:
  1. `T3(b, b, b)` (brightness).
  2. `S3(c, c, c)` (contrast).
  3. `I_4 - 2 v v^T i` (luma flip, a Householder reflection).
  4. `R3(v, theta)` (hue), RGB only.
  5. `v v^T + (I_4 - v v^T) s` (saturation), RGB only.

  Args:
    params: gated parameters, leading dimension `B`.
    num_channels: image channels (static); hue and saturation apply only when > 1.

  Returns:
    `[B, 4, 4]` float32.
  """
  return jax.vmap(_color_matrix_one, in_axes=(0, None))(params, num_channels)
