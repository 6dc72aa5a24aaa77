"""Style mixing, interpolation, truncation sweeps and projected ws: each figure against G called
directly on the ws it should show, and the `sg2jax.generate` flags that write them."""

import contextlib
import functools
import io
from pathlib import Path

import imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from pixels import assert_same_image
from sg2jax import generate
from sg2jax.formats.official import load_official_pickle
from sg2jax.images import to_uint8
from sg2jax.networks.generator import mix_styles
from sg2jax.networks.weights import build_network
from sg2jax.tools import figures
from sg2jax.tools.sampling import generate_images, z_from_seed

DATA = Path(__file__).parent / 'data'
NETWORK = DATA / 'ada_snapshot_tiny.pkl'
# Images of this random-weight network reach |x| ~ 6; float32 sums in another order (batched,
# jitted) differ from a direct call by ~1e-6 of that.
ATOL = 1e-4


@pytest.fixture(scope='module')
def tiny():
  net = load_official_pickle(NETWORK)['G_ema']
  return build_network(net.config), net.variables


def g_ws(g, v, seeds, psi=1.0):
  z = jnp.asarray(np.concatenate([z_from_seed(s, g.z_dim) for s in seeds]))
  return np.array(g.apply(v, z, truncation_psi=psi, method='map'))


@functools.partial(jax.jit, static_argnums=0)
def g_synthesize(g, v, ws):
  return g.apply(v, ws, noise_mode='const', method='synthesize')


def g_images(g, v, ws):
  """G on ws (const noise), directly; padded to 8 rows so that one compiled call serves all."""
  ws = np.asarray(ws)
  padded = np.concatenate([ws, np.zeros((8 - len(ws),) + ws.shape[1:], ws.dtype)])
  return np.asarray(g_synthesize(g, v, padded))[:len(ws)]


def run_generate(*args):
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    assert generate.main(['--network', str(NETWORK), *map(str, args)]) == 0
  return printed.getvalue()


def read_png(path):
  return np.asarray(Image.open(path))


def test_style_mixing_cells_equal_g_on_the_mixed_ws(tiny):
  g, v = tiny
  rows, cols = [1, 2], [3, 4, 5]
  figure = figures.style_mixing(g, v, rows, cols, layers=range(4), truncation_psi=0.7)
  ws_rows, ws_cols = g_ws(g, v, rows, 0.7), g_ws(g, v, cols, 0.7)
  np.testing.assert_allclose(figure.row_images, g_images(g, v, ws_rows), rtol=0, atol=ATOL)
  np.testing.assert_allclose(figure.col_images, g_images(g, v, ws_cols), rtol=0, atol=ATOL)
  for i in range(len(rows)):
    # Layers 0-3 (coarse) from the column seed, the rest from the row seed.
    mixed = mix_styles(ws_cols, np.broadcast_to(ws_rows[i], ws_cols.shape), 4)
    np.testing.assert_allclose(figure.cells[i], g_images(g, v, mixed), rtol=0, atol=ATOL)
  # Layers that are not a prefix.
  figure = figures.style_mixing(g, v, [1], [3], layers=[5, 7])
  ws = g_ws(g, v, [1])
  ws[:, [5, 7]] = g_ws(g, v, [3])[:, [5, 7]]
  np.testing.assert_allclose(figure.cells[0], g_images(g, v, ws), rtol=0, atol=ATOL)


def test_style_mixing_grid_has_the_official_layout(tiny):
  g, v = tiny
  figure = figures.style_mixing(g, v, [1, 2], [3, 4, 5], layers=range(4))
  grid = figures.style_mixing_grid(figure)
  r = g.img_resolution
  assert grid.shape == (3 * r, 4 * r, 3)
  np.testing.assert_array_equal(grid[:r, :r], 0)  # empty corner
  np.testing.assert_array_equal(grid[:r, 3 * r:], to_uint8(figure.col_images[2]))
  np.testing.assert_array_equal(grid[2 * r:, :r], to_uint8(figure.row_images[1]))
  np.testing.assert_array_equal(grid[2 * r:, 2 * r:3 * r], to_uint8(figure.cells[1, 1]))


def test_style_mixing_errors(tiny):
  g, v = tiny
  with pytest.raises(ValueError, match=r'style layers \[8, 9\] do not exist: this network has ws '
                                       r'layers 0-7'):
    figures.style_mixing(g, v, [1], [2], layers=range(6, 10))
  from goldens import golden_network
  cond_g, cond_v = golden_network('cond_G_skip', 'cond_G_skip_params.npz')
  with pytest.raises(ValueError, match='conditional .4 classes.: pass --class N'):
    figures.style_mixing(cond_g, cond_v, [1], [2])


@pytest.mark.parametrize('space', ['w', 'z'])
def test_interpolation_end_frames_equal_the_endpoint_images(tiny, space):
  g, v = tiny
  frames = figures.interpolate(g, v, 3, 8, 5, space=space)
  assert frames.shape == (5, 32, 32, 3)
  ends = generate_images(g, v, [3, 8], noise_mode='const')
  np.testing.assert_allclose(frames[0], ends[0], rtol=0, atol=ATOL)
  np.testing.assert_allclose(frames[-1], ends[1], rtol=0, atol=ATOL)
  ws = g_ws(g, v, [3, 8])
  if space == 'w':  # the middle frame is G at the midpoint of the ws
    np.testing.assert_allclose(frames[2], g_images(g, v, (ws[:1] + ws[1:]) / 2)[0], atol=ATOL)
  assert np.abs(frames[2] - frames[0]).mean() > 0.05 and np.abs(frames[2] - frames[4]).mean() > 0.05


def test_slerp():
  a, b = np.array([2.0, 0, 0]), np.array([0, 2.0, 0])
  out = figures.slerp(a, b, np.array([0, 0.5, 1]))
  np.testing.assert_allclose(out, [[2, 0, 0], [np.sqrt(2), np.sqrt(2), 0], [0, 2, 0]], atol=1e-12)
  np.testing.assert_allclose(figures.slerp(a, 3 * a, np.array([0.5])), [[4, 0, 0]])  # parallel
  assert figures.strip_indices(4) == [0, 1, 2, 3]
  assert figures.strip_indices(60) == [0, 7, 13, 20, 26, 33, 39, 46, 52, 59]


def test_truncation_sweep(tiny):
  g, v = tiny
  images = figures.truncation_sweep(g, v, [1, 2], [1.0, 0.0, -1.0])
  assert images.shape == (2, 3, 32, 32, 3)
  np.testing.assert_allclose(images[:, 0], generate_images(g, v, [1, 2]), rtol=0, atol=ATOL)
  np.testing.assert_allclose(images[0, 1], images[1, 1], rtol=0, atol=ATOL)  # psi 0: w_avg
  w_avg = np.asarray(v['stats']['mapping']['w_avg'])
  opposite = 2 * w_avg - g_ws(g, v, [2])
  np.testing.assert_allclose(images[1, 2], g_images(g, v, opposite)[0], rtol=0, atol=ATOL)


@pytest.mark.filterwarnings('ignore:os.fork:RuntimeWarning')  # imageio starts ffmpeg
def test_generate_figures(tmp_path, tiny):
  g, v = tiny
  out = run_generate('--outdir', tmp_path, '--style-mix', '1,2', '3-5', '--mix-layers', '0-3',
                     '--trunc', '0.7')
  assert 'stylemix.png (2 x 3 cells)' in out
  figure = figures.style_mixing(g, v, [1, 2], [3, 4, 5], layers=range(4), truncation_psi=0.7)
  assert_same_image(read_png(tmp_path / 'stylemix.png'), figures.style_mixing_grid(figure),
                    'generate --style-mix')

  run_generate('--outdir', tmp_path, '--interpolate', '3', '8', '--frames', '12', '--space', 'z')
  strip = read_png(tmp_path / 'interpolation.png')
  assert strip.shape == (32, 10 * 32, 3)
  ends = to_uint8(generate_images(g, v, [3, 8]))
  assert np.abs(strip[:, :32].astype(int) - ends[0]).max() <= 1
  assert np.abs(strip[:, -32:].astype(int) - ends[1]).max() <= 1
  video = np.stack(imageio.mimread(tmp_path / 'interpolation.mp4'))
  assert video.shape == (12, 32, 32, 3)
  run_generate('--outdir', tmp_path, '--interpolate', '3', '8', '--frames', '4',
               '--video-format', 'gif')
  gif = np.stack(imageio.mimread(tmp_path / 'interpolation.gif'))
  assert gif.shape[:3] == (4, 32, 32)
  first, last = read_png(tmp_path / 'interpolation.png')[:, :32], ends[1]
  gif = gif[..., :3].astype(int)  # gif frames are palette-quantized: near, not equal
  assert np.abs(gif[0] - first).mean() < np.abs(gif[0] - last).mean() / 2

  run_generate('--outdir', tmp_path, '--seeds', '1,2', '--trunc-sweep', '1,0.5,0')
  sweep = read_png(tmp_path / 'truncation.png')
  assert sweep.shape == (2 * 32, 3 * 32, 3)
  row2 = to_uint8(figures.truncation_sweep(g, v, [2], [1.0, 0.5, 0.0]))[0]  # seed 2 at each psi
  np.testing.assert_array_equal(sweep[32:], np.concatenate(list(row2), axis=1))


def test_generate_renders_projected_ws(tmp_path, tiny):
  g, v = tiny
  ws = np.asarray(g_ws(g, v, [4, 6], 0.5))
  np.savez(tmp_path / 'projected_w.npz', w=ws)
  out = run_generate('--outdir', tmp_path, '--projected-w', tmp_path / 'projected_w.npz')
  assert 'wrote 2 images' in out
  expected = to_uint8(g_images(g, v, ws))
  for i in range(2):
    assert np.abs(read_png(tmp_path / f'proj{i:02d}.png').astype(int) - expected[i]).max() <= 1
  np.savez(tmp_path / 'other.npz', w=np.zeros((1, 14, 512), np.float32))
  with pytest.raises(ValueError, match=r'holds w of shape \[1, 14, 512\], but this network takes '
                                       r'\[N, 8, 32\]'):
    run_generate('--outdir', tmp_path, '--projected-w', tmp_path / 'other.npz')


def test_generate_needs_seeds_or_a_figure(tmp_path):
  with pytest.raises(ValueError, match='pass --seeds'):
    run_generate('--outdir', tmp_path)
