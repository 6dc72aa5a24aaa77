"""LSUN Cat 256x256, config F as the paper: 88M images, gamma 10, no mirror.

  python -m sg2jax.dataset_tool --source cat_lmdb --dest lsun_cat.zip --resolution 256 \\
      --transform center-crop
  python -m sg2jax.main --config experiments/lsun_cat.py --workdir DIR --config.data.path=lsun_cat.zip
"""

from experiments import datasets


def get_config(arg=None):
  return datasets.preset(arg, resolution=256, total_kimg=88000, mirror=False, gamma_f=10.0)
