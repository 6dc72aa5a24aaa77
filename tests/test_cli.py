"""`python -m sg2jax.convert` and `python -m sg2jax.generate`, run as users run them."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from goldens import DATA, golden_network
from pixels import assert_same_image
from sg2jax.checkpoint import save_networks
from sg2jax.formats.official import load_official_pickle
from sg2jax.images import make_grid, to_uint8
from sg2jax.networks.weights import NetworkWeights, build_network, network_config
from sg2jax.tools.sampling import z_from_seed


def run(*args):
  return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, timeout=300)


def read_png(path):
  return np.asarray(Image.open(path))


@pytest.fixture(scope='module')
def expected_images():
  """G_ema of the snapshot on seeds 0-2, psi 0.7, const noise, computed in this process."""
  net = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')['G_ema']
  g = build_network(net.config)
  z = jnp.asarray(np.concatenate([z_from_seed(s, g.z_dim) for s in range(3)]))
  return to_uint8(g.apply(net.variables, z, truncation_psi=0.7, noise_mode='const'))


def test_convert_then_generate(tmp_path, expected_images):
  out = run('sg2jax.convert', '--network', str(DATA / 'ada_snapshot_tiny.pkl'),
            '--out', str(tmp_path / 'converted'))
  assert out.returncode == 0, out.stderr
  assert 'G_ema: Generator 32x32, skip, 73,059 parameters' in out.stdout
  out = run('sg2jax.generate', '--network', str(tmp_path / 'converted'), '--seeds', '0-2',
            '--trunc', '0.7', '--noise-mode', 'const', '--outdir', str(tmp_path / 'images'))
  assert out.returncode == 0, out.stderr
  for seed in range(3):
    assert_same_image(read_png(tmp_path / 'images' / f'seed{seed:04d}.png'),
                      expected_images[seed], f'convert + generate, seed {seed}')
  again = run('sg2jax.convert', '--network', str(DATA / 'ada_snapshot_tiny.pkl'),
              '--out', str(tmp_path / 'converted'))
  assert again.returncode != 0
  assert again.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'already exists' in again.stderr


def test_generate_from_a_pickle_as_a_grid(tmp_path, expected_images):
  out = run('sg2jax.generate', '--network', str(DATA / 'ada_snapshot_tiny.pkl'), '--seeds', '0-2',
            '--trunc', '0.7', '--outdir', str(tmp_path), '--grid')
  assert out.returncode == 0, out.stderr
  assert_same_image(read_png(tmp_path / 'grid.png'), make_grid(expected_images),
                    'generate --grid from an ADA pickle')


def test_generate_from_a_tf_pickle_with_a_truncation_cutoff(tmp_path):
  out = run('sg2jax.generate', '--network', str(DATA / 'tf_snapshot_tiny.pkl'), '--seeds', '5',
            '--trunc', '0.5', '--trunc-cutoff', '2', '--outdir', str(tmp_path))
  assert out.returncode == 0, out.stderr
  net = load_official_pickle(DATA / 'tf_snapshot_tiny.pkl')['G_ema']
  g = build_network(net.config)
  img = g.apply(net.variables, jnp.asarray(z_from_seed(5, 32)), truncation_psi=0.5,
                truncation_cutoff=2, noise_mode='const')
  assert_same_image(read_png(tmp_path / 'seed0005.png'), to_uint8(img)[0],
                    'generate from a TF pickle with a cutoff')


def test_conditional_generation_needs_a_class(tmp_path):
  g, variables = golden_network('cond_G_skip', 'cond_G_skip_params.npz')
  path = save_networks(tmp_path / 'cond', {'G': NetworkWeights(network_config(g), variables)})
  out = run('sg2jax.generate', '--network', str(path), '--seeds', '1', '--outdir', str(tmp_path))
  assert out.returncode != 0
  assert out.stderr.strip() == 'error: this network is conditional (4 classes): pass --class N'
  out = run('sg2jax.generate', '--network', str(path), '--seeds', '1', '--class', '2',
            '--outdir', str(tmp_path))
  assert out.returncode == 0, out.stderr
  c = jnp.asarray([[0, 0, 1, 0]], jnp.float32)
  img = g.apply(variables, jnp.asarray(z_from_seed(1, 32)), c, noise_mode='const')
  assert_same_image(read_png(tmp_path / 'seed0001.png'), to_uint8(img)[0],
                    'generate --class 2')


def test_generate_reports_bad_input_in_one_line(tmp_path):
  bad = tmp_path / 'notes.pkl'
  bad.write_bytes(b'hello')
  out = run('sg2jax.generate', '--network', str(bad), '--seeds', '0', '--outdir', str(tmp_path))
  assert out.returncode != 0
  assert out.stderr.strip().startswith('error: notes.pkl is not a readable StyleGAN2 network')
  assert len(out.stderr.strip().splitlines()) == 1


def test_convert_a_tf_pickle_in_process(tmp_path, capsys):
  from sg2jax import convert
  from sg2jax.checkpoint import load_networks
  assert convert.main(['--network', str(DATA / 'tf_snapshot_tiny.pkl'),
                       '--out', str(tmp_path / 'tf')]) == 0
  assert 'D: Discriminator 32x32, resnet' in capsys.readouterr().out
  loaded = load_networks(tmp_path / 'tf')
  direct = load_official_pickle(DATA / 'tf_snapshot_tiny.pkl')
  assert loaded['G_ema'].config == direct['G_ema'].config
  np.testing.assert_array_equal(loaded['G_ema'].variables['params']['synthesis']['b8']['conv0']['weight'],
                                direct['G_ema'].variables['params']['synthesis']['b8']['conv0']['weight'])
