"""Training and inference speed on an accelerator: one script, JSON lines, under 8 minutes.

  python benchmarks/accelerator.py                 # config F at 256 (batch 32) and 1024 (batch 8)
  python benchmarks/accelerator.py --tiny          # the same code at 16x16 on any machine (CPU)

For each resolution and each setting (float32 with precision `highest` — exact, as the paper —
float32 with precision `default` — TF32 on NVIDIA GPUs, bf16 passes on TPUs — and bfloat16
compute with float32 parameters), on the first local device:
- `compile_seconds`: lowering + compiling the five training phases (0 s when the persistent
  compilation cache already holds them: `SG2JAX_COMPILE_CACHE=none` to measure compiles);
- per phase: the median seconds of `--steps` calls and XLA's cost-analysis flops;
- the whole minibatch, lazy regularization amortized as the loop runs it
  (g_main + d_main + g_reg/4 + d_reg/16 + ema): seconds, images/s, achieved TFLOP/s and MFU
  against the chip's nominal dense peak for that dtype and precision (`PEAK_TFLOPS`; null where
  the chip is not in the table, e.g. CPUs);
- peak device memory so far (`memory_stats()['peak_bytes_in_use']`, where the backend reports
  it; the process's peak, so settings run smallest first);
- generation (G_ema, const noise) images/s with the modulated convolutions fused and unfused, so
  the choice `sg2jax.tools.sampling.with_modconv('auto')` makes can be checked on each chip.
Settings are skipped, with a line saying so, once `--time-budget` seconds have passed.
"""

import argparse
import json
import statistics
import time

PHASE_WEIGHTS = {'g_main': 1.0, 'g_reg': 1 / 4, 'd_main': 1.0, 'd_reg': 1 / 16, 'ema': 1.0}

# Nominal dense peak TFLOP/s per chip (vendor spec sheets): bf16 tensor, float32 with
# precision 'default' (TF32 on NVIDIA, bf16 passes on TPUs), exact float32 ('highest': CUDA cores
# on NVIDIA; six bf16 passes on TPUs). Keys are matched against `device_kind` (lower case).
PEAK_TFLOPS = {
    'h200': {'bfloat16': 989.0, 'default': 494.0, 'highest': 67.0},
    'h100': {'bfloat16': 989.0, 'default': 494.0, 'highest': 67.0},
    'a100': {'bfloat16': 312.0, 'default': 156.0, 'highest': 19.5},
    'l4': {'bfloat16': 121.0, 'default': 60.0, 'highest': 30.3},
    'tpu v6': {'bfloat16': 918.0, 'default': 918.0, 'highest': 153.0},
    'tpu v5p': {'bfloat16': 459.0, 'default': 459.0, 'highest': 76.5},
    'tpu v5': {'bfloat16': 197.0, 'default': 197.0, 'highest': 32.8},  # v5e / v5 lite
    'tpu v4': {'bfloat16': 275.0, 'default': 275.0, 'highest': 45.8},
}
SETTINGS = (('float32', 'highest'), ('float32', 'default'), ('bfloat16', 'default'))


def peak_tflops(device_kind: str, dtype: str, precision: str):
  kind = device_kind.lower()
  for name, peaks in PEAK_TFLOPS.items():
    if name in kind:
      return peaks['bfloat16' if dtype == 'bfloat16' else precision]
  return None


def parse_batches(text: str) -> dict[int, int]:
  """'256:32,1024:8' -> {256: 32, 1024: 8}."""
  try:
    return {int(r): int(b) for r, b in (item.split(':') for item in text.split(',') if item)}
  except ValueError:
    raise SystemExit(f'error: --batches {text!r}: expected RES:BATCH[,RES:BATCH...], e.g. '
                     f'256:32,1024:8') from None


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--batches', default='256:32,1024:8', help='resolution:batch pairs')
  p.add_argument('--steps', type=int, default=5, help='timed calls per phase')
  p.add_argument('--settings', default=','.join(f'{d}/{q}' for d, q in SETTINGS),
                 help='dtype/precision pairs')
  p.add_argument('--time-budget', type=float, default=420.0,
                 help='seconds after which remaining settings are skipped')
  p.add_argument('--tiny', action='store_true',
                 help='16x16 networks with 32 channels, batch 8, 1 step (runs on a CPU)')
  args = p.parse_args()
  batches = {16: 8} if args.tiny else parse_batches(args.batches)
  steps = 1 if args.tiny else args.steps
  settings = [tuple(item.split('/')) for item in args.settings.split(',') if item]
  for dtype, precision in settings:
    if dtype not in ('float32', 'bfloat16') or precision not in ('highest', 'high', 'default'):
      raise SystemExit(f'error: --settings {dtype}/{precision}: dtype float32|bfloat16, '
                       f'precision highest|high|default')

  from sg2jax.cli import configure_jax
  configure_jax('highest')
  import jax
  import numpy as np
  from experiments import config_f
  from training_setup import build_phase_bench
  from sg2jax.networks.weights import count_params
  from sg2jax.sharding import make_mesh
  from sg2jax.tools.sampling import with_modconv

  device = jax.devices()[0]
  mesh = make_mesh([device])
  common = {'device': device.device_kind, 'platform': device.platform, 'jax': jax.__version__}
  print(json.dumps({'what': 'setup', **common, 'local_devices': jax.local_device_count()}),
        flush=True)
  start = time.perf_counter()
  for resolution, batch in batches.items():
    for dtype, precision in settings:
      where = {'resolution': resolution, 'batch': batch, 'dtype': dtype, 'precision': precision}
      if time.perf_counter() - start > args.time_budget:
        print(json.dumps({'what': 'skipped (time budget)', **common, **where}), flush=True)
        continue
      config = config_f.get_config()
      config.batch_size, config.batch_gpu = batch, min(4, batch)
      config.G.dtype = config.D.dtype = dtype
      if args.tiny:
        for net in (config.G, config.D):
          net.channel_base, net.channel_max = 256, 32
        config.G.z_dim = config.G.w_dim = 32
      with jax.default_matmul_precision(precision):
        bench = build_phase_bench(config, resolution, mesh=mesh)
        names = [name for name, _, interval in bench.train_step.table if interval]
        compile_s = sum(bench.compile(name) for name in names)
        flops = {name: bench.flops(name) for name in names}
        seconds = {}
        for name in names:
          bench.run(name)  # warm-up
          times = []
          for _ in range(steps):
            t = time.perf_counter()
            bench.run(name)
            times.append(time.perf_counter() - t)
          seconds[name] = statistics.median(times)
          print(json.dumps({'what': 'phase', 'phase': name, **common, **where,
                            'seconds': round(seconds[name], 5),
                            'gflop': round(flops[name] / 1e9, 3)}), flush=True)
        minibatch_s = sum(PHASE_WEIGHTS[n] * seconds[n] for n in names)
        minibatch_flops = sum(PHASE_WEIGHTS[n] * flops[n] for n in names)
        achieved = minibatch_flops / minibatch_s / 1e12
        peak = peak_tflops(device.device_kind, dtype, precision)
        memory = (device.memory_stats() or {}).get('peak_bytes_in_use')
        generator, variables = bench.exp.generator, bench.state.g_ema
        z = jax.numpy.asarray(np.random.default_rng(0).normal(size=(batch, generator.z_dim)),
                              jax.numpy.float32)
        generation = {}
        for form in ('fused', 'unfused'):
          g = with_modconv(generator, form)
          fn = jax.jit(lambda v, z, g=g: g.apply(v, z, noise_mode='const'))
          jax.block_until_ready(fn(variables, z))
          t = time.perf_counter()
          for _ in range(steps):
            out = fn(variables, z)
          jax.block_until_ready(out)
          generation[form] = round(batch * steps / (time.perf_counter() - t), 2)
      print(json.dumps({
          'what': 'minibatch', **common, **where, 'G_params': count_params(bench.state.g),
          'compile_seconds': round(compile_s, 1), 'seconds': round(minibatch_s, 5),
          'images_per_s': round(batch / minibatch_s, 2), 'tflops': round(achieved, 3),
          'mfu': round(achieved / peak, 4) if peak else None, 'peak_tflops': peak,
          'peak_memory_gib': round(memory / 2 ** 30, 2) if memory else None,
          'generate_images_per_s': generation}), flush=True)
      del bench


if __name__ == '__main__':
  main()
