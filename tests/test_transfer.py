"""Fine-tuning from a file (`config.resume_from`) and Freeze-D (`config.freeze_d`), REFERENCE.md
§7.8-§7.9: the new run starts from the file's networks with fresh optimizers, contradicting keys
are one clear error, a restart resumes bit-exactly, and frozen layers keep their weights."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_experiment import BATCH, kimg, set_keys, tiny
from experiments import base
from experiments import finetune as finetune_config
from sg2jax.checkpoint import TrainCheckpoints, load_networks
from sg2jax.networks import Discriminator
from sg2jax.networks.weights import flatten_variables
from sg2jax.sharding import global_batch, make_mesh, replicated
from sg2jax.train.build import build, frozen_d_layers
from sg2jax.train.loop import train_and_evaluate
from sg2jax.train.state import init_state
from sg2jax.train.step import TrainStep

DATA = Path(__file__).parent / 'data'
ADA_PKL = DATA / 'ada_snapshot_tiny.pkl'  # 32x32 RGB, G skip / D resnet, conv_clamp 256
TF_PKL = DATA / 'tf_snapshot_tiny.pkl'  # 32x32 RGB, G skip / D resnet
CONVERTED = DATA / 'old_format' / 'converted'  # `sg2jax.convert` of ADA_PKL (sg2jax 0.1.0)


def finetune(resume_from, **overrides):
  """A tiny run on 32x32 generated shapes from `resume_from`, no network key set (so the
  networks come from the file) unless `overrides` sets one."""
  config = base.get_config()
  return set_keys(config, **{
      'resume_from': str(resume_from), 'data.source': 'shapes', 'data.num_images': 64,
      'resolution': 32, 'batch_size': BATCH, 'batch_gpu': 4, 'total_kimg': 0.0,
      'kimg_per_tick': 0.016, 'snapshot_ticks': 1, 'image_snapshot_ticks': 1, 'grid_size': 4,
      'g_reg_interval': 2, 'd_reg_interval': 4, 'precision': 'default', **overrides})


def assert_starts_from(state, networks, exp):
  """`state` is a fresh run on `networks`: their exact variables (w_avg, noise buffers included),
  step 0, no images, pl_mean 0, Adam moments 0 at step 0 with the run's learning rates."""
  for name, key in (('G', 'g'), ('D', 'd'), ('G_ema', 'g_ema')):
    got = flatten_variables(jax.device_get(getattr(state, key)))
    want = flatten_variables(networks[name].variables)
    assert set(got) == set(want), name
    for leaf in want:
      np.testing.assert_array_equal(got[leaf], np.asarray(want[leaf], np.float32),
                                    err_msg=f'{name} {leaf}')
  assert 'stats/mapping/w_avg' in got
  assert int(state.step) == int(state.nimg) == 0 and float(state.pl_mean) == 0
  for opt, lr in ((state.g_opt, exp.hyper.g_lr), (state.d_opt, exp.hyper.d_lr)):
    assert int(opt.count) == 0
    assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves((opt.inner_state[0].mu,
                                                                    opt.inner_state[0].nu)))
    assert float(opt.hyperparams['learning_rate']) == np.float32(lr)


@pytest.mark.parametrize('source', [ADA_PKL, TF_PKL, CONVERTED], ids=['ada', 'tf', 'converted'])
def test_a_new_run_starts_from_the_file(source, tmp_path):
  config = finetune(source)
  state = train_and_evaluate(config, tmp_path)  # total_kimg 0: the first state, saved
  assert_starts_from(state, load_networks(source), build(config))
  assert TrainCheckpoints(tmp_path).latest_step() == 0


def test_a_new_run_starts_from_another_runs_workdir(tmp_path):
  """tiny_experiment's keys equal the workdir's networks, so they are allowed; ada_kimg becomes
  100 and the EMA ramp-up is off (as ADA when resuming)."""
  train_and_evaluate(tiny(total_kimg=0.0, seed=5), tmp_path / 'source')
  config = tiny(total_kimg=0.0, resume_from=str(tmp_path / 'source'))
  exp = build(config)
  assert exp.hyper.ada_kimg == 100 and exp.step_template.ema_rampup is None
  assert build(tiny()).hyper.ada_kimg == 500
  state = train_and_evaluate(config, tmp_path / 'new')
  assert_starts_from(state, load_networks(tmp_path / 'source'), exp)


def test_finetune_config_needs_a_file_and_takes_the_networks_from_it():
  """experiments/finetune.py: without resume_from, one clear error; with ADA's snapshot its
  network keys (all defaults) agree with the file, ADA is on with ada_kimg 100, no EMA ramp-up."""
  config = finetune_config.get_config('cfg=paper512')
  with pytest.raises(ValueError, match='--config.resume_from=PATH'):
    build(config)
  set_keys(config, **{'resume_from': str(ADA_PKL), 'data.source': 'shapes',
                      'data.num_images': 64, 'resolution': 32, 'batch_size': BATCH,
                      'batch_gpu': 4})
  exp = build(config)
  assert exp.hyper.ada_kimg == 100 and exp.augment is not None
  assert exp.step_template.ema_rampup is None and exp.step_template.r1_gamma == 0.5
  networks = load_networks(ADA_PKL)
  assert exp.generator.channel_base == networks['G'].config['channel_base']
  assert exp.discriminator.mbstd_group_size == networks['D'].config['mbstd_group_size']


def image_folder(path: Path, size: int, mode: str) -> Path:
  """Four `size`x`size` PNGs (`mode` 'RGB' or 'L')."""
  from PIL import Image
  path.mkdir()
  for i in range(4):
    Image.new(mode, (size, size), color=(i * 60, 0, 0) if mode == 'RGB' else i * 60).save(
        path / f'{i}.png')
  return path


def test_contradicting_keys_are_one_line_naming_both_values(tmp_path):
  with pytest.raises(ValueError) as error:
    build(finetune(ADA_PKL, **{'G.architecture': 'orig', 'D.channel_base': 1024}))
  message = str(error.value)
  assert '\n' not in message
  assert f"config.G.architecture='orig' but resume_from {ADA_PKL} has 'skip'" in message
  assert f'config.D.channel_base=1024 but resume_from {ADA_PKL} has 512' in message
  with pytest.raises(ValueError, match=f'config.resolution=16 but resume_from {ADA_PKL} has 32'):
    build(finetune(ADA_PKL, resolution=16))
  folder = lambda size, mode: finetune(ADA_PKL, resolution=None, **{
      'data.source': 'folder', 'data.path': str(image_folder(tmp_path / f'{mode}{size}', size,
                                                             mode))})
  with pytest.raises(ValueError, match=r'the data is 16x16 but resume_from .* has img_resolution '
                                       r'32; prepare the data with .*--resolution 32'):
    build(folder(16, 'RGB'))
  with pytest.raises(ValueError, match=r'the data has 1 channels but resume_from .* has '
                                       r'img_channels 3'):
    build(folder(32, 'L'))
  with pytest.raises(FileNotFoundError, match='not found'):
    build(finetune(DATA / 'no_such.pkl'))


def test_a_key_set_to_its_default_value_is_compared_with_the_file():
  """A network key counts as set when the config assigns it, whatever its value: the default
  conv_clamp (None) and channel_max (512) contradict the snapshot's 256 and 32. Left unset, the
  same values are not used."""
  with pytest.raises(ValueError) as error:
    build(finetune(ADA_PKL, **{'G.conv_clamp': None, 'D.channel_max': 512}))
  assert str(error.value).startswith(f'config.G.conv_clamp=None but resume_from {ADA_PKL} has '
                                     f'256; config.D.channel_max=512 but resume_from')


def test_a_contradicting_command_line_key_is_one_line_from_the_command(tmp_path):
  """`--config.D.channel_max=512` (the default) on experiments/finetune.py is an error: exit
  status 1, one line, no traceback, and nothing written to the workdir."""
  out = subprocess.run(
      [sys.executable, '-m', 'sg2jax.main', '--config', 'finetune.py', '--workdir',
       str(tmp_path / 'run'), f'--config.resume_from={ADA_PKL}', '--config.data.source=shapes',
       '--config.data.num_images=64', '--config.resolution=32', '--config.D.channel_max=512'],
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith(f'error: config.D.channel_max=512 but resume_from {ADA_PKL} has '
                              f'32: the networks come from resume_from'), lines[-1]
  assert 'Traceback' not in out.stderr and not (tmp_path / 'run' / 'config.json').exists()


@pytest.mark.slow  # ~60 s; plain resume exactness is in the default run (test_train.py)
def test_restart_of_a_fine_tuning_run_with_ada_is_exact(tmp_path):
  """From another run's workdir, with adaptive augmentation: 3 minibatches straight == 1, a
  restart (from the new run's own checkpoint, not the file; p and the accumulators restored in
  the middle of an adjustment interval), 2 more."""
  train_and_evaluate(tiny(total_kimg=0.0, seed=5), tmp_path / 'source')
  config = lambda steps: tiny(total_kimg=kimg(steps), resume_from=str(tmp_path / 'source'),
                              augment='ada', augment_p=0.5, ada_interval=2, ada_kimg=0.16)
  straight = train_and_evaluate(config(3), tmp_path / 'a')
  stopped = train_and_evaluate(config(1), tmp_path / 'b')
  assert int(stopped.augment.count) > 0
  resumed = train_and_evaluate(config(3), tmp_path / 'b')
  leaves = lambda s: {jax.tree_util.keystr(p): np.asarray(x) for p, x in
                      jax.tree_util.tree_flatten_with_path(jax.device_get(s))[0]}
  a, b = leaves(straight), leaves(resumed)
  assert set(a) == set(b) and int(straight.step) == 3
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert float(a['.augment.p']) != np.float32(0.5)  # adjusted after minibatch 2


@pytest.mark.slow
def test_fine_tuning_an_ada_snapshot_with_freeze_d_and_ada_restarts_exactly(tmp_path):
  """ADA's transfer recipe on the tiny ADA snapshot (Freeze-D 3, adaptive augmentation): 4
  minibatches straight == 3, a restart, 1 more; D's first 3 layers are still the file's."""
  config = lambda steps: finetune(ADA_PKL, total_kimg=kimg(steps), freeze_d=3, augment='ada',
                                  augment_p=0.2, ada_interval=2)
  straight = train_and_evaluate(config(4), tmp_path / 'a')
  train_and_evaluate(config(3), tmp_path / 'b')
  resumed = train_and_evaluate(config(4), tmp_path / 'b')
  leaves = lambda s: {jax.tree_util.keystr(p): np.asarray(x) for p, x in
                      jax.tree_util.tree_flatten_with_path(jax.device_get(s))[0]}
  a, b = leaves(straight), leaves(resumed)
  assert set(a) == set(b) and int(straight.step) == 4
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  file_d = flatten_variables(load_networks(ADA_PKL)['D'].variables)
  trained_d = flatten_variables(jax.device_get(straight.d))
  for leaf, value in file_d.items():
    frozen = leaf.startswith(('params/b32/fromrgb/', 'params/b32/conv0/', 'params/b32/conv1/'))
    assert np.array_equal(trained_d[leaf], value) == frozen, leaf


# ---- Freeze-D ----------------------------------------------------------------------------------

def test_freeze_d_layer_order_is_adas():
  """REFERENCE.md §7.9: from the highest resolution down, fromrgb / conv0 / conv1 / skip in the
  order each block creates them; the epilogue b4 never."""
  resnet = Discriminator(img_resolution=32, architecture='resnet')
  assert frozen_d_layers(resnet, 6) == ('b32/fromrgb', 'b32/conv0', 'b32/conv1', 'b32/skip',
                                        'b16/conv0', 'b16/conv1')
  skip = Discriminator(img_resolution=32, architecture='skip')
  assert frozen_d_layers(skip, 5) == ('b32/fromrgb', 'b32/conv0', 'b32/conv1', 'b16/fromrgb',
                                      'b16/conv0')
  orig = Discriminator(img_resolution=32, architecture='orig')
  assert frozen_d_layers(orig, 100) == ('b32/fromrgb', 'b32/conv0', 'b32/conv1', 'b16/conv0',
                                        'b16/conv1', 'b8/conv0', 'b8/conv1')
  assert frozen_d_layers(resnet, 0) == ()


@pytest.mark.parametrize('architecture,freeze_d,frozen', [
    ('resnet', 5, ('b16/fromrgb', 'b16/conv0', 'b16/conv1', 'b16/skip', 'b8/conv0')),
    ('skip', 4, ('b16/fromrgb', 'b16/conv0', 'b16/conv1', 'b8/fromrgb')),
])
def test_freeze_d_keeps_exactly_the_frozen_layers(architecture, freeze_d, frozen):
  """After a D main step at 16x16, every leaf of the frozen layers is unchanged and every other
  D leaf moved; the frozen layers have no Adam moments."""
  mesh = make_mesh()
  exp = build(tiny(resolution=16, freeze_d=freeze_d, **{'D.architecture': architecture}), mesh)
  state = jax.jit(lambda: init_state(exp.generator, exp.discriminator, exp.g_tx, exp.d_tx, 0),
                  out_shardings=replicated(mesh))()
  before = flatten_variables(jax.device_get(state.d))
  stage = exp.schedule.at(0)
  step = TrainStep(exp.models, exp.step_config(stage), mesh)
  batch = global_batch(exp.data.next_batch(stage.batch_size), mesh)
  lod = jnp.float32(0)
  moments = jax.tree_util.tree_flatten_with_path(state.d_opt)[0]
  state, metrics = step.executable('d_main', state, batch, lod)(state, batch, lod)
  assert float(metrics['Grad/D/finite']) == 1
  after = flatten_variables(jax.device_get(state.d))
  is_frozen = lambda leaf: leaf.startswith(tuple(f'params/{layer}/' for layer in frozen))
  # weight and bias per layer; resnet's skip layer has no bias
  assert sum(map(is_frozen, before)) == 2 * len(frozen) - (architecture == 'resnet')
  for leaf in before:
    same = np.array_equal(before[leaf], after[leaf])
    assert same == is_frozen(leaf), f'{leaf}: {"unchanged" if same else "moved"}'
  adam_leaves = [jax.tree_util.keystr(path) for path, _ in moments if '.mu' in
                 jax.tree_util.keystr(path)]
  assert adam_leaves and not any(f"'{layer.split('/')[0]}']['{layer.split('/')[1]}']" in path
                                 for path in adam_leaves for layer in frozen)
