"""FFHQ 1024x1024, config F as the paper: 25M images, mirror, gamma 10, batch 32.

  python -m sg2jax.dataset_tool --source ffhq-images1024x1024 --dest ffhq.zip --resolution 1024
  python -m sg2jax.main --config experiments/ffhq.py --workdir DIR --config.data.path=ffhq.zip
`ffhq.py:config=e` trains config E instead.
"""

from experiments import datasets


def get_config(arg=None):
  return datasets.preset(arg, resolution=1024, total_kimg=25000, mirror=True, gamma_f=10.0)
