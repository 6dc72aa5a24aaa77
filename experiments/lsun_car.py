"""LSUN Car, config F as the paper: 512x384 pictures in a 512x512 frame, 57M images, gamma 10.

  python -m sg2jax.dataset_tool --source car_lmdb --dest lsun_car.zip --resolution 512 \\
      --transform center-crop-wide
  python -m sg2jax.main --config experiments/lsun_car.py --workdir DIR \\
      --config.data.path=lsun_car.zip
"""

from experiments import datasets


def get_config(arg=None):
  return datasets.preset(arg, resolution=512, total_kimg=57000, mirror=False, gamma_f=10.0)
