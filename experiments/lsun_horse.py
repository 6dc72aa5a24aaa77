"""LSUN Horse 256x256, config F as the paper: 100M images, gamma 100, no mirror.

  python -m sg2jax.dataset_tool --source horse_lmdb --dest lsun_horse.zip --resolution 256 \\
      --transform center-crop
  python -m sg2jax.main --config experiments/lsun_horse.py --workdir DIR \\
      --config.data.path=lsun_horse.zip
"""

from experiments import datasets


def get_config(arg=None):
  return datasets.preset(arg, resolution=256, total_kimg=100000, mirror=False, gamma_f=100.0)
