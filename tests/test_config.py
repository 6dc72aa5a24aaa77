"""The training config (`sg2jax.train.config`): which keys a run set is recorded where the config
is made (the experiments file, `--config.KEY=VALUE`), never inferred from the defaults; a saved
config.json reads back onto the defaults and sets nothing."""

import copy
import json
import pickle
from pathlib import Path

import pytest

from sg2jax.cli import load_config, override_config
from sg2jax.train.build import validate
from sg2jax.train.config import (CONFIG_FILE, assigned_keys, defaults, load_run_config,
                                 restore_defaults)

OLD_CONFIG = Path(__file__).parent / 'data' / 'old_format' / 'train_run_config.json'


def test_the_defaults_set_nothing_and_an_experiments_file_sets_what_it_assigns():
  assert assigned_keys(load_config('base.py', None)) == frozenset()
  ffhq = assigned_keys(load_config('ffhq.py', None))
  assert ffhq == {'resolution', 'total_kimg', 'mirror', 'r1_gamma'}
  # ADA's stylegan2 preset assigns config F's own channel_base, mapping layers and mbstd group:
  # set, although equal to the defaults.
  stylegan2 = assigned_keys(load_config('ada.py:cfg=stylegan2', None))
  assert {'G.channel_base', 'G.mapping_layers', 'D.mbstd_group_size'} <= stylegan2
  assert defaults().G.channel_base == load_config('ada.py:cfg=stylegan2', None).G.channel_base


def test_finetune_sets_no_network_key_and_the_command_line_sets_its_keys():
  config = load_config('finetune.py', None)
  keys = assigned_keys(config)
  assert not [key for key in keys if key.startswith(('G.', 'D.'))]
  assert {'resume_required', 'mirror', 'augment', 'ada_kimg'} <= keys
  assert config.G.to_dict() == defaults().G.to_dict()
  assert config.resume_required and config.resume_from == ''
  config = override_config(config, ['--config.G.channel_base=32768', '--config.resume_from=x.pkl',
                                    '--config.mirror=false'])
  assert assigned_keys(config) - keys == {'G.channel_base', 'resume_from'}  # mirror already set
  assert not config.mirror


def test_restore_defaults_unsets_leaves_and_subtrees():
  config = defaults()
  config.G.z_dim, config.seed = 64, 3
  restore_defaults(config, 'G', 'seed')
  assert assigned_keys(config) == frozenset() and config.G.z_dim == 512 and config.seed == 0


def test_a_saved_config_sets_nothing_and_overrides_on_top_do(tmp_path):
  saved = load_run_config(OLD_CONFIG)
  assert assigned_keys(saved) == frozenset()
  assert saved.G.channel_base == 64 and saved.total_kimg == 0.016
  config = override_config(saved, ['--config.total_kimg=1'])
  assert assigned_keys(config) == {'total_kimg'}
  # The record survives what configs go through: deep copies (absl's flag values), pickles and
  # copy_and_resolve_references (`sg2jax.aot` tries batch sizes on copies).
  for copied in (copy.deepcopy(config), pickle.loads(pickle.dumps(config)),
                 config.copy_and_resolve_references()):
    assert assigned_keys(copied) == {'total_kimg'}
    assert copied.to_json() == config.to_json()
  (tmp_path / CONFIG_FILE).write_text(config.to_json_best_effort())
  assert assigned_keys(load_config(None, str(tmp_path))) == frozenset()


def test_an_old_config_json_reads_with_the_keys_added_since_at_their_defaults(tmp_path):
  saved = json.loads(OLD_CONFIG.read_text())
  assert 'strict' not in saved['data'] and 'resume_required' not in saved
  assert saved['G']['fused_modconv'] is False  # retired: one rule decides the form now
  config = load_run_config(OLD_CONFIG)
  assert config.data.strict is False and config.resume_required is False
  assert 'fused_modconv' not in config.G
  assert config.remat == defaults().remat
  saved['G']['channel_width'] = 3
  (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r'config.json: unknown config key G.channel_width$'):
    load_run_config(tmp_path)


@pytest.mark.parametrize('value', [None, '', ' ', 'None', 'null'])
def test_resume_from_is_a_file_or_empty_and_nothing_else(value, tmp_path, monkeypatch):
  """'' is the one value for fresh networks; None, a blank string or 'None' naming no file is
  a one-line error saying what to use, never a second meaning."""
  monkeypatch.chdir(tmp_path)
  config = defaults()
  config.resume_from = value
  if value == '':
    validate(config)  # fresh networks
    config.resume_required = True
    with pytest.raises(ValueError, match=r'^this config fine-tunes a network: give it with '
                                         r'--config.resume_from=PATH'):
      validate(config)
    return
  with pytest.raises(ValueError) as error:
    validate(config)
  assert str(error.value) == (f"config.resume_from={value!r}: must be a file to fine-tune from, "
                              f"or '' for fresh networks; pass e.g. "
                              f"--config.resume_from=ffhq.pkl")
  if isinstance(value, str) and value.strip():
    (tmp_path / value).touch()  # a file of that name is a file
    validate(config)


def test_a_saved_resume_from_of_none_reads_as_a_required_file(tmp_path):
  """A config.json with `resume_from` null (a fine-tuning config whose file was still to be
  given) reads back as `resume_required`, so it stops as such a config does."""
  saved = json.loads(OLD_CONFIG.read_text())
  assert 'resume_from' not in saved  # older than fine-tuning: fresh networks
  config = load_run_config(OLD_CONFIG)
  assert config.resume_from == '' and not config.resume_required
  saved['resume_from'] = None
  (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))
  config = load_run_config(tmp_path)
  assert config.resume_from == '' and config.resume_required
  assert assigned_keys(config) == frozenset()
  with pytest.raises(ValueError, match='^this config fine-tunes a network'):
    validate(config)
