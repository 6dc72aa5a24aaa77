"""The library behind `python -m sg2jax.explore`: one image of a network for a set of controls, as
one compiled program per view (REFERENCE.md §11.1).

Everything a control changes (the latent position, psi, cutoff, noise mode and seed, style
mixing, direction offsets, the channel shown) is a traced argument, so moving a control never
compiles anything; the view (the image, a lower-resolution preview, or one intermediate layer shown
as a channel grid, one channel or RGB) is static, and its program is compiled on first use and
kept.

The ws of one image, in this order (as the official visualizer, plus directions):
1. Position `(x, y)`: the four integer points around it are seeds `(i + 100 j) mod 2**32`; each
   seed's z is mapped (with the label) and truncated (psi, cutoff); the ws are blended with the
   bilinear weights (REFERENCE.md §11.1). At an integer position one weight is 1 and the others
   0, so the blend is that seed's ws exactly. A projected w replaces the blend.
2. Style mixing: the rows in `mix_layers` come from the (truncated) ws of `mix_seed`.
3. Directions: `Directions.offsets` is added (REFERENCE.md §11.2, §11.3).
"""

import dataclasses
import math
import shlex
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.images import to_uint8
from sg2jax.networks.generator import Generator
from sg2jax.networks.synthesis import NOISE_MODES
from sg2jax.tools.directions import (DEFAULT_GANSPACE_SAMPLES, MAX_DIRECTIONS,
                                     MAX_GANSPACE_SAMPLES, Direction, Directions,
                                     check_directions, format_direction, parse_direction)
from sg2jax.tools.figures import load_projected_ws
from sg2jax.tools.sampling import class_labels, map_seeds, parse_range, z_from_seed

SEED_ROW = 100  # seeds per row of the (x, y) plane, as the official visualizer
SEED_MODULUS = 2 ** 32
MAX_POSITION = 1e9
PSI_RANGE = (-1.0, 2.0)
MAX_STRENGTH = 100.0
LAYER_MODES = ('grid', 'channel', 'rgb')
MAX_GRID_SIDE = 1024  # pixels; larger channel grids are average-pooled down to this
MAX_PROJECTED_FILES = 1000
OUTPUT_VIEW = 'output'


# ----------------------------------------------------------------------------------------------
# Controls.

@dataclasses.dataclass(frozen=True)
class Controls:
  """What one image depends on. `x`, `y`: the latent position (seed `x + 100 y` at integers);
  `cutoff` None truncates every layer; `projected` names a projected w file (replaces the
  position); `layer` None shows the image, else an intermediate (`Explorer.layers`)."""
  x: float = 0.0
  y: float = 0.0
  psi: float = 1.0
  cutoff: Optional[int] = None
  noise_mode: str = 'const'
  noise_seed: int = 0
  class_idx: Optional[int] = None
  mix_seed: Optional[int] = None
  mix_layers: tuple[int, ...] = ()
  directions: tuple[Direction, ...] = ()
  strengths: tuple[float, ...] = ()
  direction_layers: Optional[tuple[int, ...]] = None  # None: every layer
  ganspace_samples: int = DEFAULT_GANSPACE_SAMPLES
  projected: Optional[str] = None
  layer: Optional[str] = None
  layer_mode: str = 'grid'
  channel: int = 0
  normalize: bool = True
  preview: int = 0  # 0: the full image; else the resolution of a preview


def neighbour_seeds(x: float, y: float) -> list[tuple[int, float]]:
  """The four integer points around `(x, y)` as `(seed, bilinear weight)`, weights summing to 1
  (REFERENCE.md §11.1); at an integer point the first has weight 1."""
  x0, y0 = math.floor(x), math.floor(y)
  out = []
  for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
    weight = (1 - abs(x - (x0 + dx))) * (1 - abs(y - (y0 + dy)))
    out.append((((x0 + dx) + (y0 + dy) * SEED_ROW) % SEED_MODULUS, weight))
  return out


def position_seed(x: float, y: float) -> Optional[int]:
  """The seed at an integer position, None between seeds."""
  if x != math.floor(x) or y != math.floor(y):
    return None
  return (int(x) + int(y) * SEED_ROW) % SEED_MODULUS


def position_ws(generator: nn.Module, variables: dict, x: float, y: float,
                truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                class_idx: Optional[int] = None) -> np.ndarray:
  """ws `[1, num_ws, w_dim]` at the position `(x, y)`: the truncated ws of the four neighbouring
  seeds blended bilinearly (`neighbour_seeds`), on the host."""
  seeds = neighbour_seeds(x, y)
  ws = map_seeds(generator, variables, [s for s, _ in seeds], truncation_psi, truncation_cutoff,
                 class_idx)
  return np.einsum('s,slw->lw', np.asarray([w for _, w in seeds], np.float32), ws)[None]


def format_range(values: Sequence[int]) -> str:
  """`[0, 1, 2, 5]` -> `'0-2,5'` (what `parse_range` reads)."""
  values, parts, start = sorted(set(values)), [], None
  for i, value in enumerate(values):
    if start is None:
      start = value
    if i + 1 == len(values) or values[i + 1] != value + 1:
      parts.append(str(start) if start == value else f'{start}-{value}')
      start = None
  return ','.join(parts)


def format_number(value: float) -> str:
  """Shortest text that reads back as the same float (`0.7`, `3`, `-1.25`)."""
  text = repr(float(value))
  return text[:-2] if text.endswith('.0') else text


# ----------------------------------------------------------------------------------------------
# Reading controls from a request (strings), bounded.

QUERY_KEYS = ('seed', 'x', 'y', 'psi', 'cutoff', 'noise', 'noise_seed', 'class', 'mix_seed',
              'mix', 'direction', 'strength', 'direction_layers', 'projected', 'layer',
              'mode', 'channel', 'normalize', 'preview', 'live', 'client')
MAX_VALUE_LENGTH = 512


def _number(query: dict, key: str, default, low: float, high: float, kind=float):
  text = query.get(key)
  if text is None or text == '':
    return default
  try:
    value = kind(text)
  except ValueError:
    what = 'an integer' if kind is int else 'a number'
    raise ValueError(f'{key}={text!r} is not {what}') from None
  if not (low <= value <= high):  # also refuses nan
    raise ValueError(f'{key}={text} is outside [{format_number(low)}, {format_number(high)}]')
  return value


def _flag(query: dict, key: str) -> bool:
  text = query.get(key, '0')
  if text not in ('0', '1', 'true', 'false'):
    raise ValueError(f'{key}={text!r} must be 0 or 1')
  return text in ('1', 'true')


def _layer_list(query: dict, key: str, num_ws: int) -> Optional[tuple[int, ...]]:
  text = query.get(key)
  if text is None:
    return None
  if not text:
    raise ValueError(f'{key} is empty; give layers as e.g. 0-3 or 1,5')
  layers = tuple(parse_range(text))
  bad = [l for l in layers if l >= num_ws]
  if bad:
    raise ValueError(f'{key}: layers {bad} do not exist; this network has ws layers '
                     f'0-{num_ws - 1}')
  return layers


def _preview(query: dict, explorer: 'Explorer') -> int:
  """`preview`: 0 or absent (the full image), 1 (the default preview resolution) or one of the
  preview resolutions."""
  value = _number(query, 'preview', 0, 0, explorer.generator.img_resolution, int)
  if value == 1:
    return explorer.default_preview
  if value and value not in explorer.preview_resolutions:
    raise ValueError(f'preview={value} is not a preview resolution of this network '
                     f'(one of {explorer.preview_resolutions or "none"})')
  return value


def controls_from_query(query: dict[str, str], explorer: 'Explorer') -> Controls:
  """`Controls` from query parameters (one string each), every value checked and bounded.

  Raises:
    ValueError: an unknown or malformed parameter, or a value out of range (one line naming it).
  """
  unknown = sorted(set(query) - set(QUERY_KEYS))
  if unknown:
    raise ValueError(f'unknown parameter {unknown[0]!r}; known: {", ".join(QUERY_KEYS)}')
  for key, value in query.items():
    if len(value) > MAX_VALUE_LENGTH:
      raise ValueError(f'parameter {key} is longer than {MAX_VALUE_LENGTH} characters')
  g = explorer.generator
  seed = _number(query, 'seed', None, 0, SEED_MODULUS - 1, int)
  if seed is not None and ('x' in query or 'y' in query):
    raise ValueError('pass either seed or a position x, y, not both')
  x = float(seed) if seed is not None else _number(query, 'x', 0.0, -MAX_POSITION, MAX_POSITION)
  y = _number(query, 'y', 0.0, -MAX_POSITION, MAX_POSITION)
  noise_mode = query.get('noise', 'const')
  if noise_mode not in NOISE_MODES:
    raise ValueError(f'noise={noise_mode!r} is not one of {", ".join(NOISE_MODES)}')
  if not g.c_dim and query.get('class'):
    raise ValueError('class is only for conditional networks; this one has none')
  class_idx = _number(query, 'class', 0, 0, g.c_dim - 1, int) if g.c_dim else None
  mix_seed = _number(query, 'mix_seed', None, 0, SEED_MODULUS - 1, int)
  mix_layers = _layer_list(query, 'mix', g.num_ws) if query.get('mix') else ()
  if mix_layers and mix_seed is None:
    raise ValueError('mix names layers but no mix_seed to take them from')
  directions = tuple(parse_direction(d) for d in query.get('direction', '').split(',') if d)
  strengths = tuple(float(_number({'strength': s}, 'strength', 0.0, -MAX_STRENGTH, MAX_STRENGTH))
                    for s in query.get('strength', '').split(',') if s)
  check_directions(directions, strengths)
  layer = query.get('layer') or None
  if layer is not None and layer not in explorer.layers:
    raise ValueError(f'layer={layer!r} is not a layer of this network (see /api/info)')
  mode = query.get('mode', 'grid')
  if mode not in LAYER_MODES:
    raise ValueError(f'mode={mode!r} is not one of {", ".join(LAYER_MODES)}')
  channels = explorer.layers[layer][-1] if layer else 3
  if layer and mode == 'rgb' and channels != 3:
    raise ValueError(f'mode=rgb needs a layer with 3 channels; {layer} has {channels}')
  projected = query.get('projected') or None
  if projected is not None and projected not in explorer.projected_files:
    raise ValueError(f'projected={projected!r} is not one of the projected w files this server '
                     f'was given')
  return Controls(
      x=x, y=y, psi=_number(query, 'psi', 1.0, *PSI_RANGE),
      cutoff=_number(query, 'cutoff', None, 0, g.num_ws, int),
      noise_mode=noise_mode, noise_seed=_number(query, 'noise_seed', 0, 0, SEED_MODULUS - 1, int),
      class_idx=class_idx, mix_seed=mix_seed, mix_layers=mix_layers, directions=directions,
      strengths=strengths, direction_layers=_layer_list(query, 'direction_layers', g.num_ws),
      ganspace_samples=explorer.ganspace_samples,
      projected=projected, layer=layer, layer_mode=mode,
      channel=_number(query, 'channel', 0, 0, channels - 1, int),
      normalize=_flag(query, 'normalize') if 'normalize' in query else True,
      preview=_preview(query, explorer))


# ----------------------------------------------------------------------------------------------
# The compiled programs.

class View(NamedTuple):
  """What a program returns: the image (`layer` None, at `resolution`), or a layer's activation
  shown as `mode`."""
  layer: Optional[str]
  mode: str = 'grid'
  preview: int = 0  # a preview's resolution, 0 for the full image


def _module_path(layer: str) -> tuple[str, ...]:
  """`'b8.conv0'` -> `('synthesis', 'b8', 'conv0')`; `'b8:img'` -> `('synthesis', 'b8')`."""
  name = layer.split(':')[0]
  return ('synthesis',) if name == OUTPUT_VIEW else ('synthesis', *name.split('.'))


def _grid(act: jnp.ndarray) -> jnp.ndarray:
  """`[H, W, C]` -> one grey image `[rows * h, cols * w, 1]` of the channels, side by side
  (average-pooled so that no side exceeds `MAX_GRID_SIDE`)."""
  h, w, c = act.shape
  cols = math.ceil(math.sqrt(c))
  rows = math.ceil(c / cols)
  pool = 1
  while max(rows, cols) * max(h, w) // pool > MAX_GRID_SIDE and pool < min(h, w):
    pool *= 2
  act = act.reshape(h // pool, pool, w // pool, pool, c).mean(axis=(1, 3))
  act = jnp.pad(act, ((0, 0), (0, 0), (0, rows * cols - c)))
  act = act.reshape(h // pool, w // pool, rows, cols).transpose(2, 0, 3, 1)  # [rows, h, cols, w]
  return act.reshape(rows * (h // pool), cols * (w // pool), 1)


def _show_layer(act: jnp.ndarray, mode: str, channel: jnp.ndarray, normalize: jnp.ndarray):
  """An activation `[H, W, C]` as a displayable image in [-1, 1] units, and its statistics
  `[mean, std, max |x|]` over all channels and over the channel(s) shown."""
  if mode == 'channel':
    shown = jax.lax.dynamic_slice_in_dim(act, channel, 1, axis=2)
  else:
    shown = act
  stats = jnp.stack([act.mean(), act.std(), jnp.abs(act).max(),
                     shown.mean(), shown.std(), jnp.abs(shown).max()])
  if mode == 'rgb':
    scale = jnp.abs(shown).max()
  else:  # every channel its own scale, as the official layer view normalizes
    scale = jnp.abs(shown).max(axis=(0, 1), keepdims=True)
  shown = jnp.where(normalize, shown / jnp.maximum(scale, 1e-8), shown)
  return (_grid(shown) if mode == 'grid' else shown), stats


def _noise_layers(generator: Generator) -> list[tuple[str, str, int]]:
  """The convolutions with noise inputs, in the order of the `noise` argument:
  `(block, layer, resolution)` (REFERENCE.md §1.7)."""
  resolutions = [2 ** k for k in range(3, int(math.log2(generator.img_resolution)) + 1)]
  return [('b4', 'conv1', 4)] + [(f'b{r}', f'conv{i}', r) for r in resolutions for i in (0, 1)]


def make_program(generator: Generator, view: View):
  """The jitted render function of one view: `(variables, inputs) -> (image, stats)`;
  `inputs` is `Explorer._inputs`' dict of arrays (all traced)."""
  noise_layers = _noise_layers(generator) if generator.use_noise else []

  def render(variables, inputs):
    zs = jnp.concatenate([inputs['zs'], inputs['mix_z'][None]])  # [5, z_dim]
    ws_all = generator.apply(variables, zs, inputs['c'], inputs['psi'], inputs['cutoff'],
                             method='map')  # [5, num_ws, w_dim]
    ws = jnp.einsum('s,slw->lw', inputs['weights'], ws_all[:4])
    ws = jnp.where(inputs['use_projected'], inputs['projected'], ws)
    ws = jnp.where(inputs['mix_mask'][:, None], ws_all[4], ws)
    ws = (ws + inputs['offsets'])[None]  # [1, num_ws, w_dim]
    noise, noise_mode = None, 'none'
    if noise_layers:
      keys = jax.random.split(jax.random.key(inputs['noise_seed']), len(noise_layers))
      buffers = variables['buffers']['synthesis']
      noise = []
      for key, (block, layer, res) in zip(keys, noise_layers):
        const = buffers[block][layer]['noise_const'][None, :, :, None]
        random = jax.random.normal(key, (res, res, 1))[None]
        noise.append(inputs['noise_weights'][0] * const + inputs['noise_weights'][1] * random)
      noise_mode = 'const'  # ignored: the maps are given
    if view.layer is None and not view.preview:
      image = generator.apply(variables, ws, noise_mode, noise, method='synthesize')
      return image[0], jnp.zeros(6)
    target = _module_path(view.layer or f'b{view.preview}:img')
    _, state = generator.apply(
        variables, ws, noise_mode, noise, method='synthesize', mutable=['intermediates'],
        capture_intermediates=lambda module, method: (method == '__call__'
                                                      and module.path == target))
    node = state['intermediates']
    for name in target:
      node = node[name]
    out = node['__call__'][0]
    if isinstance(out, tuple):  # a block: (features, image)
      out = out[1] if (view.layer or ':img').endswith(':img') else out[0]
    if view.layer is None:  # the preview: the skip image of block `view.preview`
      return out[0], jnp.zeros(6)
    return _show_layer(out[0].astype(jnp.float32), view.mode, inputs['channel'],
                       inputs['normalize'])

  return jax.jit(render)


def synthesis_layers(generator: Generator, variables: dict) -> dict[str, tuple[int, ...]]:
  """Every 4-D intermediate of the synthesis network as `{name: (H, W, C)}`, in network order:
  `b8.conv0` (a layer), `b8.torgb`, `b8:x` and `b8:img` (a block's two outputs), `output`.
  Found by tracing shapes only (nothing is computed)."""
  ws = jnp.zeros((1, generator.num_ws, generator.w_dim))
  _, state = jax.eval_shape(lambda v, ws: generator.apply(
      v, ws, 'const', method='synthesize', mutable=['intermediates'],
      capture_intermediates=True), variables, ws)
  found = {}

  def visit(prefix: list[str], node) -> None:
    for key, value in node.items():
      if key == '__call__':
        outputs = value[0]
        name = '.'.join(prefix[1:]) or OUTPUT_VIEW
        if isinstance(outputs, tuple):
          for suffix, out in zip(('x', 'img'), outputs):
            if out is not None and len(out.shape) == 4:
              found[f'{name}:{suffix}'] = tuple(out.shape[1:])
        elif len(outputs.shape) == 4:
          found[name] = tuple(outputs.shape[1:])
      else:
        visit(prefix + [key], value)

  visit(['synthesis'], state['intermediates']['synthesis'])
  output = found.pop(OUTPUT_VIEW)
  parts = ('.conv0', '.conv1', '.torgb', ':x', ':img')
  order = lambda name: (int(name[1:].split('.')[0].split(':')[0]),
                        [i for i, part in enumerate(parts) if name.endswith(part)], name)
  return {**{k: found[k] for k in sorted(found, key=order)}, OUTPUT_VIEW: output}


# ----------------------------------------------------------------------------------------------
# The explorer.

class Rendered(NamedTuple):
  image: np.ndarray            # uint8 [H, W, C]
  stats: Optional[dict]        # a layer view's statistics (None for the image)
  render_ms: float             # time in the compiled program and the conversion
  compiled: bool               # this call compiled its program first


class Explorer:
  """One network, its compiled views and its directions.

  Args:
    generator, variables: a StyleGAN2 `Generator` and its variables.
    network: the path it was loaded from (GANSpace caches go beside it, and capture commands
      name it).
    projected_dir: a folder whose `*.npz` files (projected ws) may be chosen, by name.
    ganspace_samples: N of GANSpace (fixed for the server: each N is computed and cached once,
      so requests cannot make it compute or write without end).
  """

  def __init__(self, generator: nn.Module, variables: dict, network: str | Path,
               projected_dir: Optional[str | Path] = None,
               ganspace_samples: int = DEFAULT_GANSPACE_SAMPLES):
    if not isinstance(generator, Generator):
      raise ValueError(f'the explorer takes StyleGAN2 generators (configs E/F and the Table 2 '
                       f'variants); this network is a {type(generator).__name__}')
    if not 2 <= ganspace_samples <= MAX_GANSPACE_SAMPLES:
      raise ValueError(f'--ganspace-samples {ganspace_samples} is outside '
                       f'[2, {MAX_GANSPACE_SAMPLES}]')
    self.generator, self.variables, self.network = generator, variables, str(network)
    self.ganspace_samples = ganspace_samples
    self.directions = Directions(generator, variables, network, ganspace_samples)
    self.layers = synthesis_layers(generator, variables)
    self.projected_files = self._find_projected(projected_dir)
    self._programs: dict[View, Any] = {}
    self._lock = threading.Lock()

  @staticmethod
  def _find_projected(directory) -> dict[str, Path]:
    if directory is None:
      return {}
    root = Path(directory).resolve()
    if not root.is_dir():
      raise NotADirectoryError(f'--projected-dir {directory} is not a folder')
    files = {}
    for path in sorted(root.rglob('*.npz')):
      # Only regular files inside the folder (a link pointing outside is left out).
      if path.is_file() and path.resolve().is_relative_to(root):
        files[path.relative_to(root).as_posix()] = path.resolve()
        if len(files) == MAX_PROJECTED_FILES:
          break
    return files

  @property
  def preview_resolutions(self) -> list[int]:
    """Previews of skip generators (their image is built up block by block): the image so far
    at block R/2, R/4, ... down to 8 (the programs skip every later block); none for others."""
    if self.generator.architecture != 'skip':
      return []
    return [r for r in (2 ** k for k in range(3, 11)) if r < self.generator.img_resolution][::-1]

  @property
  def default_preview(self) -> int:
    """R/4 from 128 up (at 256, the blocks after 64x64 are two thirds of config F's arithmetic),
    else R/2; 0 without previews."""
    options = self.preview_resolutions
    if not options:
      return 0
    return options[1] if self.generator.img_resolution >= 128 and len(options) > 1 else options[0]

  def info(self) -> dict:
    g = self.generator
    return dict(
        network=Path(self.network).name, resolution=g.img_resolution,
        architecture=g.architecture, z_dim=g.z_dim, w_dim=g.w_dim, c_dim=g.c_dim,
        num_ws=g.num_ws, has_noise=bool(g.use_noise),
        preview_resolutions=self.preview_resolutions, default_preview=self.default_preview,
        layers=[[name, list(shape)] for name, shape in self.layers.items()],
        projected=list(self.projected_files), seed_row=SEED_ROW,
        psi_range=list(PSI_RANGE), max_strength=MAX_STRENGTH, max_directions=MAX_DIRECTIONS,
        ganspace_samples=self.ganspace_samples)


  def _inputs(self, controls: Controls) -> dict:
    g = self.generator
    seeds = neighbour_seeds(controls.x, controls.y)
    zs = np.concatenate([z_from_seed(s, g.z_dim) for s, _ in seeds])
    mix_seed = controls.mix_seed if controls.mix_seed is not None else seeds[0][0]
    c = class_labels(g.c_dim, controls.class_idx, 5)
    projected = np.zeros((g.num_ws, g.w_dim), np.float32)
    if controls.projected is not None:
      projected = load_projected_ws(self.projected_files[controls.projected], g.num_ws,
                                    g.w_dim)[0]
    mix_mask = np.zeros(g.num_ws, bool)
    mix_mask[list(controls.mix_layers)] = controls.mix_seed is not None
    layers = (range(g.num_ws) if controls.direction_layers is None
              else controls.direction_layers)
    # A direction at strength 0 changes nothing: its basis is not even computed.
    edits = [(d, s) for d, s in zip(controls.directions, controls.strengths) if s != 0]
    offsets = self.directions.offsets(
        [d for d, _ in edits], [s for _, s in edits], layers, controls.class_idx)
    return dict(
        zs=zs, mix_z=z_from_seed(mix_seed, g.z_dim)[0], c=c,
        weights=np.asarray([w for _, w in seeds], np.float32),
        psi=np.float32(controls.psi),
        cutoff=np.int32(g.num_ws if controls.cutoff is None else controls.cutoff),
        projected=projected, use_projected=np.bool_(controls.projected is not None),
        mix_mask=mix_mask, offsets=offsets,
        noise_seed=np.uint32(controls.noise_seed),
        noise_weights=np.asarray([controls.noise_mode == 'const',
                                  controls.noise_mode == 'random'], np.float32),
        channel=np.int32(controls.channel), normalize=np.bool_(controls.normalize))

  def view(self, controls: Controls) -> View:
    if controls.layer is not None:
      return View(controls.layer, controls.layer_mode)
    return View(None, preview=controls.preview)

  def render(self, controls: Controls) -> Rendered:
    """The image (or layer view) for `controls`. Renders one at a time (the programs use every
    core)."""
    with self._lock:
      view = self.view(controls)
      compiled = view not in self._programs
      if compiled:
        self._programs[view] = make_program(self.generator, view)
      inputs = self._inputs(controls)
      start = time.perf_counter()
      image, stats = self._programs[view](self.variables, inputs)
      image = to_uint8(image)
      elapsed = (time.perf_counter() - start) * 1e3
    names = ('mean', 'std', 'max', 'shown_mean', 'shown_std', 'shown_max')
    stats = dict(zip(names, map(float, np.asarray(stats)))) if view.layer else None
    return Rendered(image, stats, elapsed, compiled)

  def command(self, controls: Controls, network: Optional[str] = None,
              outdir: str = 'out') -> tuple[str, str]:
    """The `python -m sg2jax.generate` command that writes this image (the full image, not a
    preview or layer), and the file it writes."""
    g = self.generator
    args = ['python', '-m', 'sg2jax.generate', '--network', network or self.network]
    seed = position_seed(controls.x, controls.y)
    if controls.projected is not None:
      args += ['--projected-w', str(self.projected_files[controls.projected])]
      written = 'proj00.png'
    elif seed is not None:
      args += ['--seeds', str(seed)]
      written = f'seed{seed:04d}.png'
    else:
      args += ['--position', f'{format_number(controls.x)},{format_number(controls.y)}']
      written = 'position.png'
    if controls.psi != 1:
      args += ['--trunc', format_number(controls.psi)]
    if controls.cutoff is not None and controls.cutoff < g.num_ws:
      args += ['--trunc-cutoff', str(controls.cutoff)]
    args += ['--noise-mode', controls.noise_mode]
    if controls.noise_mode == 'random':
      args += ['--noise-seed', str(controls.noise_seed)]
    if controls.class_idx is not None:
      args += ['--class', str(controls.class_idx)]
    if controls.mix_seed is not None and controls.mix_layers:
      args += ['--mix-seed', str(controls.mix_seed), '--mix-layers',
               format_range(controls.mix_layers)]
    edits = [(d, s) for d, s in zip(controls.directions, controls.strengths) if s != 0]
    for direction, strength in edits:
      args += ['--direction', format_direction(direction), '--strength', format_number(strength)]
    if edits and controls.direction_layers is not None:
      args += ['--direction-layers', format_range(controls.direction_layers)]
    if any(d.method == 'ganspace' for d, _ in edits):
      args += ['--ganspace-samples', str(controls.ganspace_samples)]
    args += ['--outdir', outdir]
    return shlex.join(args), written
