"""The official PyTorch side of benchmarks/parity.py: initial networks, and whole training runs of
the official training loop on the CPU.

  PYTHON benchmarks/parity_torch_worker.py init --peer PEER --setup SETUP.json --seed 0 \
      --out init.pkl
  PYTHON benchmarks/parity_torch_worker.py train --peer PEER --setup SETUP.json --seed 0 \
      --init init.pkl --data shapes.zip --run-dir DIR

Runs under a python with torch (standard library, numpy, torch, and what the official code
imports: Pillow, psutil, requests); the official code is imported at run time from --peer (a
checkout of https://github.com/NVlabs/stylegan2-ada-pytorch), never copied here. SETUP.json is
written by parity.py (`ParitySetup`): resolution, channels, mapping, batch, learning rate,
regularization, EMA, length.

`init` builds G and D with the official classes under `torch.manual_seed(seed)`, G_ema as a copy of
G, and pickles them as the official loop pickles its snapshots (`{'training_set_kwargs', 'G', 'D',
'G_ema', 'augment_pipe'}`, each module deep-copied, eval mode, no grad, on the CPU). Both sides
start from that file: the official loop through its `resume_pkl`, sg2jax through its converter.

`train` runs `training/training_loop.py:training_loop` itself, unmodified, with the settings of the
official train.py for a 1-GPU run in float32 (num_fp16_res 0, conv_clamp None, no augmentation,
no x-flips, lazy regularization, style mixing, EMA without ramp-up as train.py sets it for
`--resume`), a network snapshot every tick and no image snapshots after the initial grid. To run
it on a machine without CUDA the worker replaces, in the training loop's module only,
`torch.device('cuda', rank)` with the CPU device, `torch.cuda.Event` with a wall-clock event (the
phase timings), the CUDA memory queries with 0, and `torch.empty` (the latents of the summary
table) with `torch.zeros` so the summary pass that refreshes G's w_avg sees finite values; CPU
tensors' `pin_memory` becomes the identity (the loop pins the labels it draws), and
`Sampler.__init__` accepts the argument the official InfiniteSampler passes (torch >= 2.2 dropped
it; older torch ignored it). The official code runs its reference implementations
(_upfirdn2d_ref, _bias_act_ref, torch.nn.functional.conv2d).

The official loss reports neither path lengths nor `pl_mean`. The loss class, `ParityLoss`, is
`training.loss.StyleGAN2Loss` unchanged plus reports: `Parity/pl_mean` (in the D main phase: once
per minibatch, after its G phases, as sg2jax reports it), `Parity/pl_length` (the batch mean of
the path lengths, exact from the `pl_mean` update: `mean = old + (new - old) / pl_decay`), and the
D scores as sg2jax reports them: `Parity/scores_fake_g` (fakes in the G main phase; the official
`Loss/scores/fake` also averages those of the D main phase) and `Parity/scores_real_d` (reals in
the D main phase; `Loss/scores/real` also has the D reg phase's).

Output in --run-dir: the official `stats.jsonl`, `reals.png`, `fakes_init.png`, and
`official-tick{T:04d}.pkl` (the loop's `network-snapshot-*.pkl` of tick T, renamed: its name only
has whole kimg); and `ticks.jsonl`, one line per tick: `tick`, `kimg`, `snapshot`, and every
statistic reported during the tick as `{name: [count, mean]}`, collected without the official
collector's carrying over of statistics a tick did not report. The loop's prints go to stdout.
"""

import argparse
import copy
import json
import os
import pickle
import sys
import time
import types
from pathlib import Path

STATS_REGEX = r'(Loss|Parity|Progress|Timing)/.*'


def load_official(peer: str):
  """Imports the official modules from the checkout `peer`."""
  peer = os.path.abspath(peer)
  if not os.path.isfile(os.path.join(peer, 'training', 'training_loop.py')):
    raise SystemExit(f'error: --peer {peer} is not a checkout of NVlabs/stylegan2-ada-pytorch')
  sys.path.insert(0, peer)
  import dnnlib  # pylint: disable=import-outside-toplevel
  from torch_utils import training_stats  # pylint: disable=import-outside-toplevel
  from training import loss, networks, training_loop  # pylint: disable=import-outside-toplevel
  return types.SimpleNamespace(dnnlib=dnnlib, training_stats=training_stats, loss=loss,
                               networks=networks, training_loop=training_loop)


def network_kwargs(setup: dict) -> tuple[dict, dict]:
  """G and D constructor arguments as the official train.py builds them, float32 (SETUP's sizes)."""
  G_kwargs = dict(class_name='training.networks.Generator', z_dim=setup['z_dim'],
                  w_dim=setup['w_dim'],
                  mapping_kwargs=dict(num_layers=setup['mapping_layers']),
                  synthesis_kwargs=dict(channel_base=setup['channel_base'],
                                        channel_max=setup['channel_max'], num_fp16_res=0,
                                        conv_clamp=None, architecture='skip'))
  D_kwargs = dict(class_name='training.networks.Discriminator', architecture='resnet',
                  channel_base=setup['channel_base'], channel_max=setup['channel_max'],
                  num_fp16_res=0, conv_clamp=None, block_kwargs={}, mapping_kwargs={},
                  epilogue_kwargs=dict(mbstd_group_size=setup['mbstd_group_size']))
  return G_kwargs, D_kwargs


def dataset_kwargs(setup: dict, data: str) -> dict:
  return dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=False,
              max_size=None, xflip=False, resolution=setup['resolution'])


def init(args, setup: dict) -> None:
  """The initial snapshot (see the module docstring)."""
  official = load_official(args.peer)
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(args.seed)
  G_kwargs, D_kwargs = network_kwargs(setup)
  common = dict(c_dim=0, img_resolution=setup['resolution'], img_channels=3)
  construct = official.dnnlib.util.construct_class_by_name
  G = construct(**G_kwargs, **common).train().requires_grad_(False)
  D = construct(**D_kwargs, **common).train().requires_grad_(False)
  G_ema = copy.deepcopy(G).eval()
  snapshot = dict(training_set_kwargs=None, augment_pipe=None)
  for name, module in (('G', G), ('D', D), ('G_ema', G_ema)):
    snapshot[name] = copy.deepcopy(module).eval().requires_grad_(False).cpu()
  out = Path(args.out)
  tmp = out.with_name(out.name + '.tmp')
  with open(tmp, 'wb') as f:
    pickle.dump(snapshot, f)
  os.replace(tmp, out)


def define_parity_loss(official) -> type:
  """`ParityLoss`: StyleGAN2Loss with the extra reports of the module docstring."""
  report = official.training_stats.report

  class ParityLoss(official.loss.StyleGAN2Loss):
    """StyleGAN2Loss unchanged, plus reports of pl_mean, path lengths and the D scores."""

    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self._phase, self._real = None, None

    def run_D(self, img, c, sync):
      logits = super().run_D(img, c, sync)
      if self._phase in ('Gmain', 'Gboth'):
        report('Parity/scores_fake_g', logits)
      elif self._phase in ('Dmain', 'Dboth') and img.data_ptr() == self._real.data_ptr():
        report('Parity/scores_real_d', logits)  # the detached reals share the batch's storage
      return logits

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
      self._phase, self._real = phase, real_img
      old = self.pl_mean.clone()
      super().accumulate_gradients(phase=phase, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                   gen_c=gen_c, sync=sync, gain=gain)
      self._phase, self._real = None, None
      if phase in ('Greg', 'Gboth') and self.pl_weight != 0 and self.pl_decay != 0:
        report('Parity/pl_length', old + (self.pl_mean - old) / self.pl_decay)
      if phase in ('Dmain', 'Dboth'):
        report('Parity/pl_mean', self.pl_mean)

  return ParityLoss


class WallClockEvent:
  """`torch.cuda.Event(enable_timing=True)` on the host: `elapsed_time` in milliseconds."""

  def __init__(self, enable_timing: bool = False):
    del enable_timing
    self.time = None

  def record(self, stream=None) -> None:
    del stream
    self.time = time.perf_counter()

  def synchronize(self) -> None:
    pass

  def elapsed_time(self, end: 'WallClockEvent') -> float:
    return (end.time - self.time) * 1000.0


def run_on_cpu(training_loop_module) -> None:
  """Points the training loop's `torch` at a view of torch whose CUDA calls act on the CPU (see
  the module docstring); other modules keep the real torch."""
  import torch  # pylint: disable=import-outside-toplevel
  view = types.ModuleType('torch_on_cpu')
  view.__dict__.update({k: v for k, v in vars(torch).items() if not k.startswith('__')})
  view.device = lambda *args, **kwargs: torch.device('cpu')
  view.empty = torch.zeros
  view.cuda = types.SimpleNamespace(
      Event=WallClockEvent, current_stream=lambda device=None: None,
      max_memory_allocated=lambda device=None: 0, reset_peak_memory_stats=lambda device=None: None)
  training_loop_module.torch = view
  torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
  # torch >= 2.2 dropped the `data_source` argument of Sampler.__init__, which the official
  # InfiniteSampler passes on; older torch accepted and ignored it, and so does this.
  torch.utils.data.Sampler.__init__ = lambda self, data_source=None: None


def train(args, setup: dict) -> None:
  """One run of the official training loop (see the module docstring)."""
  official = load_official(args.peer)
  import torch  # pylint: disable=import-outside-toplevel
  if args.threads:
    torch.set_num_threads(args.threads)
  run_dir = Path(args.run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  globals()['ParityLoss'] = define_parity_loss(official)
  run_on_cpu(official.training_loop)

  G_kwargs, D_kwargs = network_kwargs(setup)
  opt_kwargs = dict(class_name='torch.optim.Adam', lr=setup['lr'], betas=[0, 0.99], eps=1e-8)
  loss_kwargs = dict(class_name='__main__.ParityLoss', r1_gamma=setup['r1_gamma'],
                     style_mixing_prob=setup['style_mixing_prob'], pl_weight=setup['pl_weight'],
                     pl_batch_shrink=setup['pl_batch_shrink'], pl_decay=setup['pl_decay'])
  collector = official.training_stats.Collector(regex=STATS_REGEX, keep_previous=False)
  ticks = open(run_dir / 'ticks.jsonl', 'w', encoding='utf-8')  # pylint: disable=R1732
  calls = []

  def progress(kimg: int, total_kimg: float) -> None:
    """Called once before training and after each tick (after its snapshot and stats)."""
    del total_kimg
    collector.update()
    calls.append(kimg)
    if len(calls) == 1:
      return
    tick = len(calls) - 2
    written = run_dir / f'network-snapshot-{kimg:06d}.pkl'
    snapshot = run_dir / f'official-tick{tick:04d}.pkl'
    os.replace(written, snapshot)
    stats = {name: [collector.num(name), collector.mean(name)] for name in collector.names()
             if collector.num(name) > 0}
    ticks.write(json.dumps({'tick': tick, 'kimg': collector.mean('Progress/kimg'),
                            'snapshot': str(snapshot), 'stats': stats}) + '\n')
    ticks.flush()

  try:
    official.training_loop.training_loop(
        run_dir=str(run_dir), training_set_kwargs=dataset_kwargs(setup, args.data),
        data_loader_kwargs=dict(pin_memory=False, num_workers=0), G_kwargs=G_kwargs,
        D_kwargs=D_kwargs, G_opt_kwargs=opt_kwargs, D_opt_kwargs=dict(opt_kwargs),
        augment_kwargs=None, loss_kwargs=loss_kwargs, metrics=[], random_seed=args.seed,
        num_gpus=1, rank=0, batch_size=setup['batch_size'], batch_gpu=setup['batch_gpu'],
        ema_kimg=setup['ema_kimg'], ema_rampup=None,  # train.py: None when resuming
        G_reg_interval=setup['g_reg_interval'], D_reg_interval=setup['d_reg_interval'],
        augment_p=0, ada_target=None, total_kimg=setup['total_kimg'],
        kimg_per_tick=setup['kimg_per_tick'], image_snapshot_ticks=None,
        network_snapshot_ticks=1, resume_pkl=args.init, cudnn_benchmark=False,
        allow_tf32=False, abort_fn=None, progress_fn=progress)
  finally:
    ticks.close()


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('command', choices=('init', 'train'))
  p.add_argument('--peer', required=True, help='stylegan2-ada-pytorch checkout')
  p.add_argument('--setup', required=True, help="parity.py's setup (JSON file)")
  p.add_argument('--seed', type=int, required=True)
  p.add_argument('--out', help='init: the snapshot to write')
  p.add_argument('--init', help='train: the initial snapshot (resume_pkl)')
  p.add_argument('--data', help='train: the dataset zip')
  p.add_argument('--run-dir', help='train: output folder')
  p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: default)')
  args = p.parse_args()
  setup = json.loads(Path(args.setup).read_text())
  if args.command == 'init':
    if not args.out:
      p.error('init needs --out')
    init(args, setup)
  else:
    if not (args.init and args.data and args.run_dir):
      p.error('train needs --init, --data and --run-dir')
    train(args, setup)


if __name__ == '__main__':
  main()
