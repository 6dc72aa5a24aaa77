"""The convolutions of `sg2jax/ops/conv2d.py` on CPU against XLA's own (`xla_conv2d`,
`xla_transposed_conv2d`: what programs for GPUs and TPUs run, with JAX's automatic derivatives):
values, first and second derivatives, and the layouts their derivatives compile to."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sg2jax.ops.conv2d import conv2d, transposed_conv2d, xla_conv2d, xla_transposed_conv2d
from sg2jax.ops.conv_resample import conv2d_resample
from sg2jax.ops.upfirdn import setup_filter


def second_order(conv, x, w, cotangent):
  """R1-like: d/d(x, w) of |d sum(tanh(conv) * c) / dx|^2 + sum((d ... / dw)^3), which exercises
  the derivatives of both VJP outputs."""
  def loss(x, w):
    inner = lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) * cotangent)
    gx, gw = jax.grad(inner, (0, 1))(x, w)
    return jnp.sum(gx ** 2) + jnp.sum(gw ** 3)
  return jax.grad(loss, (0, 1))(x, w)


def relative_error(a, b):
  return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))


# (kernel, stride, padding, input size): plain 3x3 and 1x1, stride-2 down as D's conv1 and
# skip use it (even and odd sizes, so a row of the input is unused), asymmetric padding, and a
# padding larger than the kernel's reach.
CASES = [(3, 1, ((1, 1), (1, 1)), 8), (1, 1, ((0, 0), (0, 0)), 6), (3, 2, ((0, 0), (0, 0)), 9),
         (3, 2, ((0, 0), (0, 0)), 10), (1, 2, ((0, 0), (0, 0)), 7), (2, 2, ((1, 0), (0, 1)), 7),
         (3, 1, ((2, 2), (2, 2)), 5), (4, 2, ((2, 1), (1, 2)), 11)]


@pytest.mark.parametrize('k,stride,padding,size', CASES)
def test_values_and_derivatives_equal_xla(k, stride, padding, size):
  rng = np.random.default_rng(k * 100 + stride * 10 + size)
  x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 3, 4)), jnp.float32)
  ours = lambda x, w: conv2d(x, w, stride, padding)
  xla = lambda x, w: xla_conv2d(x, w, stride, padding)
  y = ours(x, w)
  np.testing.assert_allclose(y, xla(x, w), rtol=0, atol=1e-5)
  c = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  first = jax.grad(lambda x, w: jnp.sum(ours(x, w) * c), (0, 1))(x, w)
  first_xla = jax.grad(lambda x, w: jnp.sum(xla(x, w) * c), (0, 1))(x, w)
  for got, want in zip(first, first_xla):
    assert got.shape == want.shape
    assert relative_error(got, want) < 1e-6
  for got, want in zip(second_order(ours, x, w, c), second_order(xla, x, w, c)):
    assert relative_error(got, want) < 1e-5


@pytest.mark.parametrize('k,up,size', [(3, 2, 5), (3, 2, 4), (1, 2, 4), (4, 2, 3), (3, 1, 4)])
def test_polyphase_transposed_conv_equals_its_definition(k, up, size):
  rng = np.random.default_rng(k + up + size)
  x = jnp.asarray(rng.normal(size=(2, size, size, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 3, 4)), jnp.float32)
  ours = lambda x, w: transposed_conv2d(x, w, up)
  xla = lambda x, w: xla_transposed_conv2d(x, w, up)
  y = ours(x, w)
  np.testing.assert_allclose(y, xla(x, w), rtol=0, atol=1e-5)
  c = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
  for got, want in zip(second_order(ours, x, w, c), second_order(xla, x, w, c)):
    assert relative_error(got, want) < 1e-5


def test_batched_kernels_under_vmap():
  """The fused modulated conv vmaps the convolution over per-sample kernels (a grouped conv)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 1, 6, 6, 2)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 2, 4)), jnp.float32)
  loss = lambda conv: lambda x, w: jnp.sum(jnp.tanh(jax.vmap(
      lambda x, w: conv(x, w, 2, ((1, 1), (1, 1))))(x, w)))
  ours = jax.grad(loss(conv2d), (0, 1))(x, w)
  xla = jax.grad(loss(xla_conv2d), (0, 1))(x, w)
  for got, want in zip(ours, xla):
    assert relative_error(got, want) < 1e-6


def compiled_convolutions(fn, *args) -> list[str]:
  """The convolution instructions of `fn`'s optimized HLO."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  return [line for line in text.splitlines() if re.search(r'\bconvolution\(', line)]


def test_second_derivatives_compile_to_standard_layouts_only():
  """R1 through a stride-2 down conv and path length through an up conv (the cases XLA
  differentiates into reversed kernels, lhs dilation and batch-as-feature layouts) compile to
  convolutions in XLA's standard forward layout only."""
  f = setup_filter([1, 3, 3, 1])
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 8, 8, 8)), jnp.float32)
  w_down = jnp.asarray(rng.normal(size=(3, 3, 8, 8)), jnp.float32)
  w_up = jnp.asarray(rng.normal(size=(3, 3, 8, 8)), jnp.float32)

  def r1(w):  # D-like: conv, down conv; penalty on the image gradient
    d = lambda x: jnp.sum(jnp.tanh(conv2d_resample(jnp.tanh(conv2d(x, w, 1, ((1, 1), (1, 1)))),
                                                   w_down, f, down=2, padding=1)))
    return jnp.sum(jax.grad(d)(x) ** 2)

  def path_length(w):  # G-like: up conv then conv; gradient w.r.t. the input
    g = lambda x: jnp.sum(conv2d(jnp.tanh(conv2d_resample(x, w_up, f, up=2, padding=1)), w, 1,
                                 ((1, 1), (1, 1))))
    return jnp.sum(jax.grad(g)(x) ** 2)

  for name, loss in (('r1', r1), ('path length', path_length)):
    convs = compiled_convolutions(jax.grad(loss), w_down)
    assert convs, name
    for line in convs:
      assert 'dim_labels=b01f_01io->b01f' in line, (name, line)
      assert not re.search(r'rhs_reversal|lhs_dilate|feature_group_count|batch_group_count',
                           line), (name, line)
