"""Export for the official tools: `python -m sg2jax.export --network RUN --out net.pkl`.

Writes G, D and G_ema as a TF StyleGAN2 network pickle (the tuple G, D, Gs of TF variables and
static kwargs, numpy arrays only, no code), the format the official PyTorch code converts on
loading (`legacy.load_network_pkl`): stylegan2-ada-pytorch's generate.py, projector.py,
calc_metrics.py and `train.py --resume` open it as they open NVIDIA's TF pickles. --network is a
training workdir (its newest checkpoint), a folder written by `python -m sg2jax.convert`, or an
official pickle. Networks the format cannot express (configs A-D, bfloat16 compute, ...) are
refused with the reason. sg2jax's own tools read the file back when the networks are
unconditional, with noise and the default w_avg_beta 0.995 (`conv_clamp` they read as none).
"""

import argparse
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, configure_jax, run
from sg2jax.storage import as_path


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m sg2jax.export', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', type=as_path, required=True,
                 help='training workdir, sg2jax.convert folder or official .pkl')
  p.add_argument('--out', type=as_path, required=True, help='the .pkl to write (new)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  add_debug_flag(p)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  configure_jax()
  from sg2jax.checkpoint import load_networks
  from sg2jax.formats.tf_export import TF_NAMES, check_output, write_tf_pickle
  from sg2jax.networks.weights import count_params

  check_output(args.out, args.overwrite)  # before the (possibly long) load
  networks = load_networks(args.network)
  path = write_tf_pickle(networks, args.out, overwrite=args.overwrite)
  for name, tf_name in TF_NAMES.items():
    config = networks[name].config
    print(f'{name} -> {tf_name}: {config["class"]} {config["img_resolution"]}x'
          f'{config["img_resolution"]}, {config.get("architecture")}, '
          f'{count_params(networks[name].variables):,} parameters')
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  run(main)
