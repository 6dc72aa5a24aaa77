"""SeFa and GANSpace against direct numpy computations, their caches, and edits that stay in their
layer range (sg2jax/tools/directions.py)."""

import numpy as np
import pytest

from goldens import DATA
from sg2jax.formats.official import load_official_pickle
from sg2jax.networks.weights import build_network
from sg2jax.tools import directions as dirs
from sg2jax.tools.sampling import map_seeds


@pytest.fixture(scope='module')
def network():
  net = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')['G_ema']
  return build_network(net.config), net.variables


def style_affine(variables, layer):
  """The affine of the layer that reads ws row `layer` alone, found by the row rule of
  REFERENCE.md §1.6 (4x4 conv1 reads 0; at res 2^k conv0 reads 2k-5 and conv1 2k-4; the last
  ToRGB reads the last row, 7 at 32x32)."""
  if layer == 7:
    block, conv = 32, 'torgb'
  elif layer == 0:
    block, conv = 4, 'conv1'
  else:
    k = (layer + 5) // 2
    block, conv = 2 ** k, 'conv0' if layer == 2 * k - 5 else 'conv1'
  return np.asarray(variables['params']['synthesis'][f'b{block}'][conv]['affine']['weight'],
                    np.float64)


def assert_same_directions(ours, reference, count, what):
  """Rows equal up to sign (eigenvectors are defined up to sign; ours have a fixed one)."""
  for k in range(count):
    dot = abs(float(np.dot(ours[k], reference[k])))
    assert dot == pytest.approx(1, abs=1e-6), f'{what} {k}: |cos| = {dot}'


@pytest.mark.parametrize('layers', [range(0, 8), [1, 2, 3], [6], [7]])
def test_sefa_is_the_eigenvectors_of_the_normalized_affine_weights(network, layers):
  _, variables = network
  ours, eigenvalues = dirs.sefa(variables, layers)
  a = np.concatenate([style_affine(variables, l) for l in layers], axis=1)  # [w_dim, sum C]
  a /= np.sqrt((a ** 2).sum(axis=0))
  u, s, _ = np.linalg.svd(a)  # A A^T = U S^2 U^T
  np.testing.assert_allclose(eigenvalues[:len(s)], s ** 2, rtol=1e-8, atol=1e-10)
  assert np.abs(eigenvalues[len(s):]).max(initial=0) < 1e-10  # rank sum C < w_dim
  distinct = int(np.argmax(np.diff(s ** 2) > -1e-6 * s[0] ** 2)) or len(s) - 1
  assert_same_directions(ours, u.T, min(distinct, 8), 'SeFa direction')
  np.testing.assert_allclose(ours @ ours.T, np.eye(len(ours)), atol=1e-10)
  # The sign rule: each direction's largest entry is positive.
  assert (ours[np.arange(len(ours)), np.abs(ours).argmax(axis=1)] > 0).all()


def test_sefa_ignores_a_common_scale_and_refuses_layers_that_do_not_exist(network):
  _, variables = network
  ours, _ = dirs.sefa(variables, range(7))
  scaled = {'params': {'synthesis': {
      block: {layer: ({**leaves, 'affine': {'weight': np.asarray(leaves['affine']['weight']) * 3.7}}
                      if 'affine' in leaves else leaves) for layer, leaves in layers.items()}
      if isinstance(layers, dict) else layers
      for block, layers in variables['params']['synthesis'].items()}}}
  # (within float32 rounding of the scaled weights)
  np.testing.assert_allclose(dirs.sefa(scaled, range(7))[0][:4], ours[:4], atol=1e-6)
  with pytest.raises(ValueError, match=r'ws layers \[8\] do not exist; SeFa takes layers 0-7'):
    dirs.sefa(variables, [8])


def test_ganspace_is_the_pca_of_mapped_ws(network):
  g, variables = network
  n = 300
  ours = dirs.ganspace(g, variables, n, chunk=128)
  z = np.random.RandomState(dirs.GANSPACE_SEED).randn(n, g.z_dim).astype(np.float32)
  w = np.asarray(g.apply(variables, z, method='map'))[:, 0].astype(np.float64)
  centred = w - w.mean(axis=0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  np.testing.assert_allclose(ours.mean, w.mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(ours.stds, s / np.sqrt(n - 1), rtol=1e-4, atol=1e-6)
  assert_same_directions(ours.components, vt, 8, 'GANSpace component')
  assert ours.num_samples == n


def test_ganspace_is_cached_beside_the_network_or_in_the_user_cache(network, tmp_path,
                                                                     monkeypatch):
  g, variables = network
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
  (tmp_path / 'nets').mkdir()
  fingerprint = dirs.variables_fingerprint(variables)
  beside = dirs.ganspace_cache_path(tmp_path / 'nets' / 'g.pkl', fingerprint, 40)
  assert beside.parent == tmp_path / 'nets' and beside.name.startswith('g.pkl.ganspace-')
  # A folder no file can be created in (even as root): the user's cache instead.
  elsewhere = dirs.ganspace_cache_path('/proc/cpuinfo', fingerprint, 40, class_idx=2)
  assert elsewhere.parent == tmp_path / 'cache' / 'sg2jax' / 'ganspace'
  assert elsewhere.name.endswith('-n40-c2.npz')

  first, path = dirs.cached_ganspace(g, variables, tmp_path / 'nets' / 'g.pkl', 40)
  assert path == beside and path.is_file()
  monkeypatch.setattr(dirs, 'ganspace', lambda *a, **k: pytest.fail('recomputed'))
  again, _ = dirs.cached_ganspace(g, variables, tmp_path / 'nets' / 'g.pkl', 40)
  np.testing.assert_array_equal(again.components, first.components)


def test_a_direction_changes_only_the_ws_of_its_layers(network, tmp_path):
  g, variables = network
  source = dirs.Directions(g, variables, tmp_path / 'g.pkl', ganspace_samples=50)
  ws = map_seeds(g, variables, [3])
  directions = [dirs.parse_direction('sefa:1'), dirs.parse_direction('ganspace:0')]
  offsets = source.offsets(directions, [2.5, -1.5], [2, 3, 4])
  edited = ws + offsets
  untouched = [0, 1, 5, 6, 7]
  np.testing.assert_array_equal(edited[:, untouched], ws[:, untouched])
  space = source.ganspace_basis()
  expected = 2.5 * source.sefa_basis([2, 3, 4])[1] - 1.5 * space.stds[0] * space.components[0]
  for layer in (2, 3, 4):
    np.testing.assert_allclose(edited[0, layer] - ws[0, layer], expected, atol=1e-5)


def test_direction_errors_are_one_line():
  with pytest.raises(ValueError, match="direction 'pca:1' is not METHOD:K"):
    dirs.parse_direction('pca:1')
  with pytest.raises(ValueError, match='2 directions but 1 strengths'):
    dirs.layer_offsets(np.ones((2, 4)), [1.0], [0], 4)
  with pytest.raises(ValueError, match=r'direction layers \[9\] do not exist'):
    dirs.layer_offsets(np.ones((1, 4)), [1.0], [9], 4)
