"""Winograd's F(2x2, 3x3) (`sg2jax/ops/winograd.py`) against XLA's direct convolution: values,
weight gradients, and, through `conv2d` where it applies, first and second derivatives."""

import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sg2jax.ops.conv2d import WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_PIXELS, conv2d, winograd_applies
from sg2jax.ops.winograd import correlate3x3, weight_gradient3x3

from test_conv2d import compiled_convolutions, relative_error, second_order, xla_conv2d

# (padding, input height, input width): 'same' on even and odd sizes (odd outputs get a zero
# row), 'valid', asymmetric, a padding past the kernel's reach, a 1-pixel output.
CASES = [(((1, 1), (1, 1)), 8, 8), (((1, 1), (1, 1)), 7, 5), (((0, 0), (0, 0)), 9, 6),
         (((2, 0), (0, 1)), 6, 7), (((2, 2), (2, 2)), 4, 4), (((0, 0), (0, 0)), 3, 3)]


@pytest.mark.parametrize('padding,h,w', CASES)
def test_correlation_and_weight_gradient_equal_the_direct_ones(padding, h, w):
  rng = np.random.default_rng(h * 10 + w)
  x = jnp.asarray(rng.normal(size=(2, h, w, 5)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 5, 6)), jnp.float32)
  y = jax.jit(correlate3x3, static_argnums=2)(x, k, padding)
  want = xla_conv2d(x, k, 1, padding)
  assert y.shape == want.shape
  assert relative_error(y, want) < 2e-6
  dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  dw = jax.jit(weight_gradient3x3, static_argnums=2)(x, dy, padding)
  dw_want = jax.grad(lambda k: jnp.sum(xla_conv2d(x, k, 1, padding) * dy))(k)
  assert dw.shape == dw_want.shape
  assert relative_error(dw, dw_want) < 2e-6


def test_winograd_applies_to_3x3_stride_1_with_enough_channels_and_pixels():
  c, pixels = WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_PIXELS
  side = int(np.ceil(np.sqrt(pixels / 4)))
  out = (4, side, side, c)  # the pixels of the whole batch count
  assert winograd_applies((3, 3, c, c), 1, out)
  assert winograd_applies((3, 3, c, 2 * c), 1, (1, 2 * side, 2 * side, 2 * c))
  assert not winograd_applies((3, 3, c, c), 1, (1, side, side, c))
  assert not winograd_applies((3, 3, c, c), 2, out)
  assert not winograd_applies((1, 1, c, c), 1, out)
  assert not winograd_applies((3, 3, c - 1, c), 1, out)
  assert not winograd_applies((3, 3, c, c - 1), 1, out)
  assert not winograd_applies((3, 3, c, c), 1, (pixels // 64 - 1, 8, 8, c))
  assert not winograd_applies((3, 3, c, c), 1, out, jnp.bfloat16)
  assert winograd_applies((3, 3, c, c), 1, (16, side, side, c), devices=4)
  assert not winograd_applies((3, 3, c, c), 1, out, devices=4)  # a quarter on each device


def test_the_pixels_per_device_count_when_a_mesh_splits_the_batch():
  """The same 8 x 32x32 x 256-channel convolution takes Winograd traced under a 1-device mesh
  and not under a 4-device one, whose devices each compute 2 x 32x32 (measured slower with
  Winograd): the rule counts the pixels per device of the program's mesh."""
  from sg2jax.sharding import batch_sharded, make_mesh
  x = jax.ShapeDtypeStruct((8, 32, 32, 256), jnp.float32)
  w = jax.ShapeDtypeStruct((3, 3, 256, 256), jnp.float32)
  found = {}
  for devices in (1, 4):
    mesh = make_mesh(jax.devices()[:devices])
    fn = jax.jit(lambda x, w: conv2d(x, w, 1, ((1, 1), (1, 1))),
                 in_shardings=(batch_sharded(mesh), None))
    with jax.set_mesh(mesh):
      text = fn.lower(x, w).as_text()
    found[devices] = ('stablehlo.dot_general' in text, 'stablehlo.convolution' in text)
  assert found == {1: (True, False), 4: (False, True)}


def test_winograd_only_in_programs_lowered_for_a_cpu(monkeypatch):
  """The platform is the one the program is lowered for, not the host's default backend: the
  same function lowered for a TPU or a GPU on this CPU host has XLA's convolutions and no
  Winograd products (what `sg2jax.aot` compiles), lowered for the CPU the reverse."""
  module = sys.modules['sg2jax.ops.conv2d']
  monkeypatch.setattr(module, 'WINOGRAD_MIN_CHANNELS', 8)
  monkeypatch.setattr(module, 'WINOGRAD_MIN_PIXELS', 30)
  x = jnp.ones((2, 6, 5, 8), jnp.float32)
  w = jnp.ones((3, 3, 8, 12), jnp.float32)
  # Forward, data gradient and weight gradient.
  fn = jax.jit(jax.grad(lambda x, w: jnp.sum(conv2d(x, w, 1, ((1, 1), (1, 1))) ** 2), (0, 1)))
  for platform, winograd in (('cpu', True), ('tpu', False), ('cuda', False)):
    text = fn.trace(x, w).lower(lowering_platforms=(platform,)).as_text()
    assert ('stablehlo.convolution' not in text) == winograd, platform
    assert ('stablehlo.dot_general' in text) == winograd, platform


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='Winograd is the CPU path')
def test_conv2d_takes_winograd_and_its_derivatives_of_both_orders_equal_xla(monkeypatch):
  """Where it applies, every convolution of a second-order gradient (R1 / path length) is
  computed by Winograd, and values and derivatives equal XLA's own. (Thresholds lowered so that
  a small case takes the path; `winograd_applies` reads them when a function is traced.)"""
  module = sys.modules['sg2jax.ops.conv2d']  # (the package exports the function conv2d)
  monkeypatch.setattr(module, 'WINOGRAD_MIN_CHANNELS', 8)
  monkeypatch.setattr(module, 'WINOGRAD_MIN_PIXELS', 30)  # 1 x 6x5 (under vmap) and up
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 6, 5, 8)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 8, 12)) / np.sqrt(72), jnp.float32)
  padding = ((1, 1), (1, 1))
  ours = lambda x, w: conv2d(x, w, 1, padding)
  xla = lambda x, w: xla_conv2d(x, w, 1, padding)
  cot = jnp.asarray(rng.normal(size=(2, 6, 5, 12)), jnp.float32)
  assert relative_error(jax.jit(ours)(x, w), xla(x, w)) < 2e-6
  twice = jax.jit(lambda x, w: second_order(ours, x, w, cot))
  assert compiled_convolutions(twice, x, w) == []  # nothing left for XLA's convolution
  for got, want in zip(twice(x, w), second_order(xla, x, w, cot)):
    assert relative_error(got, want) < 2e-5
  # Per-sample kernels under vmap (the fused modulated convolution).
  ws = jnp.stack([w, -0.5 * w])
  vmapped = lambda conv: jax.grad(lambda x, ws: jnp.sum(jnp.tanh(jax.vmap(
      lambda x, w: conv(x[None], w))(x, ws))), (0, 1))
  assert compiled_convolutions(vmapped(ours), x, ws) == []
  for got, want in zip(jax.jit(vmapped(ours))(x, ws), vmapped(xla)(x, ws)):
    assert relative_error(got, want) < 2e-6
  monkeypatch.setattr(module, 'WINOGRAD_MIN_PIXELS', 61)  # 2 x 6x5 outputs: direct
  assert compiled_convolutions(lambda x, w: conv2d(x, w, 1, padding), x, w)  # a new trace


def test_float_rounding_matches_the_direct_convolution_in_float64_terms():
  """Against a float64 reference, Winograd's error stays within a small multiple of the direct
  float32 convolution's (the transforms add and halve, no large constants)."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 16, 16, 64))
  w = rng.normal(size=(3, 3, 64, 64)) / np.sqrt(9 * 64)
  padding = ((1, 1), (1, 1))
  exact = np.zeros((2, 16, 16, 64))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  for a in range(3):
    for b in range(3):
      exact += np.einsum('nhwi,io->nhwo', xp[:, a:a + 16, b:b + 16], w[a, b])
  x32, w32 = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
  err_direct = np.abs(np.asarray(xla_conv2d(x32, w32, 1, padding), np.float64) - exact).max()
  err_winograd = np.abs(np.asarray(correlate3x3(x32, w32, padding), np.float64) - exact).max()
  assert err_winograd < 4 * max(err_direct, 1e-7)


def test_networks_in_the_training_setting_take_winograd_and_give_the_direct_values(monkeypatch):
  """G as training runs it (modulating activations, so its convolutions see the whole batch) and
  D, with 256 channels at 32x32 and a batch of 8: their 3x3 convolutions at 32x32 take Winograd
  (the compiled programs have that many fewer convolutions than with Winograd out of reach), and
  the images are within one grey level of the direct convolutions', the logits within 1e-5."""
  from sg2jax.images import to_uint8
  from sg2jax.networks.discriminator import Discriminator
  from sg2jax.networks.generator import Generator
  module = sys.modules['sg2jax.ops.conv2d']
  g = Generator(z_dim=32, w_dim=32, img_resolution=32, channel_base=256 * 32, channel_max=256,
                mapping_layers=2, fused_modconv=False)
  d = Discriminator(img_resolution=32, channel_base=256 * 32, channel_max=256)
  z = jax.random.normal(jax.random.key(0), (8, 32))
  g_vars = g.init(jax.random.key(1), z)
  d_vars = d.init(jax.random.key(2), jnp.zeros((8, 32, 32, 3)))
  assert winograd_applies((3, 3, 256, 256), 1, (8, 32, 32, 256))
  def run():  # new functions, traced anew: the thresholds are read while tracing
    generate = lambda v, z: g.apply(v, z, noise_mode='const')
    discriminate = lambda v, x: d.apply(v, x)
    g_compiled = jax.jit(generate).lower(g_vars, z).compile()
    img = g_compiled(g_vars, z)
    d_compiled = jax.jit(discriminate).lower(d_vars, img).compile()
    convolutions = [len(re.findall(r'\bconvolution\(', c.as_text())) for c in (g_compiled,
                                                                          d_compiled)]
    return img, d_compiled(d_vars, img), convolutions

  img, logits, with_winograd = run()
  monkeypatch.setattr(module, 'WINOGRAD_MIN_CHANNELS', 1 << 30)
  img_direct, logits_direct, direct = run()
  # G: b32's conv1 (conv0 upsamples: a transposed convolution, no Winograd); D: b32's conv0.
  assert with_winograd[0] == direct[0] - 1 and with_winograd[1] == direct[1] - 1, (
      with_winograd, direct)
  assert relative_error(img, img_direct) < 1e-5
  assert relative_error(logits, logits_direct) < 1e-5
  diff = np.abs(np.asarray(to_uint8(img), np.int32) - np.asarray(to_uint8(img_direct), np.int32))
  assert diff.max() <= 1
