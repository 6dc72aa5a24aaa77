"""TPU programs' forms of narrow convolutions (`ops/space_to_depth.py`) and of the FIR-then-stride
down convolutions (`conv_resample.folded_conv2d_down`): the same values and derivatives (first and
second order) as the forms the CPU runs, and, compiled by the TPU compiler, less memory."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sg2jax import topology
from sg2jax.ops import space_to_depth
from sg2jax.ops.conv2d import conv2d
from sg2jax.ops.conv_resample import conv2d_resample, folded_conv2d_down
from sg2jax.ops.upfirdn import setup_filter


def reference(x, w, stride, padding):
  return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  precision=lax.Precision.HIGHEST)


def relative(a, b):  # float32 rounding, relative to the largest entry
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))


@pytest.mark.parametrize('shape, kernel, stride, padding, factors', [
    ((2, 8, 16, 32), (3, 3, 32, 32), 1, ((1, 1), (1, 1)), (4, 4)),     # D's conv0 at 32 channels
    ((2, 8, 16, 32), (6, 6, 32, 64), 2, ((2, 2), (2, 2)), (4, 2)),     # conv1 with its FIR folded
    ((2, 8, 16, 32), (4, 4, 32, 64), 2, ((1, 1), (1, 1)), (4, 2)),     # resnet skip, FIR folded
    ((1, 4, 32, 16), (3, 3, 16, 8), 1, ((1, 1), (1, 1)), (8, 8)),  # input cells <= 128 channels
    ((2, 6, 8, 64), (3, 3, 64, 64), 1, ((0, 2), (1, 1)), (2, 2)),      # uneven padding
    ((1, 4, 16, 32), (3, 3, 32, 32), 1, ((1, 1), (0, 2)), (4, 4)),
    ((1, 4, 12, 32), (3, 3, 32, 32), 1, ((1, 1), (1, 1)), (4, 4)),     # 3 cells
    ((1, 4, 6, 32), (3, 3, 32, 32), 1, ((1, 1), (1, 1)), (2, 2)),      # 4 does not divide 6
    ((2, 4, 64, 3), (1, 1, 3, 32), 1, ((0, 0), (0, 0)), (32, 32)),     # fromrgb
])
def test_space_to_depth_convolution_equals_the_convolution(shape, kernel, stride, padding,
                                                           factors):
  assert space_to_depth.lane_factors(shape, kernel, stride, padding) == factors
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal(kernel), jnp.float32)
  ours = lambda x, w: space_to_depth.space_to_depth_conv2d(x, w, stride, padding)
  theirs = lambda x, w: reference(x, w, stride, padding)
  with jax.default_matmul_precision('highest'):
    assert ours(x, w).shape == theirs(x, w).shape
    assert relative(theirs(x, w), ours(x, w)) < 5e-5
    # First and second derivatives (R1's gradient of a gradient) through both forms.
    def r1(conv):
      grad_x = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))
      return jax.grad(lambda x, w: jnp.sum(jax.grad(lambda x: jnp.sum(
          jnp.tanh(conv(x, w))))(x) ** 2), (0, 1))(x, w), grad_x(x)
    (theirs_xx, theirs_xw), theirs_x = r1(theirs)
    (ours_xx, ours_xw), ours_x = r1(ours)
  assert relative(theirs_x, ours_x) < 5e-5
  assert relative(theirs_xx, ours_xx) < 5e-5
  assert relative(theirs_xw, ours_xw) < 5e-5


def test_lane_factors_fill_the_lanes_and_leave_wide_maps_alone():
  same, none = ((1, 1), (1, 1)), ((0, 0), (0, 0))
  factors = lambda width, i, o, k, stride, pad: space_to_depth.lane_factors(
      (1, width, width, i), (k, k, i, o), stride, pad)
  assert factors(64, 128, 128, 3, 1, same) is None  # lanes full already
  assert factors(64, 128, 256, 6, 2, ((2, 2), (2, 2))) is None
  assert factors(64, 64, 128, 6, 2, ((2, 2), (2, 2))) == (2, 1)  # input cells only
  assert factors(1024, 3, 32, 1, 1, none) == (32, 32)  # fromrgb: 96 of 128 lanes in
  assert factors(1024, 32, 3, 1, 1, none) is None      # torgb: images out, not in
  assert factors(1024, 64, 64, 1, 1, none) is None     # between feature maps
  assert factors(512, 32, 64, 1, 1, none) is None      # a 1x1 after a FIR filter, unfolded
  assert factors(1024, 128, 3, 1, 1, none) is None     # lanes full already
  assert factors(24, 3, 32, 1, 1, none) == (8, 8)      # 32 does not divide 24
  assert factors(7, 32, 32, 3, 1, same) is None      # odd width
  assert factors(1024, 32, 32, 3, 1, same) == (4, 4)
  assert factors(1024, 32, 64, 6, 2, ((2, 2), (2, 2))) == (4, 2)
  assert factors(512, 64, 64, 3, 1, same) == (2, 2)


@pytest.mark.parametrize('kernel_size, taps, flip_filter', [
    (3, 'blur', False), (1, 'blur', False), (3, 'random4', False), (3, 'random4', True),
    (1, 'random3', False)])
def test_folded_down_convolution_equals_filter_then_stride(kernel_size, taps, flip_filter):
  rng = np.random.default_rng(1)
  f = {'blur': setup_filter([1, 3, 3, 1]), 'random4': rng.standard_normal((4, 4)),
       'random3': rng.standard_normal((3, 3))}[taps]
  x = jnp.asarray(rng.standard_normal((2, 16, 16, 32)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((kernel_size, kernel_size, 32, 64)), jnp.float32)
  fh, fw = f.shape
  p = kernel_size // 2
  pad = (p + (fw - 1) // 2, p + (fw - 2) // 2, p + (fh - 1) // 2, p + (fh - 2) // 2)
  with jax.default_matmul_precision('highest'):
    cpu_form = lambda x, w: conv2d_resample(x, w, f, down=2, padding=p, flip_filter=flip_filter)
    tpu_form = lambda x, w: folded_conv2d_down(x, w, f, 2, pad, flip_filter)
    assert relative(cpu_form(x, w), tpu_form(x, w)) < 5e-5
    grads = [jax.grad(lambda x, w: jnp.sum(jnp.tanh(form(x, w))), (0, 1))(x, w)
             for form in (cpu_form, tpu_form)]
  for theirs, ours in zip(*grads):
    assert relative(theirs, ours) < 5e-5


@pytest.fixture(scope='module')
def v5e_chip():
  return topology.compile_only_devices(topology.parse_slice('v5e-1'))[0]


def temporaries(device, loss, *shapes):
  sharding = jax.sharding.SingleDeviceSharding(device)
  args = [jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=sharding) for shape in shapes]
  compiled = jax.jit(jax.grad(loss, argnums=tuple(range(len(shapes))))).lower(*args).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_tpu_programs_take_the_narrow_form_and_need_less_memory(v5e_chip):
  """sg2jax's `conv2d` compiled for a v5e chip needs a fraction of the memory of XLA's own
  convolution of the same 32-channel maps (its gradient, as training takes it)."""
  shape, kernel, padding = (2, 256, 256, 32), (3, 3, 32, 32), ((1, 1), (1, 1))
  loss = lambda conv: lambda x, w: jnp.sum(conv(x, w).astype(jnp.float32) ** 2)
  ours = temporaries(v5e_chip, loss(lambda x, w: conv2d(x, w, padding=padding)), shape, kernel)
  xla = temporaries(v5e_chip, loss(lambda x, w: reference(x, w, 1, padding)), shape, kernel)
  assert xla > 2 ** 24 and ours < 0.5 * xla, (ours, xla)


@pytest.mark.parametrize('channels, folded', [(32, True), (64, False)])
def test_tpu_programs_fold_the_filter_into_the_narrowest_1x1_down_convolution(v5e_chip, channels,
                                                                            folded):
  """D's resnet skip (FIR filter, stride 2, 1x1 kernel) in a TPU program: on 32-channel maps one
  correlation with the filter folded in (no depthwise filter on the narrow map); on 64-channel
  maps, where folding needed more memory, the filter and the 1x1 kernel as they are."""
  sharding = jax.sharding.SingleDeviceSharding(v5e_chip)
  x = jax.ShapeDtypeStruct((2, 64, 64, channels), jnp.bfloat16, sharding=sharding)
  w = jax.ShapeDtypeStruct((1, 1, channels, 2 * channels), jnp.bfloat16, sharding=sharding)
  f = setup_filter([1, 3, 3, 1])
  text = jax.jit(lambda x, w: conv2d_resample(x, w, f, down=2)).lower(x, w).as_text()
  depthwise = f'feature_group_count = {channels}' in text
  assert text.count('stablehlo.convolution') == (1 if folded else 2)
  assert depthwise == (not folded)


# R1's second-order gradient through D's down convolution (FIR folded into a 3x3 kernel, stride
# 2, 64-channel maps in cells), compiled for one chip of the slice named in argv[1]. The
# compiler aborts the process it runs in when it fails a check, so this runs in a child.
_COMPILE_R1_THROUGH_DOWN_CONVOLUTION = """
import sys
import jax, jax.numpy as jnp
from sg2jax import topology
from sg2jax.ops.conv_resample import conv2d_resample
from sg2jax.ops.upfirdn import setup_filter
device = topology.compile_only_devices(topology.parse_slice(sys.argv[1]))[0]
sharding = jax.sharding.SingleDeviceSharding(device)
f = setup_filter([1, 3, 3, 1])
def loss(w, x):
  y = conv2d_resample(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), f, down=2, padding=1)
  y = y.astype(jnp.float32)
  return jnp.sum(jnp.where(y >= 0, y, 0.2 * y) ** 2)
def r1(w, x):
  return jnp.sum(jax.grad(loss, argnums=1)(w, x) ** 2)
w = jax.ShapeDtypeStruct((3, 3, 64, 128), jnp.float32, sharding=sharding)
x = jax.ShapeDtypeStruct((4, 32, 32, 64), jnp.float32, sharding=sharding)
jax.jit(jax.grad(r1, argnums=(0, 1))).lower(w, x).compile()
"""


@pytest.mark.parametrize('slice_name', ['v4-8', 'v5p-8', 'v5e-1'])
def test_r1_through_the_down_convolution_compiles_for_every_chip(slice_name):
  """With the rows strided in cells, the TPU compiler for v4 and v5p chips aborted on this
  program (a failed check in its fusion emitter); with the rows in phases it compiles."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TPU_SKIP_MDS_QUERY': '1'}
  done = subprocess.run([sys.executable, '-c', _COMPILE_R1_THROUGH_DOWN_CONVOLUTION, slice_name],
                        capture_output=True, text=True, timeout=600, env=env)
  failed = [line for line in done.stderr.splitlines() if 'Check failed' in line]
  assert done.returncode == 0, failed or done.stderr[-2000:]
