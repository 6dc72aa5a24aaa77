"""LSUN Church 256x256, config F as the paper: gamma 100, no mirror.

Length: the paper's Table 3 says 48M images, the TF README command 88000 kimg (REFERENCE.md §3.4).
Differs from official: this preset follows the paper (48000 kimg); pass
--config.total_kimg=88000 for the README's run.

  python -m sg2jax.dataset_tool --source church_outdoor_train_lmdb --dest lsun_church.zip \\
      --resolution 256 --transform center-crop
  python -m sg2jax.main --config experiments/lsun_church.py --workdir DIR \\
      --config.data.path=lsun_church.zip
"""

from experiments import datasets


def get_config(arg=None):
  return datasets.preset(arg, resolution=256, total_kimg=48000, mirror=False, gamma_f=100.0)
