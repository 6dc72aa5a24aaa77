"""Training-step throughput: one JSON line per measured phase and one for a whole minibatch.

  python benchmarks/train_benchmark.py --config experiments/config_f.py --resolution 256 \
      --batch 32 --steps 10

Networks and Adam exactly as the config builds them, on random uint8 images (no input
pipeline), sharded over all local devices. Compilation is timed separately from the steps.
"""

import argparse
import json
import time

import jax


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', default='experiments/config_f.py')
  p.add_argument('--resolution', type=int, default=256)
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--batch-gpu', type=int, default=4)
  p.add_argument('--steps', type=int, default=10, help='timed steps per phase')
  p.add_argument('--minibatches', type=int, default=None,
                 help='timed whole minibatches, lazy regularization included (default 16 x '
                      '--steps; 0 skips them)')
  p.add_argument('--precision', default='default')
  p.add_argument('--phases', default=None,
                 help='comma-separated phases to time (default all: g_main,g_reg,d_main,d_reg,ema)')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='config override, e.g. --set G.channel_max=64')
  args = p.parse_args()

  from sg2jax.cli import configure_jax
  configure_jax(args.precision)
  import importlib.util
  from training_setup import build_phase_bench
  from sg2jax.networks.weights import count_params
  from sg2jax.train.step import PHASE_NAMES, due

  path, _, arg = args.config.partition(':')
  spec = importlib.util.spec_from_file_location('config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  config.batch_size, config.batch_gpu = args.batch, args.batch_gpu
  for item in args.set:
    key, value = item.split('=', 1)
    node = config
    *parents, leaf = key.split('.')
    for parent in parents:
      node = node[parent]
    node[leaf] = type(node[leaf])(value) if node[leaf] is not None else value

  t = time.time()
  bench = build_phase_bench(config, args.resolution)
  jax.block_until_ready(bench.state)
  init_s = time.time() - t
  batch_size = bench.train_step.cfg.batch_size
  common = {'device': str(jax.devices()[0].device_kind), 'devices': jax.device_count(),
            'config': args.config, 'resolution': args.resolution, 'batch': batch_size,
            'G_params': count_params(bench.state.g), 'precision': args.precision}
  print(json.dumps({**common, 'what': 'init', 'seconds': round(init_s, 3)}))
  phases = [name for name, _, interval in bench.train_step.table if interval]
  if args.phases:
    unknown = set(args.phases.split(',')) - set(PHASE_NAMES)
    if unknown:
      raise SystemExit(f'unknown phases {sorted(unknown)}; choose from {", ".join(PHASE_NAMES)}')
    phases = [name for name in phases if name in args.phases.split(',')]
  phase_ms = {}
  for name in phases:
    t = time.time()
    bench.compile(name)
    bench.run(name)
    compile_s = time.time() - t
    t = time.time()
    for _ in range(args.steps):
      bench.run(name)
    phase_ms[name] = (time.time() - t) / args.steps * 1000
    print(json.dumps({**common, 'what': f'phase {name}', 'compile_seconds': round(compile_s, 2),
                      'ms': round(phase_ms[name], 2)}))
  # What the official PyTorch code was timed on for comparison: one G and one D step, no R1/PL.
  main_ms = sum(ms for name, ms in phase_ms.items() if name.endswith('main'))
  print(json.dumps({**common, 'what': 'G main + D main (no regularization)',
                    'ms': round(main_ms, 2),
                    'images_per_sec': round(batch_size / main_ms * 1000, 3)}))
  minibatches = args.steps * 16 if args.minibatches is None else args.minibatches
  if not minibatches:
    return
  t = time.time()
  for step in range(minibatches):
    for name in due(bench.train_step.table, step):
      bench.run(name)
  seconds = (time.time() - t) / minibatches
  print(json.dumps({**common, 'what': 'minibatch (lazy regularization amortized)',
                    'ms': round(seconds * 1000, 2),
                    'images_per_sec': round(batch_size / seconds, 3),
                    'sec_per_kimg': round(seconds * 1000 / batch_size, 2)}))


if __name__ == '__main__':
  main()
