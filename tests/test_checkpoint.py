"""Network checkpoints: round trip, and clear errors for checkpoints that do not fit."""

import json

import numpy as np
import pytest

from goldens import DATA
from sg2jax.checkpoint import load_networks, save_networks, select_generator
from sg2jax.networks.config import flatten_variables
from sg2jax.tools.official import load_official_pickle


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
