"""A training workdir for the eval CLI tests: tests/data's 32x32 ADA snapshot saved as a checkpoint,
and a config.json naming a folder of shapes images (mirroring on)."""

import json
from pathlib import Path

import numpy as np

from goldens import DATA
from sg2jax.checkpoint import TrainCheckpoints
from sg2jax.formats.official import load_official_pickle
from sg2jax.images import save_image


def make_eval_workdir(root: Path, images: np.ndarray, step: int, kimg: float) -> Path:
  """`root/workdir` holding the snapshot at `step` (`kimg`) over `root/images` (`images` saved
  as PNGs, [N, H, W, 3] uint8)."""
  folder = root / 'images'
  folder.mkdir()
  for i, image in enumerate(images):
    save_image(folder / f'{i:05d}.png', image)
  networks = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')
  run = root / 'workdir'
  checkpoints = TrainCheckpoints(run, asynchronous=False)
  state = {'g': networks['G'].variables, 'g_ema': networks['G_ema'].variables,
           'd': networks['D'].variables}
  checkpoints.save(step, state, {'step': step, 'kimg': kimg, 'data': {'position': 0},
                                 'networks': {k: v.config for k, v in networks.items()},
                                 'config': {}})
  checkpoints.close()
  config = {'seed': 0, 'resolution': 32, 'mirror': True, 'cond': False,
            'data': {'source': 'auto', 'path': str(folder), 'split': 'train', 'num_images': 0,
                     'max_images': None, 'tfds_data_dir': None}}
  (run / 'config.json').write_text(json.dumps(config))
  return run
