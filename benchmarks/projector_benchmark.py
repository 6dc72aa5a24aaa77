"""Projector throughput: one JSON line per network, in optimization steps per second.

  python benchmarks/projector_benchmark.py                       # both networks below
  python benchmarks/projector_benchmark.py --network tiny --steps 100

Networks: `tiny` = tests/data/ada_snapshot_tiny.pkl (32x32, z = w = 32, 16-32 channels);
`f256` = config F at 256x256 (`Generator(img_resolution=256)`, channel_base 32768) with freshly
initialized weights. Each run is `sg2jax.tools.projector.project` on one target (the network's
image of w_avg), in two chunks of `--steps` steps: the first includes compilation, the second is
timed.
"""

import argparse
import json
import time
from pathlib import Path

import jax

NETWORKS = ('tiny', 'f256')
DATA = Path(__file__).parent.parent / 'tests' / 'data'


def build(name: str):
  from sg2jax.networks.weights import build_network, init_variables
  from sg2jax.networks.generator import Generator
  from sg2jax.formats.official import load_official_pickle
  if name == 'tiny':
    net = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')['G_ema']
    return build_network(net.config), net.variables
  generator = Generator(img_resolution=256)
  return generator, jax.jit(lambda key: init_variables(generator, key))(jax.random.key(0))


def benchmark(name: str, steps: int, lpips_params: dict) -> dict:
  from sg2jax.networks.weights import count_params
  from sg2jax.images import to_uint8
  from sg2jax.tools.projector import ProjectionSettings, project
  generator, variables = build(name)
  ws = generator.apply(variables, jax.numpy.zeros((1, generator.z_dim)), truncation_psi=0.0,
                       method='map')
  target = to_uint8(generator.apply(variables, ws, noise_mode='const', method='synthesize'))
  times = []
  start = time.perf_counter()
  project(generator, variables, target, settings=ProjectionSettings(num_steps=2 * steps),
          lpips_params=lpips_params, chunk_steps=steps,
          on_chunk=lambda step, lpips: times.append(time.perf_counter()))
  return {'benchmark': 'projector', 'network': name, 'resolution': generator.img_resolution,
          'params': count_params(variables), 'targets': 1, 'timed_steps': steps,
          'steps_per_s': round(steps / (times[1] - times[0]), 3),
          's_per_step': round((times[1] - times[0]) / steps, 4),
          'startup_and_first_chunk_s': round(times[0] - start, 1),
          'device': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform}


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', choices=NETWORKS, action='append',
                 help='tiny and/or f256 (default both)')
  p.add_argument('--steps', type=int, default=None,
                 help='steps per chunk (default: 50 for tiny, 3 for f256)')
  p.add_argument('--precision', choices=('highest', 'default'), default='highest')
  args = p.parse_args()

  from sg2jax.cli import configure_jax
  configure_jax(args.precision)
  from sg2jax.feature_nets.lpips import load_lpips_weights
  lpips_params = load_lpips_weights()
  for name in args.network or NETWORKS:
    steps = args.steps or {'tiny': 50, 'f256': 3}[name]
    print(json.dumps(benchmark(name, steps, lpips_params)), flush=True)


if __name__ == '__main__':
  main()
