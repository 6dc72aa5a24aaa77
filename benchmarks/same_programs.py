"""Whether two configs compile the same training programs: lowers (no compile) each phase at
each stage of both for a TPU slice and compares the StableHLO text.

  python benchmarks/same_programs.py --configs experiments/ffhq.py:config=c,experiments/ffhq.py:config=d \\
      --slice v5e-8 --resolution 1024 --settings bfloat16/default --remat blocks \\
      --out benchmarks/results/same_programs.jsonl

Equal text is the same program for the compiler, so the same memory and flops: the README's
growing table uses this for configs whose programs it did not compile itself. `same_shape`
compares the text with every numeric literal masked: programs that differ only in constants
(a learning rate, Adam's betas) hold the same buffers.
"""

import argparse
import hashlib
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

import results  # noqa: E402  (benchmarks/results.py)

# Literals in StableHLO text: dense<...> payloads and bare floats/ints in attributes.
LITERAL = re.compile(r'dense<[^>]*>|(?<![\w.%#])-?\d+\.\d+(?:[eE][-+]?\d+)?')


def program_texts(config_arg: str, slice_name: str, resolution: int, dtype: str, precision: str,
                  remat: str, names: list[str], overrides: list[str]) -> dict[str, str]:
  from sg2jax import aot, topology
  from sg2jax.cli import configure_jax, load_config, override_config
  from sg2jax.sharding import make_mesh
  from sg2jax.train.programs import training_programs
  slice_ = topology.parse_slice(slice_name)
  config = override_config(load_config(config_arg, None), overrides)
  config.resolution = resolution
  config.batch_size = config.batch_gpu * slice_.chips
  config.G.dtype = config.D.dtype = dtype
  config.precision = precision
  config.remat = remat
  configure_jax(precision, compile_cache='none')
  mesh = make_mesh(topology.compile_only_devices(slice_))
  shape = aot.data_shape(config)
  exp = aot.build_for(config, mesh, shape)
  return {p.name: p.lower().as_text() for p in
          training_programs(exp, shape[1], shape[2], 1, names=names)}


def digest(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--configs', required=True, help='two configs, comma-separated')
  p.add_argument('--slice', default='v5e-8')
  p.add_argument('--resolution', type=int, default=1024)
  p.add_argument('--settings', default='bfloat16/default')
  p.add_argument('--remat', default='none')
  p.add_argument('--programs', default='g_main,g_reg,d_main,d_reg')
  p.add_argument('--out', default=str(results.RESULTS / 'same_programs.jsonl'))
  args, overrides = p.parse_known_args()
  record = results.provenance()
  record['run'] = record['date']
  from sg2jax import topology
  topology.prepare_environment()
  first, second = args.configs.split(',')
  dtype, precision = args.settings.split('/')
  names = args.programs.split(',')
  texts = [program_texts(c, args.slice, args.resolution, dtype, precision, args.remat, names,
                         overrides) for c in (first, second)]
  rows = []
  for name in sorted(set(texts[0]) | set(texts[1])):
    a, b = texts[0].get(name), texts[1].get(name)
    row = {'program': name, 'configs': [first, second], 'slice': args.slice,
           'resolution_setting': args.resolution, 'dtype': dtype, 'precision': precision,
           'remat': args.remat, 'in_both': a is not None and b is not None,
           'identical': a is not None and a == b,
           'same_shape': a is not None and b is not None
                         and LITERAL.sub('#', a) == LITERAL.sub('#', b),
           'sha256': [digest(t) if t is not None else None for t in (a, b)]}
    rows.append(row)
    print(row)
  results.append(args.out, ({**record, **row} for row in rows))


if __name__ == '__main__':
  main()
