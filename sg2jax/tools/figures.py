"""Figures made with a generator: the paper's style-mixing grid, interpolations between two seeds,
truncation sweeps, images of projected ws, and videos.

Latents come from seeds exactly as the official tools draw them (`sampling.z_from_seed`); images
are float `[-1, 1]` NHWC until `to_uint8`. Network calls are jitted; synthesis batches are padded to
`batch_size`, so a figure compiles the synthesis once.
"""

import io
import warnings
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import numpy as np

from sg2jax import storage
from sg2jax.images import to_uint8
from sg2jax.networks.synthesis import check_choice
from sg2jax.tools.sampling import map_latents, map_seeds, synthesize, z_from_seed

SPACES = ('z', 'w')
VIDEO_FORMATS = ('mp4', 'gif')
MAX_STRIP_FRAMES = 10


# ----------------------------------------------------------------------------------------------
# Style mixing (the paper's Figure: rows x columns, coarse/middle/fine styles).

def mix_layers(ws: np.ndarray, ws_from: np.ndarray, layers: Sequence[int]) -> np.ndarray:
  """`ws` with the layers in `layers` taken from `ws_from` (both `[..., num_ws, w_dim]`)."""
  num_ws = ws.shape[-2]
  bad = [i for i in layers if not 0 <= i < num_ws]
  if bad:
    raise ValueError(f'style layers {bad} do not exist: this network has ws layers 0-{num_ws - 1}')
  take = np.zeros(num_ws, bool)
  take[list(layers)] = True
  return np.where(take[:, None], ws_from, ws)


class StyleMixing(NamedTuple):
  """The images of a style-mixing figure (float, [-1, 1])."""
  row_images: np.ndarray  # [rows, R, R, C]: G(ws of each row seed)
  col_images: np.ndarray  # [cols, R, R, C]: G(ws of each column seed)
  cells: np.ndarray       # [rows, cols, R, R, C]: row seed's ws with the mixed layers of the column's


def style_mixing(generator: nn.Module, variables: dict, row_seeds: Sequence[int],
                 col_seeds: Sequence[int], layers: Sequence[int] = tuple(range(7)),
                 truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                 noise_mode: str = 'const', class_idx: Optional[int] = None,
                 batch_size: int = 8) -> StyleMixing:
  """The style-mixing figure as the official `style_mixing.py` computes it.

  Cell (row, col) is `G(ws_row)` with the ws layers in `layers` replaced by `ws_col`'s
  (`layers` 0-6 = the coarse and middle styles at 1024x1024: pose, face shape, ... from the column).
  With noise_mode 'random', every image of a row uses that row seed's noise.
  """
  if not row_seeds or not col_seeds:
    raise ValueError('style mixing needs row seeds and column seeds, e.g. --style-mix 0-3 10-14')
  if not layers:
    raise ValueError('no style layers to mix; pass e.g. --mix-layers 0-6')
  rows, cols = len(row_seeds), len(col_seeds)
  ws_seeds = map_seeds(generator, variables, list(row_seeds) + list(col_seeds), truncation_psi,
                       truncation_cutoff, class_idx)
  ws_rows, ws_cols = ws_seeds[:rows], ws_seeds[rows:]
  mixed = mix_layers(ws_rows[:, None], ws_cols[None], layers)  # [rows, cols, num_ws, w_dim]
  ws = np.concatenate([ws_seeds, mixed.reshape(rows * cols, *mixed.shape[2:])])
  noise_seeds = (list(row_seeds) + list(col_seeds)
                 + [s for s in row_seeds for _ in range(cols)])
  images = synthesize(generator, variables, ws, noise_mode, noise_seeds, batch_size)
  return StyleMixing(images[:rows], images[rows:rows + cols],
                     images[rows + cols:].reshape(rows, cols, *images.shape[1:]))


def style_mixing_grid(figure: StyleMixing) -> np.ndarray:
  """The official layout as one uint8 image: an empty (black) corner, the column seeds' images
  along the top, the row seeds' images down the left, and cell (row, col) at their crossing."""
  rows, cols, h, w, c = figure.cells.shape
  grid = np.zeros(((rows + 1) * h, (cols + 1) * w, c), np.uint8)
  for j, image in enumerate(to_uint8(figure.col_images)):
    grid[:h, (j + 1) * w:(j + 2) * w] = image
  for i, image in enumerate(to_uint8(figure.row_images)):
    grid[(i + 1) * h:(i + 2) * h, :w] = image
  cells = to_uint8(figure.cells)
  for i in range(rows):
    for j in range(cols):
      grid[(i + 1) * h:(i + 2) * h, (j + 1) * w:(j + 2) * w] = cells[i, j]
  return grid


# ----------------------------------------------------------------------------------------------
# Interpolation.

def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation of vectors `a`, `b` `[D]` at `t` `[F]` -> `[F, D]`:
  `sin((1 - t) omega) / sin(omega) a + sin(t omega) / sin(omega) b`, `omega` the angle between
  them (linear when they are parallel). Unlike PPL's `slerp_directions` the norm is kept."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  t = np.asarray(t, np.float64)[:, None]
  cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return (1 - t) * a + t * b
  return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def interpolation_ws(generator: nn.Module, variables: dict, seed_a: int, seed_b: int,
                     num_frames: int, space: str = 'w', truncation_psi: float = 1.0,
                     truncation_cutoff: Optional[int] = None,
                     class_idx: Optional[int] = None) -> np.ndarray:
  """ws `[num_frames, num_ws, w_dim]` from seed_a's to seed_b's, `t = linspace(0, 1)`.

  space 'w': `(1 - t) ws_a + t ws_b` (exactly the endpoints' ws at t = 0 and 1);
  space 'z': `slerp(z_a, z_b, t)`, then the mapping (and truncation).
  """
  check_choice(space, SPACES, 'space')
  if num_frames < 2:
    raise ValueError(f'an interpolation needs at least 2 frames, got {num_frames}')
  t = np.linspace(0.0, 1.0, num_frames)
  if space == 'w':
    ws = map_seeds(generator, variables, [seed_a, seed_b], truncation_psi, truncation_cutoff,
                   class_idx)
    t = t.astype(np.float32)[:, None, None]
    return (1 - t) * ws[0] + t * ws[1]
  z = slerp(z_from_seed(seed_a, generator.z_dim)[0], z_from_seed(seed_b, generator.z_dim)[0], t)
  z[0], z[-1] = z_from_seed(seed_a, generator.z_dim)[0], z_from_seed(seed_b, generator.z_dim)[0]
  return map_latents(generator, variables, z.astype(np.float32), truncation_psi,
                     truncation_cutoff, class_idx)


def interpolate(generator: nn.Module, variables: dict, seed_a: int, seed_b: int,
                num_frames: int, space: str = 'w', truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, noise_mode: str = 'const',
                class_idx: Optional[int] = None, batch_size: int = 8) -> np.ndarray:
  """Frames `[num_frames, R, R, C]` (float, [-1, 1]) from seed_a's image to seed_b's.

  With noise_mode 'random' every frame uses seed_a's noise, so only the latent moves.
  """
  ws = interpolation_ws(generator, variables, seed_a, seed_b, num_frames, space, truncation_psi,
                        truncation_cutoff, class_idx)
  return synthesize(generator, variables, ws, noise_mode, [seed_a] * num_frames, batch_size)


def strip_indices(num_frames: int, max_frames: int = MAX_STRIP_FRAMES) -> list[int]:
  """Frames shown in a strip: all of them, or `max_frames` evenly spaced ones with both ends."""
  if num_frames <= max_frames:
    return list(range(num_frames))
  return [int(round(i)) for i in np.linspace(0, num_frames - 1, max_frames)]


# ----------------------------------------------------------------------------------------------
# Truncation sweep.

def parse_psis(text: str) -> list[float]:
  """`'1,0.7,0.5'` -> `[1.0, 0.7, 0.5]`."""
  try:
    values = [float(part) for part in str(text).split(',') if part.strip()]
  except ValueError:
    raise ValueError(f'{text!r} is not a list of numbers; write e.g. 1,0.7,0.5,0') from None
  if not values:
    raise ValueError('no truncation values given; write e.g. 1,0.7,0.5,0')
  return values


def truncation_sweep(generator: nn.Module, variables: dict, seeds: Sequence[int],
                     psis: Sequence[float], truncation_cutoff: Optional[int] = None,
                     noise_mode: str = 'const', class_idx: Optional[int] = None,
                     batch_size: int = 8) -> np.ndarray:
  """Images `[len(seeds), len(psis), R, R, C]`: each seed at each truncation psi (psi = 0 is the
  image of w_avg, negative psi the "opposite" image)."""
  if not psis:
    raise ValueError('no truncation values given; write e.g. 1,0.7,0.5,0')
  ws = np.stack([map_seeds(generator, variables, seeds, psi, truncation_cutoff, class_idx)
                 for psi in psis], axis=1)  # [S, P, num_ws, w_dim]
  noise_seeds = [s for s in seeds for _ in psis]
  images = synthesize(generator, variables, ws.reshape(-1, *ws.shape[2:]), noise_mode,
                      noise_seeds, batch_size)
  return images.reshape(len(seeds), len(psis), *images.shape[1:])


# ----------------------------------------------------------------------------------------------
# Projected ws and videos.

def load_projected_ws(path: str | Path, num_ws: int, w_dim: int) -> np.ndarray:
  """`w` of a `projected_w.npz` (official projector or `sg2jax.project`): `[N, num_ws, w_dim]`.

  Raises:
    FileNotFoundError: no such file.
    ValueError: not an npz with `w`, or a `w` of another network's shape.
  """
  path = storage.as_path(path)
  if not path.is_file():
    raise FileNotFoundError(f'projected w file {path} not found')
  try:
    with np.load(io.BytesIO(path.read_bytes())) as data:
      if 'w' not in data:
        raise ValueError(f'{path} has no array w (found {", ".join(data.files)}); pass the '
                         f'projected_w.npz written by a projector')
      ws = np.asarray(data['w'], np.float32)
  except (OSError, EOFError) as e:
    raise ValueError(f'{path} is not a readable .npz file ({e})') from None
  if ws.ndim == 2:
    ws = ws[None]
  if ws.ndim != 3 or ws.shape[1:] != (num_ws, w_dim):
    raise ValueError(f'{path} holds w of shape {list(ws.shape)}, but this network takes '
                     f'[N, {num_ws}, {w_dim}]; project with the same network')
  return ws


def save_video(path: str | Path, frames: np.ndarray, fps: float = 30) -> Path:
  """Writes uint8 frames `[F, H, W, C]` as an mp4 (H.264 via imageio-ffmpeg) or a looping gif,
  chosen by the file suffix."""
  import imageio  # imported here: only the tools that write videos need it

  target = storage.as_path(path)
  staging = storage.LocalStaging(target.parent, prefix='sg2jax-video-')  # imageio writes files
  path = staging.local / target.name
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4:
    raise ValueError(f'save_video expects uint8 frames [F, H, W, C], got {frames.dtype} '
                     f'{list(frames.shape)}')
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  suffix = path.suffix.lower().lstrip('.')
  if suffix == 'gif':
    imageio.mimwrite(path, list(frames), duration=1000 / fps, loop=0)
  elif suffix == 'mp4':
    try:
      with warnings.catch_warnings():
        # imageio-ffmpeg starts ffmpeg with fork + exec, which JAX warns about; exec follows the
        # fork at once, so no JAX thread state is used in the child.
        warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called',
                                category=RuntimeWarning)
        # Image sizes here are powers of two (or sums of them), so even: no resizing needed.
        imageio.mimwrite(path, list(frames), fps=fps, codec='libx264', quality=8,
                         macro_block_size=2)
    except (ImportError, RuntimeError) as e:
      raise ValueError(f'cannot write {path.name} ({e}); `pip install imageio-ffmpeg` or '
                       f'write a gif instead') from None
  else:
    raise ValueError(f'video {path.name}: use a .mp4 or .gif file name')
  if staging.remote:
    storage.upload(path, target)
    staging.close()
  return target
