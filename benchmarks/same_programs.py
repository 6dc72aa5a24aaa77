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
import tpu_compile  # noqa: E402

# Literals in StableHLO text: dense<...> payloads and bare floats/ints in attributes.
LITERAL = re.compile(r'dense<[^>]*>|(?<![\w.%#])-?\d+\.\d+(?:[eE][-+]?\d+)?')


def prepared(config_arg: str, overrides: list[str], slice_name: str, resolution: int, dtype: str,
             precision: str, remat: str):
  """The config `tpu_compile.py` compiles for these settings."""
  from sg2jax import topology
  from sg2jax.cli import load_config, override_config
  return tpu_compile.compiled_config(override_config(load_config(config_arg, None), overrides),
                                     topology.parse_slice(slice_name).chips, resolution, dtype,
                                     precision, remat)


def program_texts(config, slice_name: str, names: list[str]) -> dict[str, str]:
  """{program name: its StableHLO text} of `config`'s training phases lowered for the slice."""
  from sg2jax import aot, topology
  from sg2jax.sharding import make_mesh
  from sg2jax.train.programs import training_programs
  mesh = make_mesh(topology.compile_only_devices(topology.parse_slice(slice_name)))
  shape = aot.data_shape(config)
  exp = aot.build_for(config, mesh, shape)
  return {p.name: p.lower().as_text() for p in
          training_programs(exp, shape[1], shape[2], 1, names=names)}


def digest(text: str) -> str:
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def compare(first: dict[str, str], second: dict[str, str]) -> list[dict]:
  """Per program name of either: in both, identical text, identical but for literals."""
  rows = []
  for name in sorted(set(first) | set(second)):
    a, b = first.get(name), second.get(name)
    both = a is not None and b is not None
    rows.append({'program': name, 'in_both': both, 'identical': both and a == b,
                 'same_shape': both and LITERAL.sub('#', a) == LITERAL.sub('#', b),
                 'sha256': [None if t is None else digest(t) for t in (a, b)]})
  return rows


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
  texts = [program_texts(prepared(c, overrides, args.slice, args.resolution, dtype, precision,
                                  args.remat), args.slice, args.programs.split(','))
           for c in (first, second)]
  tags = {'configs': [first, second], 'slice': args.slice, 'resolution_setting': args.resolution,
          'dtype': dtype, 'precision': precision, 'remat': args.remat}
  rows = [{**tags, **row} for row in compare(*texts)]
  for row in rows:
    print(row)
  results.append(args.out, ({**record, **row} for row in rows))


if __name__ == '__main__':
  main()
