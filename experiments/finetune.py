"""Fine-tune a released network on a small dataset with ADA: the common case.

  python -m sg2jax.dataset_tool --source my_images/ --dest mine.zip --resolution 256
  python -m sg2jax.main --config experiments/finetune.py --workdir runs/mine \\
      --config.data.path=mine.zip --config.resume_from=ffhq-res256-mirror-paper256-noaug.pkl

`resume_from` (required) is an official pickle (an ADA snapshot or a TF StyleGAN2 release), a
`sg2jax.convert` directory or another run's workdir. The networks (architecture, channels,
mapping, clamp, minibatch-stddev group) come from that file, so no network key is set here
(ADA's preset sets some: they are put back to their defaults, unset); setting one on the command
line that contradicts the file is an error naming both values.

The training settings are ADA's for transfer (StyleGAN2-ADA §4, REFERENCE.md §7.8):
`:cfg=paper256|paper512|paper1024|stylegan2` (default paper256, the paper's transfer
experiments) picks ADA's batch, learning rate, R1 gamma and G_ema half-life; ADA with target
0.6 and `ada_kimg` 100 (p reacts faster than from scratch); G_ema without ramp-up; x-flips on
(small datasets: ADA's `--mirror=1`). `--config.freeze_d=N` adds Freeze-D (REFERENCE.md §7.9; ADA's
`--freezed`, e.g. 10 at 256x256). Run length: ADA's default 25000 kimg is the ceiling, not a
target; fine-tuning usually settles within a few thousand kimg: watch the metric
(`--config.metrics="('fd_vgg2k',)"` needs no weights file, and 2,000 images or
`--config.metrics_num_samples=N` for fewer) and stop when it stops improving.
"""

from experiments import ada
from experiments.args import parse_arg
from sg2jax.train.config import restore_defaults

TRANSFER_PRESETS = ('paper256', 'paper512', 'paper1024', 'stylegan2')


def get_config(arg=None):
  name = parse_arg(arg, 'finetune.py takes', cfg=TRANSFER_PRESETS).get('cfg', 'paper256')
  config = ada.get_config(f'cfg={name}')
  restore_defaults(config, 'G', 'D')  # the architecture comes from resume_from: no key is set
  config.resume_required = True  # a one-line error until --config.resume_from names a file
  config.mirror = True
  config.augment = 'ada'
  config.ada_kimg = 100.0
  return config
