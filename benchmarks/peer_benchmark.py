"""sg2jax against the official PyTorch code: every training phase timed on both, interleaved.

  python benchmarks/peer_benchmark.py --peer /path/to/stylegan2-ada-pytorch \
      --peer-python /path/to/torchvenv/bin/python --resolution 64 --batch 8 --repeats 5
  # tiny networks, for a quick check:
  python benchmarks/peer_benchmark.py --peer PEER --peer-python PYTHON --resolution 16 \
      --batch 4 --channel-base 256 --channel-max 32 --repeats 2

Both sides train the same StyleGAN2 config-F setup in float32 on this machine, one at a time:
sg2jax as benchmarks/train_benchmark.py builds it (experiments/config_f.py, random uint8 batch),
the official code in a subprocess, benchmarks/peer_torch_worker.py, that imports it from --peer
(Generator 'skip', Discriminator 'resnet', StyleGAN2Loss, Adam with the lazy-regularization
adjustment, G_ema, as train.py cfg 'stylegan2' with --fp32 and training/training_loop.py set
them up; batch split in --batch-gpu rounds). Each phase (g_main g_reg d_main d_reg ema) is warmed
up on both sides (sg2jax's first call compiles: compile_seconds), then timed --repeats times,
sg2jax and official alternately, which side goes first alternating per repeat.

Output, JSON lines: one 'setup' line (versions, threads, parameter counts of both sides), one
line per phase (min and median seconds of both sides, ratios sg2jax/official, XLA's GFLOP of the
sg2jax phase and the GFLOP/s it achieved, compile seconds), and one 'minibatch' line: the
medians amortized as the loops run them, g_main + d_main + g_reg/4 + d_reg/16 (+ ema), seconds
and images/s of both sides.

The official side needs, outside this project (nothing of it is committed or a dependency of
sg2jax; its code is under NVIDIA's non-commercial license and only imported at run time):
  git clone https://github.com/NVlabs/stylegan2-ada-pytorch PEER      # tested at d72cc7d
  python3 -m venv TORCHVENV && TORCHVENV/bin/pip install torch==2.13.0 numpy requests
(the official dnnlib imports requests, and torch.utils.cpp_extension imports setuptools, which
a Python <= 3.11 venv has; on newer Pythons also `pip install setuptools`). On a machine without
CUDA the official code runs its reference implementations (_upfirdn2d_ref, _bias_act_ref,
torch.nn.functional.conv2d); it runs unmodified on torch 2.13.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax

PHASES = ('g_main', 'g_reg', 'd_main', 'd_reg', 'ema')
PEER_FILES = ('train.py', 'training/training_loop.py', 'training/networks.py',
              'training/loss.py', 'torch_utils/ops/upfirdn2d.py', 'dnnlib/util.py')
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'peer_torch_worker.py')


def check_peer(peer: str, python: str) -> str:
  """One-line SystemExit unless `peer` is a stylegan2-ada-pytorch checkout and `python` imports
  torch and numpy; returns that torch's version."""
  missing = [f for f in PEER_FILES if not os.path.isfile(os.path.join(peer, f))]
  if missing:
    raise SystemExit(f'error: --peer {peer} is not a checkout of NVlabs/stylegan2-ada-pytorch '
                     f'(no {missing[0]}); git clone '
                     f'https://github.com/NVlabs/stylegan2-ada-pytorch')
  try:
    out = subprocess.run([python, '-c', 'import numpy, torch; print(torch.__version__)'],
                         capture_output=True, text=True, timeout=300, check=False)
  except OSError as e:
    raise SystemExit(f'error: --peer-python {python} cannot be run: {e}') from None
  if out.returncode:
    last = (out.stderr.strip().splitlines() or ['no message'])[-1]
    raise SystemExit(f'error: --peer-python {python} cannot import torch and numpy: {last}')
  return out.stdout.strip()


class Worker:
  """benchmarks/peer_torch_worker.py in a subprocess: one JSON line per command."""

  def __init__(self, python, args, log):
    cmd = [python, WORKER, '--peer', args.peer, '--resolution', str(args.resolution),
           '--batch', str(args.batch), '--batch-gpu', str(args.batch_gpu),
           '--channel-base', str(args.channel_base), '--channel-max', str(args.channel_max),
           '--threads', str(args.torch_threads)]
    self.log = log
    self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=log, text=True, bufsize=1)

  def ask(self, command: str) -> dict:
    self.proc.stdin.write(command + '\n')
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      where = f' (see {self.log.name})' if self.log is not None else ''
      raise SystemExit(f'error: the official worker exited (code {self.proc.wait()}) during '
                       f'{command!r}{where}')
    reply = json.loads(line)
    if 'error' in reply:
      raise SystemExit(f'error: official worker, {command!r}: {reply["error"]}')
    return reply

  def run(self, phase: str) -> float:
    return self.ask(f'run {phase}')['seconds']

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write('quit\n')
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()
        self.proc.wait()


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--peer', required=True, help='NVlabs/stylegan2-ada-pytorch checkout')
  p.add_argument('--peer-python', required=True, help='a python that imports torch and numpy')
  p.add_argument('--resolution', type=int, default=64)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--batch-gpu', type=int, default=4,
                 help='official per-GPU batch (rounds of gradient accumulation; sg2jax: mbstd '
                      'groups form within it)')
  p.add_argument('--repeats', type=int, default=5, help='timed calls per phase and side')
  p.add_argument('--phases', default=','.join(PHASES),
                 help=f'comma-separated phases to time (default {",".join(PHASES)})')
  p.add_argument('--channel-base', type=int, default=32768, help='G and D (config F: 32768)')
  p.add_argument('--channel-max', type=int, default=512, help='G and D')
  p.add_argument('--precision', default='highest', choices=('highest', 'high', 'default'),
                 help="sg2jax matmul/conv precision (the official loop: float32, no TF32)")
  p.add_argument('--torch-threads', type=int, default=0,
                 help='torch.set_num_threads of the official side (0: torch default, one per '
                      'core; on a machine that other processes keep busy its OpenMP threads '
                      'can stall for seconds, then 1 gives steadier times)')
  p.add_argument('--out', default=None,
                 help='also append the lines, with command, commit, date and machine, to this '
                      'file (the README quotes benchmarks/results/peer_benchmark.jsonl)')
  p.add_argument('--worker-log', default=None,
                 help="file for the official worker's stderr (default: this stderr)")
  args = p.parse_args()
  phases = [name for name in args.phases.split(',') if name]
  unknown = sorted(set(phases) - set(PHASES))
  if unknown or not phases:
    raise SystemExit(f'error: unknown phases {unknown}; choose from {",".join(PHASES)}')
  if args.repeats < 1:
    raise SystemExit('error: --repeats must be at least 1')
  args.peer = os.path.abspath(args.peer)
  torch_version = check_peer(args.peer, args.peer_python)

  import results  # benchmarks/results.py
  emit = results.Recorder(args.out)
  from sg2jax.cli import configure_jax
  configure_jax(args.precision)
  from experiments import config_f
  from training_setup import build_phase_bench
  from sg2jax.networks.weights import count_params

  # sg2jax, as benchmarks/train_benchmark.py builds it.
  config = config_f.get_config()
  config.batch_size, config.batch_gpu = args.batch, args.batch_gpu
  for net in (config.G, config.D):
    net.channel_base, net.channel_max = args.channel_base, args.channel_max
  bench = build_phase_bench(config, args.resolution)
  jax.block_until_ready(bench.state)
  ours = {'jax': jax.__version__, 'device': str(jax.devices()[0].device_kind),
          'devices': jax.device_count(), 'precision': args.precision,
          'G_params': count_params(bench.state.g), 'D_params': count_params(bench.state.d)}

  # pylint: disable-next=consider-using-with
  log = open(args.worker_log, 'w', encoding='utf-8') if args.worker_log else None
  worker = Worker(args.peer_python, args, log)
  try:
    t = time.perf_counter()
    info = worker.ask('info')
    setup_s = time.perf_counter() - t
    theirs = {'torch': info['torch'], 'threads': info['threads'],
              'G_params': info['G_params'], 'D_params': info['D_params'],
              'setup_seconds': round(setup_s, 3)}
    common = {'resolution': args.resolution, 'batch': args.batch}
    emit({'what': 'setup', **common, 'batch_gpu': args.batch_gpu,
          'channel_base': args.channel_base, 'channel_max': args.channel_max,
          'sg2jax': ours, 'official': theirs,
          'params_match': (ours['G_params'], ours['D_params']) ==
                          (info['G_params'], info['D_params'])})
    if torch_version != info['torch']:
      print(f'warning: torch {torch_version} at the check, {info["torch"]} in the worker',
            file=sys.stderr)

    # Warm-up: sg2jax compiles each phase (XLA's cost analysis of it) and runs it once.
    compile_s, flops = {}, {}
    for name in phases:
      compile_s[name] = bench.compile(name)
      flops[name] = bench.flops(name)
      bench.run(name)
      worker.run(name)

    def time_ours(name):
      t = time.perf_counter()
      bench.run(name)  # the phases donate the state; bench keeps the new one
      return time.perf_counter() - t

    times = {name: {'sg2jax': [], 'official': []} for name in phases}
    for repeat in range(args.repeats):
      for name in phases:
        order = ('sg2jax', 'official') if repeat % 2 == 0 else ('official', 'sg2jax')
        for side in order:
          times[name][side].append(time_ours(name) if side == 'sg2jax' else worker.run(name))
  finally:
    worker.close()
    if log is not None:
      log.close()

  medians = {}
  for name in phases:
    ours_t, theirs_t = times[name]['sg2jax'], times[name]['official']
    med = statistics.median(ours_t), statistics.median(theirs_t)
    medians[name] = med
    emit({
        'what': 'phase', 'phase': name, **common,
        'sg2jax_min_s': round(min(ours_t), 6), 'sg2jax_median_s': round(med[0], 6),
        'official_min_s': round(min(theirs_t), 6), 'official_median_s': round(med[1], 6),
        'ratio_median': round(med[0] / med[1], 4),
        'ratio_min': round(min(ours_t) / min(theirs_t), 4),
        'gflop': round(flops[name] / 1e9, 4),
        'gflops_per_s': round(flops[name] / 1e9 / med[0], 3),
        'compile_seconds': round(compile_s[name], 2)})

  if 'g_main' not in medians or 'd_main' not in medians:
    return
  weights = {'g_main': 1.0, 'd_main': 1.0, 'g_reg': 1 / config.g_reg_interval,
             'd_reg': 1 / config.d_reg_interval, 'ema': 1.0}
  used = [name for name in PHASES if name in medians]
  ours_s = sum(weights[name] * medians[name][0] for name in used)
  theirs_s = sum(weights[name] * medians[name][1] for name in used)
  line = {'what': 'minibatch', **common, 'phases': used,
          'formula': ' + '.join(name if weights[name] == 1 else f'{name}/{round(1 / weights[name])}'
                                for name in used),
          'sg2jax_s': round(ours_s, 6), 'official_s': round(theirs_s, 6),
          'sg2jax_images_per_s': round(args.batch / ours_s, 3),
          'official_images_per_s': round(args.batch / theirs_s, 3),
          'ratio': round(ours_s / theirs_s, 4)}
  if 'g_reg' in medians:
    line['g_reg_over_g_main'] = round(medians['g_reg'][0] / medians['g_main'][0], 4)
    line['official_g_reg_over_g_main'] = round(medians['g_reg'][1] / medians['g_main'][1], 4)
  emit(line)


if __name__ == '__main__':
  main()
