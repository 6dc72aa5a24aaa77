"""Does training wait for a checkpoint save? Step time while an asynchronous save of the whole
training state is in flight, against step time without one.

  python benchmarks/save_benchmark.py --resolution 64 --batch 4 --steps 6 --dest DIR_OR_GS
  python benchmarks/save_benchmark.py --resolution 64 --batch 4 --steps 6 --emulator

A "step" is G main + D main (no regularization) of the config's networks (config F by default)
on a random batch. The state is what training saves (G, D, G_ema, both Adam states). `save()`
returns once the arrays are copied to host memory (`blocking_ms`); the writing (to a folder, or to
Cloud Storage through TensorStore) goes on in a background thread while steps run. With
`--emulator` the destination is a Cloud Storage emulator on 127.0.0.1 in this process (whose
Python HTTP server shares the host's cores with the steps; a real bucket does not). Appends one
JSON line with provenance to benchmarks/results/save_benchmark.jsonl.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / 'tests'))


def step_ms(bench, names) -> float:
  t = time.perf_counter()
  for name in names:
    bench.run(name)
  return (time.perf_counter() - t) * 1000


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', default='experiments/config_f.py')
  p.add_argument('--resolution', type=int, default=64)
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--batch-gpu', type=int, default=4)
  p.add_argument('--steps', type=int, default=6, help='timed steps without a save')
  p.add_argument('--dest', default=None, help='checkpoint folder or gs:// path (default: temp)')
  p.add_argument('--emulator', action='store_true', help='save to a Cloud Storage emulator')
  args = p.parse_args()

  from sg2jax.cli import configure_jax
  configure_jax('default')
  import jax
  from results import RESULTS, append, provenance
  from training_setup import build_phase_bench
  from sg2jax.checkpoint import TrainCheckpoints
  from sg2jax.networks.weights import count_params

  emulator = None
  if args.emulator:
    from gcs_emulator import Emulator
    emulator = Emulator().start()
    dest = emulator.gs('bench/run')
  else:
    dest = args.dest or tempfile.mkdtemp(prefix='sg2jax-save-bench-')

  spec = importlib.util.spec_from_file_location('config', args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.batch_size, config.batch_gpu = args.batch, args.batch_gpu
  bench = build_phase_bench(config, args.resolution)
  names = ('g_main', 'd_main')
  for name in names:
    bench.compile(name)
  step_ms(bench, names)  # warm-up
  without = [step_ms(bench, names) for _ in range(args.steps)]

  state_bytes = sum(x.nbytes for x in jax.tree.leaves(bench.state))
  checkpoints = TrainCheckpoints(dest, keep=2)
  t = time.perf_counter()
  checkpoints.save(1, bench.state, {'step': 1})
  blocking_ms = (time.perf_counter() - t) * 1000
  during = []
  while checkpoints.manager.is_saving_in_progress():
    during.append(step_ms(bench, names))
  save_s = time.perf_counter() - t
  after = [step_ms(bench, names) for _ in range(args.steps)]
  checkpoints.close()
  if emulator is not None:
    emulator.stop()

  row = {**provenance(), 'what': 'async checkpoint save vs training steps',
         'config': args.config, 'resolution': args.resolution,
         'batch': bench.train_step.cfg.batch_size,
         'device': str(jax.devices()[0].device_kind), 'devices': jax.device_count(),
         'G_params': count_params(bench.state.g), 'D_params': count_params(bench.state.d),
         'state_mb': round(state_bytes / 2**20, 1),
         'destination': 'Cloud Storage emulator (in-process)' if args.emulator else (
             'gs://' if dest.startswith('gs://') else 'local folder'),
         'step_ms_without_save': round(statistics.median(without + after), 1),
         'step_ms_during_save': [round(ms, 1) for ms in during],
         'steps_during_save': len(during), 'save_blocking_ms': round(blocking_ms, 1),
         'save_seconds': round(save_s, 2)}
  print(json.dumps(row))
  append(RESULTS / 'save_benchmark.jsonl', [row])


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
  main()
