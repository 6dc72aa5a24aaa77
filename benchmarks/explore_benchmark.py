"""Explorer frame times: milliseconds per rendered frame, one JSON line per network and view,
appended to benchmarks/results/explore.jsonl (with command, commit, date, machine and run id;
`benchmarks/readme_tables.py` makes the README's table from the newest run).

  python benchmarks/explore_benchmark.py                       # demo and f256
  python benchmarks/explore_benchmark.py --network demo --frames 50

Networks, with random weights (frame times do not depend on the values): `demo` = the generator
of experiments/demo.py (32x32, 16-32 channels, 2 mapping layers); `f256` = config F at 256x256
(`Generator(img_resolution=256)`). Each frame is `Explorer.render` (`sg2jax.tools.explorer`: the
compiled program, the copy to the host and the uint8 conversion) at a new latent position between
seeds, psi 0.7, with style mixing on layers 0-3 and one SeFa direction on layers 0-5, as a user
dragging on the page gets them; `with_png_ms_per_frame` adds the PNG encoding the server does.
Views: `image` (the full image) and `preview` (the lower-resolution image the page shows while
dragging: R/2, or R/4 from 128x128 up). The
first frame of a view compiles it (`compile_s`); the median of the next `--frames` is reported.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import results  # noqa: E402  (benchmarks/results.py)

NETWORKS = ('demo', 'f256')


def build(name: str):
  """(generator, random weights: `networks.weights.random_variables`, since the network's
  initializer would take longer to compile than the benchmark takes)."""
  from experiments import demo
  from sg2jax.networks.generator import Generator
  from sg2jax.networks.weights import random_variables
  from sg2jax.train.build import build_networks
  if name == 'demo':
    config = demo.get_config()
    generator = build_networks(config, config.resolution, 3, 0)[0]
  else:
    generator = Generator(img_resolution=256)
  return generator, random_variables(generator)


def benchmark(name: str, frames: int) -> list[dict]:
  import jax
  from sg2jax.explore.server import encode_png
  from sg2jax.networks.weights import count_params
  from sg2jax.tools.directions import parse_direction
  from sg2jax.tools.explorer import Controls, Explorer
  from sg2jax.tools.sampling import with_modconv
  generator, variables = build(name)
  generator = with_modconv(generator)
  explorer = Explorer(generator, variables, f'benchmark-{name}')
  rows = []
  for view in ('image', 'preview'):
    times, total_times = [], []
    for frame in range(frames + 1):
      controls = Controls(x=3 + 0.1 * frame, y=0.25, psi=0.7, mix_seed=9, mix_layers=(0, 1, 2, 3),
                          directions=(parse_direction('sefa:0'),), strengths=(2.0,),
                          direction_layers=tuple(range(6)),
                          preview=explorer.default_preview if view == 'preview' else 0)
      start = time.perf_counter()
      rendered = explorer.render(controls)
      encode_png(rendered.image)
      if frame == 0:
        compile_s = time.perf_counter() - start
        continue
      times.append(rendered.render_ms)
      total_times.append((time.perf_counter() - start) * 1e3)
    rows.append({
        'benchmark': 'explore', 'network': name, 'resolution': generator.img_resolution,
        'params': count_params(variables), 'view': view,
        'shape': list(rendered.image.shape), 'frames': frames,
        'ms_per_frame': round(statistics.median(times), 1),
        'with_png_ms_per_frame': round(statistics.median(total_times), 1),
        'compile_s': round(compile_s, 1),
        # Other jobs share this machine's cores: the 1-minute load average when the view finished.
        'load_average_1min': round(os.getloadavg()[0], 2),
        'modconv': 'fused' if generator.fused_modconv else 'unfused',
        'device': jax.devices()[0].device_kind, 'platform': jax.devices()[0].platform})
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', choices=NETWORKS, action='append',
                 help='demo and/or f256 (default both)')
  p.add_argument('--frames', type=int, default=None,
                 help='timed frames per view (default: 50 for demo, 10 for f256)')
  p.add_argument('--out', default=str(results.RESULTS / 'explore.jsonl'),
                 help='results file (the README table explore_frames is made from it)')
  args = p.parse_args()

  from sg2jax.cli import configure_jax
  configure_jax('highest')  # as python -m sg2jax.explore
  record = results.Recorder(args.out)
  for name in args.network or NETWORKS:
    for row in benchmark(name, args.frames or {'demo': 50, 'f256': 10}[name]):
      record(row)


if __name__ == '__main__':
  main()
