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
import numpy as np


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
  from sg2jax.sharding import global_batch, make_mesh, replicated
  from sg2jax.train.build import (Experiment, build_models, check_batches,
                                  derived_hyperparameters)
  from sg2jax.train.state import init_state, reset_optimizers
  from sg2jax.train.step import TrainStep

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

  mesh = make_mesh()
  hyper = derived_hyperparameters(config, mesh.devices.size)
  generator, discriminator, g_tx, d_tx, schedule = build_models(config, args.resolution, 3, 0,
                                                                hyper)
  check_batches(schedule, mesh, config.pl_batch_shrink)
  phase = schedule.at(0)
  exp = Experiment(config, mesh, generator, discriminator, g_tx, d_tx, schedule, None, hyper)
  train_step = TrainStep(generator, discriminator, g_tx, d_tx, exp.step_config(phase), mesh)

  t = time.time()
  state = jax.jit(lambda: reset_optimizers(init_state(generator, discriminator, g_tx, d_tx, 0),
                                           g_tx, d_tx, phase.g_lr, phase.d_lr),
                  out_shardings=replicated(mesh))()
  jax.block_until_ready(state)
  init_s = time.time() - t
  rng = np.random.default_rng(0)
  host = {'image': rng.integers(0, 256, (phase.batch_size, args.resolution, args.resolution, 3),
                                dtype=np.uint8),
          'label': np.zeros((phase.batch_size, 0), np.float32)}
  batch = global_batch(host, mesh)
  lod = jax.numpy.float32(phase.lod)
  common = {'device': str(jax.devices()[0].device_kind), 'devices': jax.device_count(),
            'config': args.config, 'resolution': args.resolution, 'batch': phase.batch_size,
            'G_params': sum(x.size for x in jax.tree.leaves(state.g['params'])),
            'precision': args.precision}
  print(json.dumps({**common, 'what': 'init', 'seconds': round(init_s, 3)}))
  phase_ms = {}
  phases = train_step.phases
  if args.phases:
    unknown = set(args.phases.split(',')) - set(phases)
    if unknown:
      raise SystemExit(f'unknown phases {sorted(unknown)}; choose from {", ".join(phases)}')
    phases = {name: phases[name] for name in args.phases.split(',')}
  for name, fn in phases.items():
    t = time.time()
    state, _ = fn(state, batch, lod)
    jax.block_until_ready(state)
    compile_s = time.time() - t
    t = time.time()
    for _ in range(args.steps):
      state, _ = fn(state, batch, lod)
    jax.block_until_ready(state)
    phase_ms[name] = (time.time() - t) / args.steps * 1000
    print(json.dumps({**common, 'what': f'phase {name}', 'compile_seconds': round(compile_s, 2),
                      'ms': round(phase_ms[name], 2)}))
  # What the official PyTorch code was timed on for comparison: one G and one D step, no R1/PL.
  main_ms = sum(ms for name, ms in phase_ms.items() if name.endswith('main'))
  print(json.dumps({**common, 'what': 'G main + D main (no regularization)',
                    'ms': round(main_ms, 2),
                    'images_per_sec': round(phase.batch_size / main_ms * 1000, 3)}))
  minibatches = args.steps * 16 if args.minibatches is None else args.minibatches
  if not minibatches:
    return
  t = time.time()
  for step in range(minibatches):
    state, _ = train_step(state, batch, step, phase.lod)
  jax.block_until_ready(state)
  seconds = (time.time() - t) / minibatches
  print(json.dumps({**common, 'what': 'minibatch (lazy regularization amortized)',
                    'ms': round(seconds * 1000, 2),
                    'images_per_sec': round(phase.batch_size / seconds, 3),
                    'sec_per_kimg': round(seconds * 1000 / phase.batch_size, 2)}))


if __name__ == '__main__':
  main()
