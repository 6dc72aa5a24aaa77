"""What the space-to-depth layout saves: config F's discriminator blocks compiled for one TPU chip.

  python benchmarks/tpu_narrow_layers.py --out benchmarks/results/tpu_narrow_layers.jsonl

For each block resolution (1024: 32 -> 64 channels, 512: 64 -> 128, 256: 128 -> 256, as config
F), the gradient of a block's output (fromrgb at the top block, the resnet skip, conv0, conv1
with its FIR filter, bias, leaky ReLU; bfloat16; `--batch` images) with respect to its weights
and input, and R1's second-order gradient (with respect to the weights, of the squared gradient
of the block's output with respect to its input), compiled by the TPU compiler for one chip of
`--topology`, in two forms:

- `xla`: XLA's own convolutions and depthwise FIR filters as they are (what TPU programs ran
  before `sg2jax/ops/space_to_depth.py`);
- `sg2jax`: sg2jax's `conv2d` and `conv2d_resample` lowered for the TPU, which lay out maps
  narrower than the 128 lanes space-to-depth (fromrgb's 1x1 kernel on 3-channel images too) and
  fold the FIR filter into D's strided 3x3 convolutions.

One JSON line per (resolution, form, gradient): temporaries (GiB), XLA's GFLOP, compile seconds.
Compiler facts, not run times.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import results  # noqa: E402  (benchmarks/results.py)

CHANNELS = {1024: (32, 64), 512: (64, 128), 256: (128, 256)}  # config F: tmp, out


def block_loss(form: str, top: bool):
  import jax.numpy as jnp
  import numpy as np
  from sg2jax.ops.bias_act import bias_act
  from sg2jax.ops.conv2d import conv2d, xla_conv2d
  from sg2jax.ops.conv_resample import conv2d_resample
  from sg2jax.ops.upfirdn import _upfirdn2d_depthwise, setup_filter

  f = setup_filter([1, 3, 3, 1])
  flipped = np.asarray(f, np.float64)[::-1, ::-1]

  def conv(x, w, down=1):
    k, w = w.shape[0], w.astype(x.dtype)
    if form == 'sg2jax':
      return conv2d_resample(x, w, f, down=down, padding=k // 2)
    if down == 1:
      return xla_conv2d(x, w, 1, ((k // 2, k // 2), (k // 2, k // 2)))
    p = k // 2
    if k == 1:  # filter with the stride, then 1x1
      return xla_conv2d(_upfirdn2d_depthwise(x, flipped, 1, 2, (p + 1, p + 1, p + 1, p + 1)), w, 1,
                        ((0, 0), (0, 0)))
    x = _upfirdn2d_depthwise(x, flipped, 1, 1, (p + 1, p + 1, p + 1, p + 1))
    return xla_conv2d(x, w, 2, ((0, 0), (0, 0)))

  def act(x, b):
    return bias_act(x, b.astype(x.dtype), activation='lrelu', clamp=256.0)

  def loss(params, x):
    x = x.astype(jnp.bfloat16)
    if top:
      x = act(conv(x, params['fromrgb']), params['b_fromrgb'])
    y = conv(x, params['skip'], down=2) * np.sqrt(0.5)
    x = act(conv(x, params['conv0']), params['b0'])
    x = act(conv(x, params['conv1'], down=2), params['b1']) * np.sqrt(0.5)
    return jnp.sum((x + y).astype(jnp.float32) ** 2)

  return loss


def r1_loss(loss):
  """The squared gradient of `loss` with respect to the block's input (R1's penalty)."""
  import jax
  import jax.numpy as jnp

  def penalty(params, x):
    return jnp.sum(jax.grad(loss, argnums=1)(params, x).astype(jnp.float32) ** 2)

  return penalty


def compile_block(device, form: str, resolution: int, batch: int, gradient: str) -> dict:
  import jax
  import jax.numpy as jnp
  tmp, out = CHANNELS[resolution]
  top = resolution == max(CHANNELS)
  cin = 3 if top else tmp
  shapes = {'skip': (1, 1, tmp, out), 'conv0': (3, 3, tmp, tmp), 'conv1': (3, 3, tmp, out),
            'b0': (tmp,), 'b1': (out,)}
  if top:
    shapes.update(fromrgb=(1, 1, 3, tmp), b_fromrgb=(tmp,))
  sharding = jax.sharding.SingleDeviceSharding(device)
  params = {k: jax.ShapeDtypeStruct(v, jnp.float32, sharding=sharding) for k, v in shapes.items()}
  x = jax.ShapeDtypeStruct((batch, resolution, resolution, cin),
                           jnp.float32 if top else jnp.bfloat16, sharding=sharding)
  start = time.perf_counter()
  loss = block_loss(form, top)
  if gradient == 'r1':  # R1 differentiates with respect to the weights only
    compiled = jax.jit(jax.grad(r1_loss(loss))).lower(params, x).compile()
  else:
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {'resolution': resolution, 'form': form, 'gradient': gradient, 'batch': batch,
          'channels': [cin, tmp, out],
          'temp_gib': round(memory.temp_size_in_bytes / 2 ** 30, 4),
          'gflop': round(float(cost['flops']) / 1e9, 2),
          'compile_seconds': round(time.perf_counter() - start, 1)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--topology', default='v5e-1')
  p.add_argument('--resolutions', default='1024,512,256')
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--gradients', default='first,r1',
                 help="'first': of the block's output; 'r1': of R1's penalty")
  p.add_argument('--out', default=None)
  args = p.parse_args()
  from sg2jax import topology
  topology.prepare_environment()
  slice_ = topology.parse_slice(args.topology)
  device = topology.compile_only_devices(slice_)[0]
  record = results.Recorder(args.out)
  for resolution in (int(r) for r in args.resolutions.split(',')):
    for gradient in args.gradients.split(','):
      for form in ('xla', 'sg2jax'):
        record({'topology': slice_.name, 'chip': device.device_kind,
                **compile_block(device, form, resolution, args.batch, gradient)})


if __name__ == '__main__':
  main()
