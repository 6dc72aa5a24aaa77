"""Charts for benchmarks/parity.py, drawn with Pillow alone (matplotlib is not installed in the
sg2jax or the torch environment here, and a benchmark should not add a dependency).

`plot_panels` draws a grid of line charts: per panel, each side's mean over seeds as a line with
dots and its spread over seeds (min to max) as a translucent band, on axes with round tick values;
an optional dashed horizontal reference line.
"""

import dataclasses
import math
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

COLORS = {'official': (222, 110, 20), 'sg2jax': (31, 98, 190), 'reference': (90, 90, 90)}
PANEL_WIDTH, PANEL_HEIGHT = 520, 330
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 78, 18, 34, 44


@dataclasses.dataclass(frozen=True)
class Band:
  """One side's curve: x positions and the mean, min and max over seeds at each."""
  x: tuple[float, ...]
  mean: tuple[float, ...]
  low: tuple[float, ...]
  high: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Panel:
  """One chart: a title, curves by side, an optional reference value (dashed line) and its
  label."""
  title: str
  bands: dict[str, Band]
  reference: Optional[float] = None
  reference_label: str = ''


def aggregate(runs: Sequence[Sequence[tuple[float, float]]]) -> Optional[Band]:
  """Runs (one list of `(x, value)` per seed, the same x positions in each, None values left out)
  -> the Band of mean, min and max at each position that at least one run has."""
  by_x: dict[float, list[float]] = {}
  for run in runs:
    for x, value in run:
      if value is not None and math.isfinite(value):
        by_x.setdefault(round(x, 6), []).append(value)
  if not by_x:
    return None
  xs = sorted(by_x)
  values = [by_x[x] for x in xs]
  return Band(tuple(xs), tuple(sum(v) / len(v) for v in values), tuple(min(v) for v in values),
              tuple(max(v) for v in values))


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
  """About `count` round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
  if not high > low:
    high = low + (abs(low) or 1.0)
  raw = (high - low) / max(count, 1)
  power = 10 ** math.floor(math.log10(raw))
  step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
  first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
  return [round(i * step, 12) for i in range(first, max(last, first + 1) + 1)]


def format_tick(value: float, step: float) -> str:
  digits = max(0, -math.floor(math.log10(step))) if step > 0 else 0
  return f'{value:.{min(digits, 6)}f}'


def font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1: the bitmap font, one size
    return ImageFont.load_default()


def draw_panel(image: Image.Image, left: int, top: int, panel: Panel) -> None:
  """One chart in the PANEL_WIDTH x PANEL_HEIGHT box at (left, top)."""
  draw = ImageDraw.Draw(image)
  small, title_font = font(13), font(16)
  x0, y0 = left + MARGIN_LEFT, top + MARGIN_TOP
  x1, y1 = left + PANEL_WIDTH - MARGIN_RIGHT, top + PANEL_HEIGHT - MARGIN_BOTTOM
  draw.text((x0, top + 8), panel.title, fill=(0, 0, 0), font=title_font)
  bands = [b for b in panel.bands.values() if b is not None]
  if not bands:
    draw.text((x0 + 10, (y0 + y1) // 2), 'no data', fill=(120, 120, 120), font=small)
    return
  xs = [x for b in bands for x in b.x]
  ys = [y for b in bands for y in b.low + b.high]
  if panel.reference is not None:
    ys.append(panel.reference)
  x_ticks = nice_ticks(0.0, max(xs))
  y_ticks = nice_ticks(min(ys), max(ys))
  x_lo, x_hi, y_lo, y_hi = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
  to_px = lambda x, y: (x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0),
                        y1 - (y - y_lo) / (y_hi - y_lo) * (y1 - y0))

  for tick in x_ticks:
    px = to_px(tick, y_lo)[0]
    draw.line([(px, y0), (px, y1)], fill=(232, 232, 232))
    label = format_tick(tick, x_ticks[1] - x_ticks[0])
    draw.text((px, y1 + 6), label, fill=(60, 60, 60), font=small, anchor='ma')
  for tick in y_ticks:
    py = to_px(x_lo, tick)[1]
    draw.line([(x0, py), (x1, py)], fill=(232, 232, 232))
    label = format_tick(tick, y_ticks[1] - y_ticks[0])
    draw.text((x0 - 6, py), label, fill=(60, 60, 60), font=small, anchor='rm')
  draw.rectangle([(x0, y0), (x1, y1)], outline=(110, 110, 110))
  draw.text(((x0 + x1) / 2, y1 + 24), 'kimg', fill=(60, 60, 60), font=small, anchor='ma')

  overlay = Image.new('RGBA', image.size, (0, 0, 0, 0))
  shade = ImageDraw.Draw(overlay)
  for side, band in panel.bands.items():
    if band is not None and len(band.x) > 1:
      outline = [to_px(x, y) for x, y in zip(band.x, band.high)]
      outline += [to_px(x, y) for x, y in reversed(list(zip(band.x, band.low)))]
      shade.polygon(outline, fill=COLORS[side] + (60,))
  image.alpha_composite(overlay)
  draw = ImageDraw.Draw(image)
  if panel.reference is not None:
    py = to_px(x_lo, panel.reference)[1]
    for start in range(int(x0), int(x1), 12):
      draw.line([(start, py), (min(start + 6, x1), py)], fill=COLORS['reference'], width=2)
    if panel.reference_label:
      draw.text((x1 - 4, py - 3), panel.reference_label, fill=COLORS['reference'], font=small,
                anchor='rb')
  for side, band in panel.bands.items():
    if band is None:
      continue
    points = [to_px(x, y) for x, y in zip(band.x, band.mean)]
    if len(points) > 1:
      draw.line(points, fill=COLORS[side], width=2)
    for px, py in points:
      draw.ellipse([(px - 3, py - 3), (px + 3, py + 3)], fill=COLORS[side])


def plot_panels(panels: Sequence[Panel], path: str | Path, title: str, subtitle: str = '',
                columns: int = 3) -> Path:
  """A grid of `panels` with a title, a subtitle and a legend of the sides, saved as PNG."""
  rows = math.ceil(len(panels) / columns)
  header = 86
  image = Image.new('RGBA', (columns * PANEL_WIDTH, header + rows * PANEL_HEIGHT),
                    (255, 255, 255, 255))
  draw = ImageDraw.Draw(image)
  draw.text((16, 10), title, fill=(0, 0, 0), font=font(20))
  if subtitle:
    draw.text((16, 38), subtitle, fill=(70, 70, 70), font=font(13))
  x = 16
  for side in ('official', 'sg2jax'):
    draw.rectangle([(x, 62), (x + 26, 74)], fill=COLORS[side])
    label = {'official': 'official (stylegan2-ada-pytorch loop)', 'sg2jax': 'sg2jax'}[side]
    draw.text((x + 34, 60), label, fill=(0, 0, 0), font=font(14))
    x += 34 + int(draw.textlength(label, font=font(14))) + 30
  draw.text((x, 60), 'lines: mean over seeds; bands: min to max', fill=(70, 70, 70),
            font=font(13))
  for index, panel in enumerate(panels):
    draw_panel(image, (index % columns) * PANEL_WIDTH, header + (index // columns) * PANEL_HEIGHT,
               panel)
  path = Path(path)
  image.convert('RGB').save(path)
  return path
