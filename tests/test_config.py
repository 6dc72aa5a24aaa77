"""The training config (`sg2jax.train.config`): which keys a run set is recorded where the config
is made (the experiments file, `--config.KEY=VALUE`), never inferred from the defaults; a saved
config.json reads back onto the defaults and sets nothing."""

import copy
import json
import pickle
from pathlib import Path

import ml_collections
import pytest

from sg2jax.cli import load_config, override_config
from sg2jax.train.build import KEY_RANGES, TABLE_RANGES, PowerOfTwo, _leaf, validate
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


# ---- Ranges: every numeric key's values (`sg2jax.train.build.validate`) -----------------------

def _numeric_leaves(config, prefix=''):
  """The dotted keys of `config` whose type is a number (None defaults included)."""
  for key in config:
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _numeric_leaves(value, f'{prefix}{key}.')
    elif config.get_type(key) in (int, float):
      yield prefix + key


def _set(config, key, value):
  *parents, leaf = key.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = value
  return config


def _out_of_range(valid):
  """Values just outside `valid` (a `Range` or `PowerOfTwo`)."""
  if isinstance(valid, PowerOfTwo):
    return [12, 2, -8]
  values = [] if valid.low is None else [valid.low if valid.above else valid.low - 1]
  if valid.high is not None:
    values.append(valid.high if valid.below else valid.high + 1)
  return values + ([] if valid.optional else [None])


def test_every_numeric_key_has_a_range():
  """A key added to the defaults needs its range in KEY_RANGES (or TABLE_RANGES)."""
  numeric = set(_numeric_leaves(defaults()))
  assert numeric == set(KEY_RANGES), numeric ^ set(KEY_RANGES)
  assert set(TABLE_RANGES) <= {'growing.batch_sizes', 'growing.batch_gpus', 'growing.lrs'}


@pytest.mark.parametrize('key', sorted(KEY_RANGES))
def test_an_out_of_range_value_is_one_line_naming_key_value_and_a_value_that_works(key):
  """Each value outside the key's range stops `validate` with `config.KEY=VALUE: must be ...;
  pass e.g. --config.KEY=EXAMPLE`, and the example passes."""
  valid = KEY_RANGES[key]
  assert valid.admits(_leaf(defaults(), key)), 'the default is in range'
  for value in _out_of_range(valid):
    with pytest.raises(ValueError) as error:
      validate(_set(defaults(), key, value))
    message = str(error.value)
    assert '\n' not in message
    shown = str(int(value)) if isinstance(value, float) else repr(value)
    assert message.startswith(f'config.{key}={shown}: must be {valid.rule()}; pass e.g. '
                              f'--config.{key}='), message
    example = message.rsplit('=', 1)[1]
    validate(override_config(defaults(), [f'--config.{key}={example}']))


@pytest.mark.parametrize('key,value,message', [
    ('total_kimg', -1, 'config.total_kimg=-1: must be >= 0; pass e.g. --config.total_kimg=25000'),
    ('total_kimg', float('nan'), 'config.total_kimg=nan: must be a finite number >= 0; pass e.g. '
                                 '--config.total_kimg=25000'),
    ('batch_size', 0, 'config.batch_size=0: must be >= 1; pass e.g. --config.batch_size=32'),
    ('g_lr', 0.0, 'config.g_lr=0: must be > 0; pass e.g. --config.g_lr=0.002'),
    ('adam_beta2', 1.0, 'config.adam_beta2=1: must be in [0, 1); pass e.g. '
                        '--config.adam_beta2=0.99'),
    ('r1_gamma', -0.5, 'config.r1_gamma=-0.5: must be >= 0; pass e.g. --config.r1_gamma=10'),
    ('ema_kimg', -1.0, 'config.ema_kimg=-1: must be >= 0; pass e.g. --config.ema_kimg=10'),
    ('style_mixing_prob', 1.5, 'config.style_mixing_prob=1.5: must be in [0, 1]; pass e.g. '
                               '--config.style_mixing_prob=0.9'),
    ('g_reg_interval', 0, 'config.g_reg_interval=0: must be >= 1 or None; pass e.g. '
                          '--config.g_reg_interval=4'),
    ('resolution', 100, "config.resolution=100: must be a power of two >= 4, or None for the "
                        "data's; pass e.g. --config.resolution=256"),
    ('growing.initial_resolution', 6, 'config.growing.initial_resolution=6: must be a power of '
                                      'two >= 4; pass e.g. --config.growing.initial_resolution=8'),
    ('growing.batch_sizes', ((8, 256), (16, 0)), 'config.growing.batch_sizes=((8, 256), (16, 0)): '
     'must be (resolution, value) pairs of a power of two >= 4 and a value >= 1; pass e.g. '
     '--config.growing.batch_sizes="((8, 256), (16, 128))"'),
    ('growing.lrs', ((100, 0.002),), 'config.growing.lrs=((100, 0.002),): must be (resolution, '
     'value) pairs of a power of two >= 4 and a value > 0; pass e.g. '
     '--config.growing.lrs="((128, 0.0015), (256, 0.002))"'),
    ('G.dtype', 'float16', "config.G.dtype='float16': must be one of float32, bfloat16; pass e.g. "
                           '--config.G.dtype=float32'),
    ('D.architecture', 'unet', "config.D.architecture='unet': must be one of orig, skip, resnet; "
                               'pass e.g. --config.D.architecture=orig'),
    ('augment_pipe', 'bgcf', "config.augment_pipe='bgcf': must be one of blit, geom, color, bg, "
                             'bgc; pass e.g. --config.augment_pipe=blit'),
])
def test_out_of_range_messages(key, value, message):
  with pytest.raises(ValueError) as error:
    validate(_set(defaults(), key, value))
  assert str(error.value) == message


EXPERIMENTS = ['base.py', 'config_a.py', 'config_b.py', 'config_c.py', 'config_d.py',
               'config_e.py', 'config_f.py', 'demo.py', 'demo.py:config=b', 'ffhq.py',
               'lsun_car.py', 'lsun_cat.py', 'lsun_church.py', 'lsun_horse.py', 'ada.py',
               'finetune.py', 'table2.py:g=resnet,d=orig']


@pytest.mark.parametrize('spec', EXPERIMENTS)
def test_every_experiment_is_in_range(spec):
  config = load_config(f'experiments/{spec}', None)
  if config.resume_required:
    config.resume_from = 'ffhq.pkl'  # fine-tuning configs need a file (not read here)
  validate(config)


def test_the_tests_configs_are_in_range():
  from growing_experiment import get_config as growing
  from tiny_experiment import get_config as tiny
  for config in (defaults(), tiny(), growing('a'), growing('d')):
    validate(config)
