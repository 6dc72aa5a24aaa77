"""sg2jax.export's pickles opened by the official PyTorch code, outputs compared with sg2jax's.

  python benchmarks/check_export_with_official.py --peer /path/to/stylegan2-ada-pytorch \
      --peer-python /path/to/torchvenv/bin/python [--network SOURCE ...] [--tolerance 1e-4]

Every case is a set of networks G, D, G_ema. This script exports each with sg2jax's writer
(`sg2jax.formats.tf_export.write_tf_pickle`, what `python -m sg2jax.export` runs) into a
temporary folder and computes with sg2jax, from the networks it exported: G_ema and G images of
seeds 0-3 (`RandomState(seed).randn`, as the official generate.py) at `noise_mode='const'`, psi 1
and 0.7, and D's logits on the G_ema images (with one-hot labels 0-3 for conditional networks).
Then it runs itself under --peer-python with `--worker`, which imports the official code from
--peer (never copied here), opens every pickle with `legacy.load_network_pkl` and computes the
same with `G_ema(z, c, truncation_psi=psi, noise_mode='const')`, `G(...)` and `D(img, c)` in
float32 on the CPU. Where sg2jax's own TF reader takes the file, the networks it reads back are
run too.

Output, JSON lines: one per case (the official loader's kwargs that matter, max |official -
sg2jax| per output and max |sg2jax| for scale, max |sg2jax read back - sg2jax| or why it was
not read back), then a summary.
Exit status 1 if an official difference exceeds --tolerance (default 1e-4, the tolerance of the
goldens in tests/data: float32 summation order) or the official code fails.

Cases: the --network sources (anything `sg2jax.checkpoint.load_networks` reads: an official
pickle, a `sg2jax.convert` folder, a training workdir), or by default the tiny ADA and TF snapshots
of tests/data, the tiny training run of tests/data/old_format, and random networks at 16x16 that
cover what those do not: G orig / resnet and D skip / orig, a conditional pair (with
`layer_features`, `embed_features` and `cmap_dim` set), `conv_clamp` 0.5 (clamping nearly every
layer), and one with no noise, `w_avg_beta` 0.9, one image channel, the FIR filter [1, 2, 1],
minibatch-stddev groups of 2 with 2 features and groups of the whole batch.

The official side needs, outside this project, a checkout of
https://github.com/NVlabs/stylegan2-ada-pytorch (tested at d72cc7d) and a python with torch,
numpy, click and requests (what legacy.py and dnnlib import). To try the pickles under an older
numpy, pass as --peer-python a script that runs that python with the older numpy first on
PYTHONPATH.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / 'tests' / 'data'
SEEDS = (0, 1, 2, 3)
PSIS = (1.0, 0.7)


# ----------------------------------------------------------------------------------------------
# The official side (runs under --peer-python: standard library, numpy, torch, the official code).

def worker(peer: str, folder: Path) -> None:
  """Opens every `<case>.pkl` in `folder` with the official loader and writes `<case>.official.npz`
  with its outputs on the inputs of `<case>.inputs.npz`; prints one JSON line per case."""
  import torch
  sys.path.insert(0, os.path.abspath(peer))
  import legacy  # the official converter

  torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
  for case in json.loads((folder / 'cases.json').read_text()):
    record = {'case': case}
    try:
      with open(folder / f'{case}.pkl', 'rb') as f:
        data = legacy.load_network_pkl(f)
      inputs = dict(np.load(folder / f'{case}.inputs.npz'))
      z = torch.from_numpy(inputs['z'])
      c = torch.from_numpy(inputs['c']) if inputs['c'].size else None
      out = {}
      with torch.no_grad():
        for name in ('G_ema', 'G'):
          for psi in PSIS:
            img = data[name](z, c, truncation_psi=psi, noise_mode='const')
            out[f'{name} psi={psi}'] = img.numpy()
        out['D'] = data['D'](torch.from_numpy(inputs['img']), c).numpy()
      np.savez(folder / f'{case}.official.npz', **out)
      g, d = data['G_ema'].init_kwargs, data['D'].init_kwargs
      record['official'] = {
          'G': {'architecture': g.synthesis_kwargs.architecture,
                'conv_clamp': g.synthesis_kwargs.conv_clamp, 'c_dim': g.c_dim,
                'use_noise': g.synthesis_kwargs.use_noise,
                'w_avg_beta': g.mapping_kwargs.w_avg_beta,
                'num_fp16_res': g.synthesis_kwargs.num_fp16_res},
          'D': {'architecture': d.architecture, 'conv_clamp': d.conv_clamp,
                'mbstd_group_size': d.epilogue_kwargs.mbstd_group_size,
                'mbstd_num_channels': d.epilogue_kwargs.mbstd_num_channels,
                'cmap_dim': d.cmap_dim},
          'extra_keys': sorted(k for k in data if k not in ('G', 'D', 'G_ema')),
      }
    except Exception as e:  # reported, and the script fails
      record['error'] = f'{type(e).__name__}: {e}'
    print(json.dumps(record), flush=True)
  print(json.dumps({'torch': torch.__version__, 'numpy': np.__version__}), flush=True)


# ----------------------------------------------------------------------------------------------
# The sg2jax side.

def random_networks(g_config: dict, d_config: dict, seed: int) -> dict:
  """G, D and G_ema of the given configs with N(0, 1) variables (affine biases 1 + N(0, 0.2))."""
  import jax

  from sg2jax.networks.weights import NetworkWeights, abstract_variables, build_network
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    value = rng.normal(size=x.shape).astype(np.float32)
    if path[-1].key == 'bias' and path[-2].key == 'affine':
      value = (1 + 0.2 * value).astype(np.float32)
    return value

  out = {}
  for name, config in (('G', g_config), ('D', d_config), ('G_ema', g_config)):
    config = dict(config, **{'class': 'Discriminator' if name == 'D' else 'Generator'})
    variables = jax.tree_util.tree_map_with_path(leaf, abstract_variables(build_network(config)))
    out[name] = NetworkWeights(config, variables)
  return out


def synthetic_cases() -> dict:
  small = dict(img_resolution=16, channel_base=256, channel_max=32)
  g = dict(small, z_dim=16, w_dim=16, mapping_layers=2)
  return {
      'random_orig_G_skip_D': random_networks(dict(g, architecture='orig'),
                                              dict(small, architecture='skip'), 1),
      'random_resnet_G_orig_D': random_networks(dict(g, architecture='resnet'),
                                                dict(small, architecture='orig'), 2),
      'random_conditional': random_networks(
          dict(g, c_dim=4, embed_features=8, layer_features=24),
          dict(small, c_dim=4, cmap_dim=8, mapping_layers=2), 3),
      'random_conv_clamp_0.5': random_networks(
          dict(g, conv_clamp=0.5), dict(small, conv_clamp=0.5, mbstd_group_size=None), 4),
      'random_variants': random_networks(
          dict(g, use_noise=False, w_avg_beta=0.9, img_channels=1, resample_filter=[1, 2, 1],
               mapping_lr_multiplier=0.1),
          dict(small, img_channels=1, resample_filter=[1, 2, 1], mbstd_group_size=2,
               mbstd_num_channels=2), 5),
  }


_PROGRAMS = {}


def _program(config: dict):
  """One jitted program per network config: a generator's images at every psi, or D's logits."""
  import jax

  from sg2jax.networks.weights import build_network, is_generator
  key = json.dumps(config, sort_keys=True)
  if key not in _PROGRAMS:
    net = build_network(config)
    if is_generator(net):
      fn = lambda v, z, c: [net.apply(v, z, c, truncation_psi=psi, noise_mode='const')
                            for psi in PSIS]
    else:
      fn = net.apply
    _PROGRAMS[key] = jax.jit(fn)
  return _PROGRAMS[key]


def sg2jax_outputs(networks: dict) -> tuple[dict, dict]:
  """(inputs, outputs): z, c, img and the images / logits of `networks` (NCHW, as torch)."""
  import jax.numpy as jnp

  from sg2jax.tools.sampling import z_from_seed
  config = networks['G_ema'].config
  z_dim, c_dim = config.get('z_dim', 512), config.get('c_dim', 0)
  z = np.concatenate([z_from_seed(s, z_dim) for s in SEEDS])
  c = np.eye(c_dim, dtype=np.float32)[np.arange(len(SEEDS)) % c_dim] if c_dim \
      else np.zeros((0,), np.float32)
  c_arg = jnp.asarray(c) if c.size else None
  out = {}
  for name in ('G_ema', 'G'):
    images = _program(networks[name].config)(networks[name].variables, z, c_arg)
    out.update({f'{name} psi={psi}': np.asarray(x) for psi, x in zip(PSIS, images)})
  img = out['G_ema psi=1.0']
  out['D'] = np.asarray(_program(networks['D'].config)(networks['D'].variables, img, c_arg))
  nchw = lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x
  return ({'z': z, 'c': c, 'img': nchw(img)}, {k: nchw(v) for k, v in out.items()})


def source_cases(sources: list[str], folder: Path) -> dict:
  from sg2jax.checkpoint import load_networks
  if sources:
    return {Path(s).name.replace('.pkl', ''): load_networks(s) for s in sources}
  run = folder / 'training_run'
  shutil.copytree(DATA / 'old_format' / 'train_run_checkpoints', run / 'checkpoints')
  return {'ada_snapshot_tiny': load_networks(DATA / 'ada_snapshot_tiny.pkl'),
          'tf_snapshot_tiny': load_networks(DATA / 'tf_snapshot_tiny.pkl'),
          'training_run_8x8': load_networks(run), **synthetic_cases()}


def max_differences(got: dict, want: dict) -> dict:
  return {k: float(np.abs(np.asarray(got[k], np.float64) - want[k]).max()) for k in want}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--peer', required=True, help='checkout of NVlabs/stylegan2-ada-pytorch')
  p.add_argument('--peer-python', default=sys.executable, help='a python with torch')
  p.add_argument('--network', action='append', default=[],
                 help='a network source to check (repeatable); default: the built-in cases')
  p.add_argument('--tolerance', type=float, default=1e-4)
  p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  p.add_argument('--folder', type=Path, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    worker(args.peer, args.folder)
    return 0
  if not (Path(args.peer) / 'legacy.py').is_file():
    raise SystemExit(f'error: --peer {args.peer} is not a checkout of NVlabs/stylegan2-ada-pytorch '
                     f'(no legacy.py)')

  sys.path.insert(0, str(ROOT))
  from sg2jax.cli import configure_jax
  configure_jax()
  from sg2jax.formats.official import load_official_pickle
  from sg2jax.formats.tf_export import write_tf_pickle

  records, failed = [], False
  with tempfile.TemporaryDirectory(prefix='sg2jax-export-check-') as tmp:
    folder = Path(tmp)
    cases = source_cases(args.network, folder)
    expected = {}
    for case, networks in cases.items():
      path = write_tf_pickle(networks, folder / f'{case}.pkl')
      inputs, outputs = sg2jax_outputs(networks)
      np.savez(folder / f'{case}.inputs.npz', **inputs)
      expected[case] = outputs
      record = {'case': case, 'bytes': path.stat().st_size}
      try:
        record['readback_max_abs_diff'] = max_differences(
            sg2jax_outputs(load_official_pickle(path))[1], outputs)
      except ValueError as e:
        record['readback'] = f'not read by sg2jax: {e}'
      records.append(record)
    (folder / 'cases.json').write_text(json.dumps(list(cases)))
    start = time.perf_counter()
    done = subprocess.run([args.peer_python, __file__, '--worker', '--peer', args.peer,
                           '--folder', str(folder)], capture_output=True, text=True, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
    if done.returncode or not lines:
      sys.stderr.write(done.stderr[-4000:])
      raise SystemExit(f'error: the official side failed (exit status {done.returncode})')
    official = {line['case']: line for line in lines if 'case' in line}
    for record in records:
      case = record['case']
      record.update({k: v for k, v in official[case].items() if k != 'case'})
      if 'error' in record:
        failed = True
      else:
        with np.load(folder / f'{case}.official.npz') as got:
          diffs = max_differences(dict(got), expected[case])
        record['official_max_abs_diff'] = diffs
        record['max_abs_output'] = {k: float(np.abs(v).max()) for k, v in expected[case].items()}
        failed |= max(diffs.values()) > args.tolerance
      print(json.dumps(record), flush=True)
  worst = max((max(r['official_max_abs_diff'].values()) for r in records
               if 'official_max_abs_diff' in r), default=float('nan'))
  print(json.dumps({'summary': 'FAIL' if failed else 'OK', 'cases': len(records),
                    'worst_official_max_abs_diff': worst, 'tolerance': args.tolerance,
                    'official_seconds': round(time.perf_counter() - start, 1), **lines[-1]}))
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
