"""Images: network output -> uint8 exactly as the official tools, grids, PNG files."""

import io
import math
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from sg2jax import storage


def to_uint8(images) -> np.ndarray:
  """`[-1, 1]` floats -> uint8 as the official tools: `clip(x * 127.5 + 128, 0, 255)` truncated.

  Truncating the clipped value is `floor`, so this rounds `127.5 x + 127.5` to nearest
  (REFERENCE.md §5.1). Computed in float32 on the host, as the official code does it.

  Args:
    images: `[..., H, W, C]` array (device or host), nominally in [-1, 1].
  """
  x = np.asarray(images, dtype=np.float32)
  x = x * np.float32(127.5) + np.float32(128)
  return np.clip(x, 0, 255).astype(np.uint8)


def grid_columns(count: int) -> int:
  """Columns of a grid of `count` images: the divisor of `count` nearest above its square root
  (so no cell stays empty: 32 -> 8 x 4, 12 -> 4 x 3, 3 -> 3 x 1) when that is at most twice the
  square's side, else the square's side (7 -> 3 x 3 with two empty cells, not a 7 x 1 strip)."""
  side = math.ceil(math.sqrt(count))
  for columns in range(side, 2 * side + 1):
    if count % columns == 0:
      return columns
  return side


def make_grid(images: np.ndarray, columns: Optional[int] = None) -> np.ndarray:
  """Tiles `[N, H, W, C]` images row by row into one `[rows*H, columns*W, C]` image.

  `columns` defaults to `grid_columns(N)` (no empty cells where N allows it); cells left over
  in the last row are black.
  """
  n, h, w, c = images.shape
  columns = columns or grid_columns(n)
  rows = math.ceil(n / columns)
  grid = np.zeros((rows * columns, h, w, c), images.dtype)
  grid[:n] = images
  grid = grid.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4)
  return grid.reshape(rows * h, columns * w, c)


def save_image(path: str | Path, image: np.ndarray) -> Path:
  """Writes one uint8 `[H, W, C]` image (C = 1 grey, 3 RGB, 4 RGBA) as PNG."""
  path = storage.as_path(path)
  if image.dtype != np.uint8:
    raise ValueError(f'save_image expects uint8, got {image.dtype}; convert with to_uint8')
  if image.shape[-1] == 1:
    image = image[..., 0]
  image_format = Image.registered_extensions().get(path.suffix.lower())
  if image_format is None:
    raise ValueError(f'{path}: unknown image file extension {path.suffix!r}; use .png')
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=image_format)
  storage.write_bytes(path, buffer.getvalue())  # whole: also a bucket object
  return path
