"""The official PyTorch side of benchmarks/peer_benchmark.py: one training phase per command.

  /path/to/torch/python benchmarks/peer_torch_worker.py --peer /path/to/stylegan2-ada-pytorch \
      --resolution 64 --batch 8 [--batch-gpu 4 --channel-base 32768 --channel-max 512]

Runs under a python with torch (standard library, numpy and torch only); the official code is
imported at run time from --peer (a checkout of https://github.com/NVlabs/stylegan2-ada-pytorch),
never copied here. It builds the StyleGAN2 config-F training setup of the official train.py /
training/training_loop.py in float32 (num_fp16_res=0, conv_clamp=None): Generator (z_dim = w_dim =
512, 8 mapping layers, 'skip'), Discriminator ('resnet', mbstd group 4), StyleGAN2Loss (r1_gamma
10, pl_weight 2, pl_batch_shrink 2, style_mixing_prob 0.9), Adam (lr 0.002, betas (0, 0.99), eps
1e-8) with the lazy-regularization adjustment (G_reg_interval 4, D_reg_interval 16), G_ema
(ema_kimg 10, no rampup), on random uint8 reals (numpy, seed 0) converted as the loop does.

Line protocol on stdin/stdout; every command gets exactly one JSON line:
  run PHASE   PHASE in g_main g_reg d_main d_reg ema -> {"phase": PHASE, "seconds": wall time}
  info        -> torch version, threads, G/D parameter counts, settings
  quit        -> exits
Errors reply {"error": "..."}. Protocol lines go to a duplicate of the original stdout; anything
else written to stdout (the official code's prints included) lands on stderr.
"""

import argparse
import copy
import json
import os
import sys
import time
import traceback

PHASES = {'g_main': 'Gmain', 'g_reg': 'Greg', 'd_main': 'Dmain', 'd_reg': 'Dreg', 'ema': None}


class ProtocolError(Exception):
  """A command the worker does not know, or one it cannot run because setup failed."""


class Setup:
  """G, D, G_ema, loss and the phases of the official training loop, for one minibatch size."""

  def __init__(self, args):
    import numpy as np
    import torch
    sys.path.insert(0, os.path.abspath(args.peer))
    from torch_utils import misc
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    from training.loss import StyleGAN2Loss
    from training.networks import Discriminator, Generator

    self.np, self.torch, self.misc = np, torch, misc
    if args.threads:
      torch.set_num_threads(args.threads)
    if args.batch % args.batch_gpu:
      raise ValueError(f'--batch {args.batch} is not a multiple of --batch-gpu {args.batch_gpu}')
    self.batch, self.batch_gpu = args.batch, args.batch_gpu
    device = torch.device('cpu')
    # As training_loop.py (both only take effect on CUDA tensors).
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True

    # train.py, cfg 'stylegan2' (config F) with --fp32: fmaps 1, lrate 0.002, gamma 10, ema 10,
    # map 8, mbstd 4; G 'skip' and D 'resnet' are the class defaults, spelled out here.
    common = dict(c_dim=0, img_resolution=args.resolution, img_channels=3)
    G_kwargs = dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=8),
                    synthesis_kwargs=dict(channel_base=args.channel_base,
                                          channel_max=args.channel_max, num_fp16_res=0,
                                          conv_clamp=None, architecture='skip'))
    D_kwargs = dict(architecture='resnet', channel_base=args.channel_base,
                    channel_max=args.channel_max, num_fp16_res=0, conv_clamp=None,
                    block_kwargs={}, mapping_kwargs={},
                    epilogue_kwargs=dict(mbstd_group_size=4))
    opt_kwargs = dict(lr=0.002, betas=[0, 0.99], eps=1e-8)
    loss_kwargs = dict(r1_gamma=10.0, style_mixing_prob=0.9, pl_weight=2.0, pl_batch_shrink=2,
                       pl_decay=0.01)
    self.ema_kimg, self.ema_rampup = 10.0, None
    reg_intervals = {'G': 4, 'D': 16}

    # training_loop.py: construct networks, the loss, and the lazy-regularization phases.
    self.G = Generator(**G_kwargs, **common).train().requires_grad_(False).to(device)
    self.D = Discriminator(**D_kwargs, **common).train().requires_grad_(False).to(device)
    self.G_ema = copy.deepcopy(self.G).eval()
    self.loss = StyleGAN2Loss(device=device, G_mapping=self.G.mapping,
                              G_synthesis=self.G.synthesis, D=self.D, **loss_kwargs)
    self.phases = {}
    for name, module in [('G', self.G), ('D', self.D)]:
      mb_ratio = reg_intervals[name] / (reg_intervals[name] + 1)
      kwargs = dict(opt_kwargs)
      kwargs['lr'] = kwargs['lr'] * mb_ratio
      kwargs['betas'] = [beta ** mb_ratio for beta in kwargs['betas']]
      opt = torch.optim.Adam(module.parameters(), **kwargs)
      self.phases[name + 'main'] = dict(name=name + 'main', module=module, opt=opt, interval=1)
      self.phases[name + 'reg'] = dict(name=name + 'reg', module=module, opt=opt,
                                       interval=reg_intervals[name])
    self.settings = dict(G_kwargs=G_kwargs, D_kwargs=D_kwargs, opt_kwargs=opt_kwargs,
                         loss_kwargs=loss_kwargs, reg_intervals=reg_intervals,
                         ema_kimg=self.ema_kimg, ema_rampup=self.ema_rampup, **common)

    # Reals: uint8 images as the dataset yields them (NCHW), converted as the loop does.
    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, (args.batch, 3, args.resolution, args.resolution),
                          dtype=np.uint8)
    self.real_img = (torch.from_numpy(images).to(device).to(torch.float32) / 127.5 - 1).split(
        self.batch_gpu)
    self.real_c = torch.zeros([args.batch, 0], device=device).split(self.batch_gpu)
    self.cur_nimg = 0

  def info(self):
    torch = self.torch
    count = lambda module: sum(p.numel() for p in module.parameters())
    return {'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'interop_threads': torch.get_num_interop_threads(), 'G_params': count(self.G),
            'D_params': count(self.D), 'batch': self.batch, 'batch_gpu': self.batch_gpu,
            'settings': self.settings}

  def run(self, phase):
    """One execution of `phase` as training_loop.py runs it in a minibatch; returns seconds."""
    torch = self.torch
    # The loop draws the latents (and labels) of every phase outside the phases.
    gen_z = torch.randn([self.batch, self.G.z_dim]).split(self.batch_gpu)
    gen_c = torch.zeros([self.batch, 0]).split(self.batch_gpu)
    start = time.perf_counter()
    if phase == 'ema':
      ema_nimg = self.ema_kimg * 1000
      if self.ema_rampup is not None:
        ema_nimg = min(ema_nimg, self.cur_nimg * self.ema_rampup)
      ema_beta = 0.5 ** (self.batch / max(ema_nimg, 1e-8))
      for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
        p_ema.copy_(p.lerp(p_ema, ema_beta))
      for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
        b_ema.copy_(b)
      self.cur_nimg += self.batch
    else:
      ph = self.phases[PHASES[phase]]
      ph['opt'].zero_grad(set_to_none=True)
      ph['module'].requires_grad_(True)
      rounds = self.batch // self.batch_gpu  # num_gpus = 1
      for round_idx, (real_img, real_c, z, c) in enumerate(
          zip(self.real_img, self.real_c, gen_z, gen_c)):
        sync = (round_idx == rounds - 1)
        self.loss.accumulate_gradients(phase=ph['name'], real_img=real_img, real_c=real_c,
                                       gen_z=z, gen_c=c, sync=sync, gain=ph['interval'])
      ph['module'].requires_grad_(False)
      for param in ph['module'].parameters():
        if param.grad is not None:
          self.misc.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
      ph['opt'].step()
    return time.perf_counter() - start


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--peer', required=True, help='stylegan2-ada-pytorch checkout')
  p.add_argument('--resolution', type=int, default=64)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--batch-gpu', type=int, default=4)
  p.add_argument('--channel-base', type=int, default=32768)
  p.add_argument('--channel-max', type=int, default=512)
  p.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: default)')
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args()

  # Protocol lines go to a duplicate of fd 1; fd 1 itself (C++ prints too) and sys.stdout go to
  # stderr, so nothing printed by the official code can break the protocol.
  proto = os.fdopen(os.dup(1), 'w', buffering=1)
  sys.stdout.flush()
  os.dup2(2, 1)
  sys.stdout = sys.stderr

  def reply(obj):
    proto.write(json.dumps(obj) + '\n')
    proto.flush()

  setup, setup_error = None, None
  try:
    setup = Setup(args)
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    setup_error = f'setup failed: {type(e).__name__}: {e}'

  for line in sys.stdin:
    words = line.split()
    if not words:
      continue
    if words[0] == 'quit':
      break
    try:
      if setup is None:
        raise ProtocolError(setup_error)
      if words[0] == 'info' and len(words) == 1:
        reply(setup.info())
      elif words[0] == 'run' and len(words) == 2 and words[1] in PHASES:
        reply({'phase': words[1], 'seconds': setup.run(words[1])})
      else:
        raise ProtocolError(f'unknown command {line.strip()!r}: expected "run PHASE" (PHASE in '
                         f'{" ".join(PHASES)}), "info" or "quit"')
    except ProtocolError as e:
      reply({'error': str(e)})
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      reply({'error': f'{type(e).__name__}: {e}'})
  proto.close()


if __name__ == '__main__':
  main()
