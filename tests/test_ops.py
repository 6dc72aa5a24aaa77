"""The pure ops against the official ones (ops.npz) and against their definitions."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goldens import CASES, assert_matches_golden, hwio, load, nchw, nhwc
from sg2jax import ops
from sg2jax.ops.mbstd import minibatch_stddev

OPS = load('ops.npz')


def golden_input(name: str) -> np.ndarray:
  match = re.fullmatch(r'(\w+)\[:(\d+)\]', name)
  return OPS[match.group(1)][:int(match.group(2))] if match else OPS[name]


def run_case(case: dict):
  kw = dict(case['kwargs'])
  x, *rest = [golden_input(n) for n in case['inputs']]
  op = case['op']
  if op == 'upfirdn2d':
    return nchw(ops.upfirdn2d(nhwc(x), rest[0], **kw))
  if op == 'upsample2d':
    return nchw(ops.upsample2d(nhwc(x), rest[0]))
  if op == 'downsample2d':
    return nchw(ops.downsample2d(nhwc(x), rest[0]))
  if op == 'conv2d_resample':
    # ADA's flip_weight=False is a true convolution: flip to sg2jax's correlation.
    w = hwio(rest[0], flip=not kw.pop('flip_weight'))
    return nchw(ops.conv2d_resample(nhwc(x), w, rest[1], **kw))
  if op == 'modulated_conv2d':
    w = hwio(rest[0], flip=not kw.pop('flip_weight', True))
    styles = jnp.asarray(rest[1])
    f = next((a for a in rest[2:] if a.shape == (4, 4)), None)
    noise = nhwc(rest[-1]) if 'in_mc_noise' in case['inputs'] else None
    return nchw(ops.modulated_conv2d(
        nhwc(x), w, styles, demodulate=kw['demodulate'], up=kw.get('up', 1),
        padding=kw.get('padding', 0), resample_filter=f, fused=kw['fused_modconv'], noise=noise))
  if op == 'bias_act':
    return nchw(ops.bias_act(nhwc(x), jnp.asarray(rest[0]), kw['act'], kw.get('gain'),
                             kw.get('clamp')))
  if op == 'mbstd':
    return nchw(minibatch_stddev(nhwc(x), kw['group_size'], kw['num_channels']))
  if op == 'normalize_2nd_moment':
    return np.asarray(ops.normalize_2nd_moment(jnp.asarray(x)))
  raise AssertionError(f'no runner for op {op}')


@pytest.mark.parametrize('case', CASES['ops_cases'], ids=lambda c: c['name'])
def test_op_matches_official(case):
  assert_matches_golden(run_case(case), OPS['out_' + case['name']], case['name'])


def test_every_op_golden_is_covered():
  covered = {'out_' + c['name'] for c in CASES['ops_cases']}
  assert covered == {k for k in OPS if k.startswith('out_')}


def naive_upfirdn2d(x, f, up, down, pad, flip_filter, gain):
  """Direct transcription of the four steps of REFERENCE.md §1.3, one channel at a time."""
  x0, x1, y0, y1 = pad
  n, h, w, c = x.shape
  u = np.zeros((n, h * up, w * up, c))
  u[:, ::up, ::up] = x
  padded = np.zeros((n, h * up + y0 + y1, w * up + x0 + x1, c))
  src = u[:, max(-y0, 0):h * up - max(-y1, 0), max(-x0, 0):w * up - max(-x1, 0)]
  padded[:, max(y0, 0):max(y0, 0) + src.shape[1], max(x0, 0):max(x0, 0) + src.shape[2]] = src
  k = f if flip_filter else f[::-1, ::-1]
  fh, fw = f.shape
  out_h, out_w = padded.shape[1] - fh + 1, padded.shape[2] - fw + 1
  out = np.zeros((n, out_h, out_w, c))
  for i in range(out_h):
    for j in range(out_w):
      out[:, i, j] = np.einsum('nhwc,hw->nc', padded[:, i:i + fh, j:j + fw], k)
  return out[:, ::down, ::down] * gain


@pytest.mark.parametrize('up,down,pad,flip', [
    (1, 1, (1, 2, 0, 1), False), (2, 1, (2, 1, 1, 2), False), (1, 2, (1, 0, 2, 1), True),
    (3, 1, (-1, 2, 2, -1), False), (2, 1, (-2, -1, 0, 0), True)])
def test_upfirdn2d_matches_its_definition(up, down, pad, flip):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
  f = rng.uniform(size=(3, 4)).astype(np.float32)
  out = ops.upfirdn2d(jnp.asarray(x), f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5)
  np.testing.assert_allclose(out, naive_upfirdn2d(x, f, up, down, pad, flip, 1.5), atol=1e-5)


@pytest.mark.parametrize('up,down,pad,flip', [
    (1, 1, (1, 2, 0, 1), False), (2, 1, (2, 1, 1, 2), False), (1, 2, (1, 0, 2, 1), True),
    (3, 1, (-1, 2, 2, -1), False), (2, 1, (-2, -1, 0, 0), True), (2, 2, (1, 1, 1, 1), False)])
def test_upfirdn2d_of_gpu_and_tpu_programs_equals_the_cpu_one(up, down, pad, flip):
  """Programs compiled for a GPU or TPU filter with one depthwise convolution
  (`_upfirdn2d_depthwise`), CPU programs with slices: the same values and first and second
  derivatives (the path-length and R1 penalties differentiate twice)."""
  from sg2jax.ops.upfirdn import _upfirdn2d_depthwise, _upfirdn2d_slices
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 7, 6, 3)), jnp.float32)
  f = rng.uniform(size=(3, 4))
  correlation_filter = (f if flip else f[::-1, ::-1]) * 1.5  # as upfirdn2d passes it on
  pads = ops.upfirdn.parse_padding(pad)
  cpu = lambda x: _upfirdn2d_slices(x, correlation_filter, up, down, pads)
  device = lambda x: _upfirdn2d_depthwise(x, correlation_filter, up, down, pads)
  want = naive_upfirdn2d(np.asarray(x), f, up, down, pad, flip, 1.5)
  np.testing.assert_allclose(device(x), want, atol=1e-5)
  np.testing.assert_allclose(cpu(x), want, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=cpu(x).shape), jnp.float32)

  def second_order(filter_fn):
    def penalty(x):
      g = jax.grad(lambda x: jnp.sum(jnp.tanh(filter_fn(x)) * cotangent))(x)
      return jnp.sum(g ** 2)
    return jax.grad(penalty)(x)

  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(device(x) * cotangent))(x),
                             jax.grad(lambda x: jnp.sum(cpu(x) * cotangent))(x), atol=1e-5)
  np.testing.assert_allclose(second_order(device), second_order(cpu), atol=1e-4)


@pytest.mark.parametrize('kernel', [1, 3])
@pytest.mark.parametrize('up,down', [(2, 1), (1, 2)])
def test_conv2d_resample_equals_generic_form(kernel, up, down):
  """The fused paths equal FIR-resample-then-correlate (REFERENCE.md §1.3), borders included."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 4, 5)), jnp.float32)
  f = ops.setup_filter([1, 3, 3, 1])
  p = kernel // 2
  out = ops.conv2d_resample(x, w, f, up=up, down=down, padding=p)
  if up > 1:
    y = ops.upfirdn2d(x, f, up=up, padding=(p + 2, p + 1, p + 2, p + 1), gain=up * up)
    ref = ops.conv2d(y, w)
  else:
    y = ops.upfirdn2d(x, f, padding=(p + 1, p + 1, p + 1, p + 1))
    ref = ops.conv2d(y, w, stride=down)
  assert out.shape == (2, 8 * up // down, 8 * up // down, 5)
  np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize('up,demodulate', [(1, True), (2, True), (1, False), (2, False)])
def test_fused_and_nonfused_modconv_agree(up, demodulate):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 6, 4)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(3, 6)) + 1, jnp.float32)
  kw = dict(demodulate=demodulate, up=up, padding=1, resample_filter=ops.setup_filter([1, 3, 3, 1]))
  fused = ops.modulated_conv2d(x, w, s, fused=True, **kw)
  nonfused = ops.modulated_conv2d(x, w, s, fused=False, **kw)
  np.testing.assert_allclose(fused, nonfused, atol=1e-4, rtol=1e-5)


def test_fused_modconv_is_one_grouped_convolution():
  """vmap over the per-sample kernel lowers to a conv with feature_group_count = N."""
  x = jnp.zeros((5, 8, 8, 6))
  w = jnp.zeros((3, 3, 6, 4))
  s = jnp.ones((5, 6))
  hlo = jax.jit(lambda x, s: ops.modulated_conv2d(x, w, s, padding=1)).lower(x, s).as_text()
  convs = re.findall(r'stablehlo.convolution.*', hlo)
  assert len(convs) == 1
  assert 'feature_group_count = 5' in convs[0]


def test_demodulated_output_is_scale_invariant_in_the_weight():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 6)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 6, 4)), jnp.float32)
  s = jnp.asarray(rng.normal(size=(2, 6)) + 1, jnp.float32)
  a = ops.modulated_conv2d(x, w, s, padding=1)
  b = ops.modulated_conv2d(x, 7.0 * w, 0.5 * s, padding=1)
  np.testing.assert_allclose(a, b, atol=1e-4)


def test_setup_filter_normalizes_the_outer_product():
  f = ops.setup_filter([1, 3, 3, 1])
  np.testing.assert_allclose(f, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64)
  np.testing.assert_allclose(ops.setup_filter([1, 2, 1], gain=4).sum(), 4)


def test_mbstd_groups_are_strided():
  """Sample i is grouped with i + n, i + 2n, ... (n = N / G), not with its neighbours."""
  x = np.zeros((8, 1, 1, 1), np.float32)
  x[[0, 2, 4, 6], 0, 0, 0] = [1, -1, 1, -1]  # group 0 = {0, 2, 4, 6} has variance 1
  y = np.asarray(minibatch_stddev(jnp.asarray(x), 4, 1))[:, 0, 0, 1]
  np.testing.assert_allclose(y[[0, 2, 4, 6]], 1.0, atol=1e-6)
  np.testing.assert_allclose(y[[1, 3, 5, 7]], 1e-4, atol=1e-6)


def test_mbstd_rejects_a_batch_the_group_does_not_divide():
  with pytest.raises(ValueError, match=r'batch 6 is not divisible by the group size 4'):
    minibatch_stddev(jnp.zeros((6, 4, 4, 8)), 4, 1)
  with pytest.raises(ValueError, match='not divisible by num_channels=3'):
    minibatch_stddev(jnp.zeros((4, 4, 4, 8)), 4, 3)


def test_bias_act_rejects_an_unknown_activation():
  with pytest.raises(ValueError, match="unknown activation 'gelu'"):
    ops.bias_act(jnp.zeros((1, 2)), None, 'gelu')


def test_equalized_layers_scale_at_run_time():
  """W = theta * lr / sqrt(fan_in), b = beta * lr; conv fan_in = kh*kw*in (REFERENCE.md §1.1)."""
  rng = np.random.default_rng(4)
  x = rng.normal(size=(2, 6)).astype(np.float32)
  w = rng.normal(size=(6, 3)).astype(np.float32)
  b = rng.normal(size=(3,)).astype(np.float32)
  y = ops.equalized_dense(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), lr_multiplier=0.01)
  np.testing.assert_allclose(y, x @ (w * 0.01 / np.sqrt(6)) + b * 0.01, rtol=1e-5, atol=1e-6)
  y = ops.equalized_dense(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), activation='lrelu')
  pre = x @ (w / np.sqrt(6)) + b
  np.testing.assert_allclose(y, np.where(pre > 0, pre, 0.2 * pre) * np.sqrt(2), rtol=1e-5,
                             atol=1e-6)
  xc = jnp.asarray(rng.normal(size=(1, 5, 5, 4)), jnp.float32)
  wc = jnp.asarray(rng.normal(size=(3, 3, 4, 2)), jnp.float32)
  out = ops.equalized_conv2d(xc, wc, None, gain=0.5)
  np.testing.assert_allclose(out, ops.conv2d(xc, wc / 6.0, padding=((1, 1), (1, 1))) * 0.5,
                             rtol=1e-5, atol=1e-5)


def test_mbstd_groups_form_within_each_per_gpu_batch():
  """batch_gpu=4 on a batch of 8 equals running the layer on each half separately."""
  x = jnp.asarray(np.random.default_rng(5).normal(size=(8, 4, 4, 6)), jnp.float32)
  sharded = minibatch_stddev(x, 2, 1, batch_gpu=4)
  separate = jnp.concatenate([minibatch_stddev(x[:4], 2, 1), minibatch_stddev(x[4:], 2, 1)])
  np.testing.assert_allclose(sharded, separate, atol=1e-6)
  with pytest.raises(ValueError, match='batch 8 is not divisible by batch_gpu 3'):
    minibatch_stddev(x, 2, 1, batch_gpu=3)
