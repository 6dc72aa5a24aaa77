"""The notebooks in notebooks/ run top to bottom (nbclient, a fresh Python kernel) with the tiny
settings they take from the environment."""

import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image


DATA = Path(__file__).parent / 'data'
NOTEBOOKS = Path(__file__).parent.parent / 'notebooks'


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
  """Runs a notebook in `workdir` (the kernel inherits this process's environment)."""
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name='python3',
                 resources={'metadata': {'path': str(workdir)}}).execute()
  return notebook


def notebook_training_config(device_count: int, smoke: bool = False):
  """The config the training notebook trains on `device_count` devices: its settings and
  training-config cells run as they are (with the smoke settings or the full demo's)."""
  import types
  notebook = nbformat.read(NOTEBOOKS / 'train_generate_project.ipynb', as_version=4)
  cells = {cell.source.split('\n')[0]: cell.source for cell in notebook.cells
           if cell.cell_type == 'code'}
  namespace = {'jax': types.SimpleNamespace(device_count=lambda: device_count)}
  environ = {k: v for k, v in os.environ.items() if k != 'SG2JAX_NOTEBOOK_SMOKE'}
  if smoke:
    environ['SG2JAX_NOTEBOOK_SMOKE'] = '1'
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(os, 'environ', environ)
    exec(cells['# @title Settings'], namespace)  # noqa: S102 (the notebook's own cells)
    exec(cells['# @title The training config'], namespace)  # noqa: S102
  return namespace['config']


def outputs_text(notebook: nbformat.NotebookNode) -> str:
  return '\n'.join(out.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                   for out in cell.get('outputs', []))


@pytest.mark.parametrize('name', ['official_pickle.ipynb', 'train_generate_project.ipynb'])
def test_notebooks_follow_the_colab_conventions(name):
  """big_vision's conventions: every code cell has a `# @title`, and the first code cell prints the
  jax version, platform and devices. TPU wording of 2025: Colab's TPU runtime is one v5e chip (the
  v2-8 is retired); several chips are Kaggle's v5e-8 or a Cloud TPU VM."""
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  code = [cell.source for cell in notebook.cells if cell.cell_type == 'code']
  assert all(source.startswith('# @title ') for source in code), [s.split('\n')[0] for s in code]
  assert all(term in code[0] for term in ('jax.__version__', 'jax.default_backend()',
                                          'jax.devices()'))
  text = '\n'.join(cell.source for cell in notebook.cells)
  assert '8 TPU cores' not in text and 'TPU v5e' in text
  if name == 'train_generate_project.ipynb':
    assert 'v5e-8' in text and 'Cloud TPU VM' in text


def test_official_pickle_notebook_reproduces_the_official_images(tmp_path, monkeypatch):
  """With the tiny ADA snapshot and the images the official code made for it (G_ema, const
  noise, on the golden z); the notebook asserts at most one grey level of difference."""
  monkeypatch.setenv('SG2JAX_NETWORK', str(DATA / 'ada_snapshot_tiny.pkl'))
  monkeypatch.setenv('SG2JAX_SEEDS', '0,1,2')
  monkeypatch.setenv('SG2JAX_REFERENCE', str(DATA / 'ada_snapshot_tiny_expected.npz'))
  monkeypatch.setenv('SG2JAX_REFERENCE_KEY', 'img_G_ema_const')
  text = outputs_text(execute('official_pickle.ipynb', tmp_path))
  assert 'G_ema on cpu: 32x32, skip, 73,059 parameters' in text
  assert re.search(r'jax \d+\.\d+\.\d+ on cpu: 4 device\(s\)', text), text  # the first cell
  match = re.search(r'(\d+) images: max difference (\d+) grey levels, ([\d.]+)% of the values equal',
                    text)
  assert match, text
  assert int(match.group(1)) == 8 and int(match.group(2)) <= 1 and float(match.group(3)) > 99.9
  for seed in (0, 1, 2):
    image = np.asarray(Image.open(tmp_path / 'out' / f'seed{seed:04d}.png'))
    assert image.shape == (32, 32, 3)


@pytest.mark.slow
def test_train_generate_project_notebook(tmp_path, monkeypatch):
  monkeypatch.setenv('SG2JAX_NOTEBOOK_SMOKE', '1')
  text = outputs_text(execute('train_generate_project.ipynb', tmp_path))
  assert '4 CPU device(s)' in text  # conftest's forced host devices, inherited by the kernel
  assert (tmp_path / 'sg2jax-demo' / 'checkpoints').is_dir()
  assert 'G_ema: 8x8, 4 ws of 16 dims' in text
  assert 'step 8: LPIPS' in text
  with np.load(tmp_path / 'projected_w.npz') as f:
    assert f['w'].shape == (1, 4, 16)
  assert np.asarray(Image.open(tmp_path / 'target.png')).shape == (8, 8, 3)
