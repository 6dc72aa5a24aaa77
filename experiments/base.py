"""Config F: every key at its default. The keys, their defaults and what each means are listed
once, in `sg2jax/train/config.py` (`defaults()`).

Other files start from here and set a few keys; what they set is recorded (fine-tuning compares
the network keys an experiment sets with the file's networks, `sg2jax.train.config`). Overrides
from the command line:
  python -m sg2jax.main --config experiments/ffhq.py --workdir DIR --config.total_kimg=0.5
An unknown key is an error that names it, as is a value out of its range
(`sg2jax.train.build.validate`).
"""

from sg2jax.train.config import TrainConfig, defaults


def get_config() -> TrainConfig:
  return defaults()
