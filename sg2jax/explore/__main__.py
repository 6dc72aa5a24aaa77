"""Explore a network in the browser: `python -m sg2jax.explore --network NETWORK [--port 8000]`.

Serves one page on http://127.0.0.1:PORT/ to move through the latent space (seeds and the points
between them, animation), change truncation and noise, mix styles layer by layer, follow SeFa and
GANSpace directions on chosen layers, look at any layer of the synthesis network, and capture an
image with the `python -m sg2jax.generate` command that renders the same PNG.

The server binds 127.0.0.1 unless --host says otherwise: anyone who can reach the port can use
it (and make it compute). It reads only the network it was started with and the projected w
files under --projected-dir.
"""

import argparse
import sys
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, configure_jax, run

LOOPBACK = '127.0.0.1'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  from sg2jax.tools.directions import DEFAULT_GANSPACE_SAMPLES
  p = argparse.ArgumentParser(prog='python -m sg2jax.explore', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--network', required=True,
                 help='official .pkl, a directory written by sg2jax.convert, or a training '
                      'workdir (as sg2jax.generate takes it)')
  p.add_argument('--port', type=int, default=8000, help='default 8000; 0 picks a free port')
  p.add_argument('--host', default=LOOPBACK,
                 help=f'address to listen on (default {LOOPBACK}: this machine only)')
  p.add_argument('--projected-dir', default=None, metavar='DIR',
                 help='folder of projected_w.npz files (from sg2jax.project) the page may show')
  p.add_argument('--ganspace-samples', type=int, default=DEFAULT_GANSPACE_SAMPLES, metavar='N',
                 help=f'mapped ws the GANSpace directions are the PCA of (default '
                      f'{DEFAULT_GANSPACE_SAMPLES}; computed on first use and cached beside the '
                      f'network)')
  p.add_argument('--precision', choices=('highest', 'default'), default='highest',
                 help='float32 conv precision on GPU/TPU (highest = the images generate writes)')
  p.add_argument('--modconv', choices=('auto', 'fused', 'unfused'), default='auto',
                 help='modulated convolutions fused or not (as sg2jax.generate)')
  add_debug_flag(p)
  return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  if not 0 <= args.port < 65536:
    raise ValueError(f'--port {args.port} is not a port number (0-65535)')
  configure_jax(args.precision)
  from sg2jax.explore.server import is_loopback, make_server
  if not is_loopback(args.host):
    print(f'warning: listening on {args.host}: anyone who can reach this address and port can '
          f'use the explorer and make this machine compute', file=sys.stderr)
  server = make_server(args.network, args.host, args.port, args.projected_dir, args.modconv,
                       args.ganspace_samples)
  host, port = server.server_address[:2]
  print(f'{server.generator_name} of {args.network}: http://{host}:{port}/ (Ctrl-C stops)',
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == '__main__':
  run(main)
