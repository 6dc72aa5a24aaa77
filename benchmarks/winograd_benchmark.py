"""Winograd F(2x2, 3x3) against the direct convolution on this machine: single layers and whole
training phases. What `sg2jax/ops/conv2d.py`'s thresholds (WINOGRAD_MIN_CHANNELS,
WINOGRAD_MIN_PIXELS) were chosen from.

  python benchmarks/winograd_benchmark.py --layers            # 3x3 'same' layers, batch 8
  python benchmarks/winograd_benchmark.py --phases d_main,g_main,d_reg,g_reg --resolution 64

Layers: for each channel count (in = out) and size, the forward correlation and the weight
gradient, timed with `sg2jax/ops/winograd.py` and with `conv2d.py`'s direct path (`conv2d`
and its VJP, compiled with the thresholds out of reach: XLA's convolution and the
batch-contracted weight-gradient convolution), alternately, min of --repeats; JSON line with both times, the ratio and
whether `winograd_applies` picks Winograd there. Phases: config F built twice by
benchmarks/training_setup.py, once with the thresholds out of reach (every convolution direct),
once as shipped; the phases are compiled for both, then timed alternately; JSON line per phase
with medians, ratio and XLA's GFLOP of both programs.
"""

import argparse
import contextlib
import statistics
import sys
import time


def timed(fn, *args) -> float:
  import jax
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t


@contextlib.contextmanager
def winograd_thresholds(conv2d_module, enabled: bool):
  """Inside, functions traced (compiled) see the shipped thresholds, or thresholds out of
  reach, so every convolution takes conv2d.py's direct path; restored on exit."""
  shipped = (conv2d_module.WINOGRAD_MIN_CHANNELS, conv2d_module.WINOGRAD_MIN_PIXELS)
  if not enabled:
    conv2d_module.WINOGRAD_MIN_CHANNELS = conv2d_module.WINOGRAD_MIN_PIXELS = 1 << 30
  try:
    yield
  finally:
    conv2d_module.WINOGRAD_MIN_CHANNELS, conv2d_module.WINOGRAD_MIN_PIXELS = shipped


def layers(args, conv2d_module, emit) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from sg2jax.ops import winograd
  padding = ((1, 1), (1, 1))
  conv = lambda x, w: conv2d_module.conv2d(x, w, 1, padding)
  # The weight gradient through conv2d's VJP (under jit the unused forward value is dropped).
  conv_dw = lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]
  wino_fwd = jax.jit(lambda x, w: winograd.correlate3x3(x, w, padding))
  wino_dw = jax.jit(lambda x, w, dy: winograd.weight_gradient3x3(x, dy, padding))
  rng = np.random.default_rng(0)
  for c in args.channels:
    for size in args.sizes:
      n = args.batch
      x = jnp.asarray(rng.normal(size=(n, size, size, c)), jnp.float32)
      w = jnp.asarray(rng.normal(size=(3, 3, c, c)) / np.sqrt(9 * c), jnp.float32)
      dy = jnp.asarray(rng.normal(size=(n, size, size, c)), jnp.float32)
      with winograd_thresholds(conv2d_module, enabled=False):  # compiled now: direct
        direct_fwd = jax.jit(conv).lower(x, w).compile()
        direct_dw = jax.jit(conv_dw).lower(x, w, dy).compile()
      row = {'what': 'layer', 'batch': n, 'channels': c, 'size': size,
             'winograd_applies': conv2d_module.winograd_applies((3, 3, c, c), 1, dy.shape)}
      for name, direct, wino, operands in (('forward', direct_fwd, wino_fwd, (x, w)),
                                           ('weight_gradient', direct_dw, wino_dw, (x, w, dy))):
        times = {'direct': [], 'winograd': []}
        timed(direct, *operands), timed(wino, *operands)  # warm up (wino: compile)
        for i in range(args.repeats):
          order = ('direct', 'winograd') if i % 2 == 0 else ('winograd', 'direct')
          for side in order:
            times[side].append(timed(direct if side == 'direct' else wino, *operands))
        best = {side: min(t) for side, t in times.items()}
        row[f'{name}_direct_s'] = round(best['direct'], 5)
        row[f'{name}_winograd_s'] = round(best['winograd'], 5)
        row[f'{name}_ratio'] = round(best['winograd'] / best['direct'], 3)
      emit(row)


def phases(args, conv2d_module, emit) -> None:
  sys.path.insert(0, __file__.rsplit('/', 1)[0])
  from training_setup import build_phase_bench

  from experiments import config_f
  config = config_f.get_config()
  config.batch_size, config.batch_gpu = args.batch, args.batch
  names = args.phases.split(',')
  benches = {}
  for side in ('direct', 'winograd'):
    with winograd_thresholds(conv2d_module, enabled=side == 'winograd'):
      bench = build_phase_bench(config, args.resolution)
      for name in names:
        bench.compile(name)  # traced here, with these thresholds
        bench.run(name)
    benches[side] = bench
  for name in names:
    times = {side: [] for side in benches}
    for i in range(args.repeats):
      for side in (list(benches) if i % 2 == 0 else list(benches)[::-1]):
        t = time.perf_counter()
        benches[side].run(name)
        times[side].append(time.perf_counter() - t)
    median = {side: statistics.median(t) for side, t in times.items()}
    emit({'what': 'phase', 'phase': name, 'resolution': args.resolution,
          'batch': args.batch, 'direct_median_s': round(median['direct'], 3),
          'winograd_median_s': round(median['winograd'], 3),
          'ratio': round(median['winograd'] / median['direct'], 3),
          'gflop_direct': round(benches['direct'].flops(name) / 1e9, 1),
          'gflop_winograd': round(benches['winograd'].flops(name) / 1e9, 1)})


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--layers', action='store_true', help='time single 3x3 layers')
  p.add_argument('--channels', type=int, nargs='+', default=[64, 128, 256, 512])
  p.add_argument('--sizes', type=int, nargs='+', default=[8, 16, 32, 64])
  p.add_argument('--phases', default=None, help='comma-separated training phases to time')
  p.add_argument('--resolution', type=int, default=64)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--out', default=None,
                 help='also append the lines, with command, commit, date and machine, to this '
                      'file (the README quotes benchmarks/results/winograd_benchmark.jsonl)')
  args = p.parse_args()
  if not (args.layers or args.phases):
    p.error('choose --layers and/or --phases')

  from sg2jax.cli import configure_jax
  configure_jax('highest', 'none')
  import importlib
  import jax
  if jax.default_backend() != 'cpu':
    raise SystemExit('error: Winograd is sg2jax\'s CPU path; run this on a CPU backend '
                     '(JAX_PLATFORMS=cpu)')
  conv2d_module = importlib.import_module('sg2jax.ops.conv2d')  # the package exports conv2d()
  sys.path.insert(0, __file__.rsplit('/', 1)[0])
  import results  # benchmarks/results.py
  emit = results.Recorder(args.out)
  if args.layers:
    layers(args, conv2d_module, emit)
  if args.phases:
    phases(args, conv2d_module, emit)


if __name__ == '__main__':
  main()
