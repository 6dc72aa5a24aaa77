"""Which convolution of D's blocks makes libtpu abort, per TPU chip: R1's second-order gradient
through one op, compiled for one chip of a slice, each case in its own process (the compiler
aborts the process it runs in).

  python benchmarks/tpu_conv_abort.py --slices v4-8,v5p-8,v5e-1 --resolutions 512,1024 \\
      --out benchmarks/results/tpu_conv_abort.jsonl

Cases (bfloat16, 4 images, config F's channels at the resolution: 32768 / R in):
- `down3`: `conv2d_resample(x, w, f, down=2, padding=1)`, a 3x3 kernel (D's conv1): in TPU
  programs one stride-2 correlation with the FIR filter folded in, laid out in cells;
- `folded_plain`: the same folded 6x6 kernel as XLA's own strided convolution, no cells;
- `folded_cells`: the folded kernel through `space_to_depth_conv2d` only (cells, rows in phases:
  no stride);
- `strided_cells`: the folded kernel in cells with the rows at stride 2, as sg2jax laid it out up
  to commit 77fbfc2 (libtpu 0.0.42.1 aborted on it for v4 and v5p chips).
The loss is the squared leaky ReLU of the op's output, R1 the squared gradient with respect to
the input; the program is R1's gradient with respect to both. One JSON line per case:
`compiled` (true, or false with the compiler's failed check), temporaries in GiB.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import results  # noqa: E402  (benchmarks/results.py)

CASES = ('down3', 'folded_plain', 'folded_cells', 'strided_cells')


def compile_case(case: str, slice_name: str, resolution: int) -> dict:
  """Compiles one case in this process; its line (the caller's process survives an abort)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax import lax
  from jax.sharding import SingleDeviceSharding
  from sg2jax import topology
  from sg2jax.ops.conv_resample import conv2d_resample
  from sg2jax.ops.space_to_depth import (cell_kernel, fold_filter, lane_factors,
                                         space_to_depth_conv2d)
  from sg2jax.ops.upfirdn import setup_filter
  topology.prepare_environment()
  device = topology.compile_only_devices(topology.parse_slice(slice_name))[0]
  sharding = SingleDeviceSharding(device)
  f = setup_filter([1, 3, 3, 1])
  channels = 32768 // resolution
  # upfirdn2d convolves: the folded kernel correlates with the flipped filter.
  folded = lambda w: fold_filter(w, np.asarray(f, np.float64)[::-1, ::-1])
  pad = ((2, 2), (2, 2))

  def op(x, w):
    if case == 'down3':
      return conv2d_resample(x, w, f, down=2, padding=1)
    if case == 'folded_cells':
      return space_to_depth_conv2d(x, folded(w), 2, pad)
    if case == 'strided_cells':
      s_in, s_out = lane_factors(x.shape, (6, 6) + w.shape[2:], 2, pad)
      kernel, first = cell_kernel(folded(w), 2, 2, s_in, s_out)
      n, height, width, in_channels = x.shape
      cells = width // s_in  # as many output cells: right padding = kernel cells - 1 + first
      return lax.conv_general_dilated(
          x.reshape(n, height, cells, s_in * in_channels), kernel, (2, 1),
          ((2, 2), (-first, kernel.shape[1] - 1 + first)),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return lax.conv_general_dilated(x, folded(w), (2, 2), pad,
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  def loss(w, x):
    y = op(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)).astype(jnp.float32)
    return jnp.sum(jnp.where(y >= 0, y, 0.2 * y) ** 2)

  def r1(w, x):
    return jnp.sum(jax.grad(loss, argnums=1)(w, x) ** 2)

  w = jax.ShapeDtypeStruct((3, 3, channels, 2 * channels), jnp.float32, sharding=sharding)
  x = jax.ShapeDtypeStruct((4, resolution, resolution, channels), jnp.float32, sharding=sharding)
  compiled = jax.jit(jax.grad(r1, argnums=(0, 1))).lower(w, x).compile()
  return {'temp_gib': round(compiled.memory_analysis().temp_size_in_bytes / 2 ** 30, 4)}


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--slices', default='v4-8,v5p-8,v5e-1')
  p.add_argument('--resolutions', default='512,1024')
  p.add_argument('--cases', default=','.join(CASES))
  p.add_argument('--out', default=None)
  p.add_argument('--one', nargs=3, metavar=('CASE', 'SLICE', 'RESOLUTION'), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.one:
    case, slice_name, resolution = args.one
    print(json.dumps(compile_case(case, slice_name, int(resolution))), flush=True)
    return
  from sg2jax import topology
  record = results.Recorder(args.out)
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'TPU_SKIP_MDS_QUERY': '1'}
  for slice_name in args.slices.split(','):
    for resolution in (int(r) for r in args.resolutions.split(',')):
      for case in args.cases.split(','):
        done = subprocess.run([sys.executable, __file__, '--one', case, slice_name, str(resolution)],
                              capture_output=True, text=True, env=env)
        row = {'case': case, 'slice': slice_name, 'resolution': resolution,
               'compiled': done.returncode == 0}
        if done.returncode == 0:
          row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        else:
          checks = [c for c in map(topology.failed_check, done.stderr.splitlines()) if c]
          row['returncode'] = done.returncode
          row['error'] = checks[0] if checks else done.stderr[-300:]
        record(row)


if __name__ == '__main__':
  main()
