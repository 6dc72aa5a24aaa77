"""Seeds, labels and uint8 conversion exactly as the official tools."""

import jax.numpy as jnp
import numpy as np
import pytest

from goldens import DATA, load
from sg2jax.formats.official import load_official_pickle
from sg2jax.images import make_grid, to_uint8
from sg2jax.networks.weights import build_network
from sg2jax.tools.sampling import (class_labels, generate_images, layer_resolutions, parse_range,
                                   with_modconv, z_from_seed)


def test_parse_range():
  assert parse_range('0-3,7,10-11') == [0, 1, 2, 3, 7, 10, 11]
  assert parse_range('5') == [5]
  with pytest.raises(ValueError, match="'a' is not a number or a range"):
    parse_range('1,a')
  with pytest.raises(ValueError, match='is empty'):
    parse_range('7-3')


def test_z_from_seed_is_numpy_randomstate():
  z = z_from_seed(123, 512)
  assert z.shape == (1, 512) and z.dtype == np.float32
  np.testing.assert_array_equal(z, np.random.RandomState(123).randn(1, 512).astype(np.float32))


def test_to_uint8_rounds_like_the_official_tools():
  # floor(127.5 x + 128) clipped: -1 -> 0.5 -> 0; 1 -> 255.5 -> 255; 0 -> 128.
  x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 1 / 127.5 - 1e-6, 1 / 127.5 + 1e-6], np.float32)
  np.testing.assert_array_equal(to_uint8(x), [0, 0, 128, 255, 255, 128, 129])


def test_uint8_images_match_the_official_ones_within_one_level():
  networks = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')
  expected = load('ada_snapshot_tiny_expected.npz')
  g = build_network(networks['G_ema'].config)
  ours = to_uint8(g.apply(networks['G_ema'].variables, jnp.asarray(expected['z']),
                          noise_mode='const'))
  official = to_uint8(np.transpose(expected['img_G_ema_const'], (0, 2, 3, 1)))
  diff = np.abs(ours.astype(int) - official.astype(int))
  assert diff.max() <= 1
  assert (diff == 0).mean() > 0.999


def test_class_labels():
  np.testing.assert_array_equal(class_labels(3, 1, 2), [[0, 1, 0], [0, 1, 0]])
  assert class_labels(0, None, 2) is None
  with pytest.raises(ValueError, match='conditional .3 classes.: pass --class N'):
    class_labels(3, None, 1)
  with pytest.raises(ValueError, match='--class 5 is out of range'):
    class_labels(3, 5, 1)
  with pytest.raises(ValueError, match='--class is only for conditional networks'):
    class_labels(0, 1, 1)


def test_generation_does_not_depend_on_the_batch():
  networks = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')
  g = build_network(networks['G_ema'].config)
  v = networks['G_ema'].variables
  for mode in ('const', 'random'):
    alone = generate_images(g, v, [7], noise_mode=mode, batch_size=1)
    batched = generate_images(g, v, [3, 5, 7], noise_mode=mode, batch_size=2)
    np.testing.assert_allclose(alone[0], batched[2], atol=1e-5)
  assert layer_resolutions(32) == [4, 8, 8, 16, 16, 32, 32]


def test_modconv_forms_give_the_same_images():
  """`with_modconv`: 'auto' is the unfused form on the CPU backend; both forms give the official
  images within one grey level."""
  networks = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')
  expected = load('ada_snapshot_tiny_expected.npz')
  g = build_network(networks['G_ema'].config)
  assert g.fused_modconv and not with_modconv(g, 'auto').fused_modconv
  assert with_modconv(g, 'fused').fused_modconv and not with_modconv(g, 'unfused').fused_modconv
  official = to_uint8(np.transpose(expected['img_G_ema_const'], (0, 2, 3, 1)))
  for form in ('fused', 'unfused'):
    images = with_modconv(g, form).apply(networks['G_ema'].variables, jnp.asarray(expected['z']),
                                         noise_mode='const')
    assert np.abs(to_uint8(images).astype(int) - official.astype(int)).max() <= 1
  with pytest.raises(ValueError, match="modconv form 'grouped' is not one of"):
    with_modconv(g, 'grouped')


def test_make_grid():
  images = np.arange(5 * 2 * 2 * 1, dtype=np.uint8).reshape(5, 2, 2, 1)
  grid = make_grid(images, columns=3)
  assert grid.shape == (4, 6, 1)
  np.testing.assert_array_equal(grid[:2, 2:4], images[1])
  np.testing.assert_array_equal(grid[2:, 4:], 0)
