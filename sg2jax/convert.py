"""Convert an official network pickle: `python -m sg2jax.convert --network X.pkl --out DIR`.

Reads stylegan2-ada-pytorch snapshots and TF StyleGAN2 pickles with numpy only (no torch, no
TensorFlow, no code from the pickle) and writes an orbax checkpoint of G, D and G_ema with their
configs, which every sg2jax tool loads (`--network DIR`). It first prints the SHA-256 of the file
it reads, to compare with the checksum its publisher gives (or with `sha256sum FILE`).
"""

import argparse
import hashlib
from pathlib import Path
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, configure_jax, run
from sg2jax.storage import as_path, open_read


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
  """The SHA-256 of a file's bytes, as hex (read in chunks: any size)."""
  digest = hashlib.sha256()
  with open_read(path) as f:
    while chunk := f.read(chunk_bytes):
      digest.update(chunk)
  return digest.hexdigest()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m sg2jax.convert', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', type=as_path, required=True, help='official .pkl')
  p.add_argument('--out', type=as_path, required=True, help='output checkpoint directory (new)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  add_debug_flag(p)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  configure_jax()
  from sg2jax.checkpoint import save_networks
  from sg2jax.networks.weights import count_params
  from sg2jax.formats.official import load_official_pickle

  if not args.network.is_file():
    raise FileNotFoundError(f'network file {args.network} not found')
  print(f'SHA-256 of {args.network}: {sha256_file(args.network)}', flush=True)
  networks = load_official_pickle(args.network)
  path = save_networks(args.out, networks, overwrite=args.overwrite)
  for name, net in networks.items():
    config = net.config
    print(f'{name}: {config["class"]} {config["img_resolution"]}x{config["img_resolution"]}, '
          f'{config.get("architecture")}, {count_params(net.variables):,} parameters')
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  run(main)
