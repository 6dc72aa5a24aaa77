"""StyleGAN2-ADA's training configs (ADA `train.py --cfg`) with adaptive augmentation, for small
datasets, from scratch or fine-tuning an official network.

  python -m sg2jax.main --config experiments/ada.py --workdir DIR --config.data.path=DATA
  python -m sg2jax.main --config experiments/ada.py:cfg=paper256 --workdir DIR \\
      --config.data.path=DATA --config.resume_from=ffhq-res256-mirror-paper256-noaug.pkl

`:cfg=paper256|paper512|paper1024|stylegan2|cifar` (default paper256) picks ADA's preset: batch,
per-GPU batch (ADA's batch / reference GPUs), minibatch-stddev group, channels (`fmaps` x
32768), learning rate, R1 gamma, G_ema half-life and ramp-up, mapping layers; conv_clamp 256 as
ADA. Every preset trains with `augment='ada'` (pipe 'bgc', target 0.6), as ADA's default
`--aug=ada`. ADA trains mixed precision on GPUs; these configs keep float32
(`--config.G.dtype=bfloat16 --config.D.dtype=bfloat16` for bf16 convolutions).

With `resume_from` the networks come from the file (its keys must agree with the preset's: use
the preset the network was trained with, e.g. paper256 for ADA's 256x256 transfer sources),
`ada_kimg` becomes 100 and the EMA ramp-up is off (REFERENCE.md §7.8); add
`--config.freeze_d=N` to keep D's first N layers as they are (Freeze-D, REFERENCE.md §7.9).
"""

from experiments import base
from experiments.args import parse_arg

# ADA `train.py:cfg_specs`: reference GPUs, kimg, batch, mbstd group, fmaps, lr, gamma,
# ema kimg, ema ramp-up, mapping layers.
PRESETS = {
    'stylegan2': dict(gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lr=0.002, gamma=10, ema=10,
                      ramp=None, map=8),
    'paper256': dict(gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lr=0.0025, gamma=1, ema=20,
                     ramp=None, map=8),
    'paper512': dict(gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lr=0.0025, gamma=0.5, ema=20,
                     ramp=None, map=8),
    'paper1024': dict(gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lr=0.002, gamma=2, ema=10,
                      ramp=None, map=8),
    'cifar': dict(gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lr=0.0025, gamma=0.01, ema=500,
                  ramp=0.05, map=2),
}


def get_config(arg=None):
  name = parse_arg(arg, 'ada.py takes', cfg=tuple(PRESETS)).get('cfg', 'paper256')
  preset = PRESETS[name]
  config = base.get_config()
  config.total_kimg = float(preset['kimg'])
  config.batch_size = preset['mb']
  config.batch_gpu = preset['mb'] // preset['gpus']
  for net in (config.G, config.D):
    net.channel_base = int(preset['fmaps'] * 32768)
    net.channel_max = 512
    net.conv_clamp = 256.0
  config.G.mapping_layers = preset['map']
  config.D.mbstd_group_size = preset['mbstd']
  config.g_lr = config.d_lr = preset['lr']
  config.r1_gamma = float(preset['gamma'])
  config.ema_kimg = float(preset['ema'])
  config.ema_rampup = preset['ramp']
  if name == 'cifar':  # ADA: no path length, no style mixing, D without residual connections
    config.pl_weight = 0.0
    config.style_mixing_prob = 0.0
    config.D.architecture = 'orig'
  config.augment = 'ada'
  return config
