"""Network checkpoints: round trip, and clear errors for checkpoints that do not fit."""

import json

import numpy as np
import pytest

from goldens import DATA
from sg2jax.checkpoint import load_networks, save_networks, select_generator
from sg2jax.formats.official import load_official_pickle
from sg2jax.networks.weights import flatten_variables


@pytest.fixture(scope='module')
def snapshot():
  return load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')


@pytest.fixture(scope='module')
def saved(snapshot, tmp_path_factory):
  return save_networks(tmp_path_factory.mktemp('ckpt') / 'networks', snapshot)


def test_round_trip_is_exact(snapshot, saved):
  loaded = load_networks(saved)
  assert set(loaded) == {'G', 'D', 'G_ema'}
  for name, net in snapshot.items():
    assert loaded[name].config == net.config
    got, want = flatten_variables(loaded[name].variables), flatten_variables(net.variables)
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(np.asarray(got[key]), want[key], err_msg=key)


def test_never_overwrites_without_being_asked(snapshot, saved):
  with pytest.raises(FileExistsError, match='already exists; choose a new output directory'):
    save_networks(saved, snapshot)


def test_checkpoint_whose_shapes_do_not_fit_its_config(snapshot, tmp_path):
  path = save_networks(tmp_path / 'networks', {'G': snapshot['G']})
  config_file = path / 'networks' / 'metadata'
  configs = json.loads(config_file.read_text())
  configs['G']['channel_max'] = 16
  config_file.write_text(json.dumps(configs))
  with pytest.raises(ValueError, match=r'\[G\] does not fit Generator.*wrong shape params/synth'):
    load_networks(path)


def test_sources_that_are_not_networks(tmp_path):
  with pytest.raises(FileNotFoundError, match='not found'):
    load_networks(tmp_path / 'missing')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='is neither a network pickle, a sg2jax network checkpoint'):
    load_networks(tmp_path / 'empty')


def test_generator_selection_prefers_the_ema(snapshot):
  assert select_generator(snapshot)[0] == 'G_ema'
  assert select_generator({'G': snapshot['G']})[0] == 'G'
  with pytest.raises(ValueError, match='holds no generator'):
    select_generator({'D': snapshot['D']})


# ----------------------------------------------------------------------------------------------
# Files in the format of sg2jax 0.1.0 (tests/data/old_format): they must stay readable.

OLD = DATA / 'old_format'


def test_an_old_network_checkpoint_restores(snapshot):
  old = load_networks(OLD / 'converted')
  for name, net in snapshot.items():
    assert old[name].config == net.config
    got, want = flatten_variables(old[name].variables), flatten_variables(net.variables)
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(np.asarray(got[key]), want[key], err_msg=f'{name} {key}')


def test_an_old_training_run_restores_and_resumes(tmp_path):
  """The whole training state (networks, EMA, both optimizer states, pl_mean, step) restores
  bit-exactly from a checkpoint of sg2jax 0.1.0, the run's old config.json reads back, and
  training resumes from it."""
  import shutil

  import jax

  from sg2jax.checkpoint import TrainCheckpoints
  from sg2jax.sharding import replicated
  from sg2jax.train.build import build
  from sg2jax.train.config import load_run_config
  from sg2jax.train.loop import train_and_evaluate
  from sg2jax.train.state import init_state
  workdir = tmp_path / 'run'
  shutil.copytree(OLD / 'train_run_checkpoints', workdir / 'checkpoints')
  shutil.copy(OLD / 'train_run_config.json', workdir / 'config.json')
  config = load_run_config(workdir)
  exp = build(config)
  sharding = replicated(exp.mesh)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          jax.eval_shape(lambda: init_state(exp.generator, exp.discriminator,
                                                            exp.g_tx, exp.d_tx, 0)))
  checkpoints = TrainCheckpoints(workdir, asynchronous=False)
  state = checkpoints.restore(2, abstract)
  checkpoints.close()
  got = flatten_variables(jax.device_get(
      {'g': state.g, 'g_ema': state.g_ema, 'd': state.d, 'pl_mean': state.pl_mean,
       'step': state.step, 'g_opt': state.g_opt, 'd_opt': state.d_opt}))
  with np.load(OLD / 'train_run_state.npz') as want:
    assert set(got) == set(want.files)
    for key in want.files:
      np.testing.assert_array_equal(np.asarray(got[key]), want[key], err_msg=key)
  config.total_kimg = 0.024  # one more minibatch of 8
  assert int(train_and_evaluate(config, workdir).step) == 3
