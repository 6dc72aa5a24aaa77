"""Nothing lost, nothing confusing: bad training images, interrupted dataset_tool runs, damaged
checkpoints, refused restarts, concurrent runs, pre-emption, crafted weight files, command-line
errors, config names, grids, the projector's advice, convert's checksum and kill -9 in the
middle of a save (the notebooks' wording is checked in test_notebooks.py).

The training tests share one tiny run on an image folder with two bad files (`trained`); its
programs are compiled once per session (conftest's compilation cache), so the later trainings and
subprocesses here load them.
"""

import hashlib
import json
import logging
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from tiny_experiment import kimg, tiny
from sg2jax.checkpoint import (TrainCheckpoints, WorkdirInUseError, WorkdirLock,
                               load_training_networks)
from sg2jax.data.pipeline import BadImageError, TrainData
from sg2jax.data.prepare import convert_dataset
from sg2jax.data.sources import FolderSource
from sg2jax.networks.weights import flatten_variables

TESTS = Path(__file__).parent
DATA = TESTS / 'data'
GOOD_IMAGES = 16
BAD_FILES = ('img03x.png', 'img09x.png')  # unreadable; 8x6 instead of 8x8


def write_folder(folder: Path) -> Path:
  """16 good 8x8 RGB images `img00.png` ... and the two BAD_FILES among them (sorted: indices 4
  and 11 of 18; the first image is good, as `build` reads it for the resolution)."""
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(GOOD_IMAGES):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f'img{i:02d}.png')
  (folder / BAD_FILES[0]).write_bytes(b'\x89PNG\r\n\x1a\n but the rest is gone')
  Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(folder / BAD_FILES[1])
  return folder


def folder_config(folder: Path, steps: int, **overrides):
  return tiny(**{'data.source': 'folder', 'data.path': str(folder), 'total_kimg': kimg(steps),
                 **overrides})


def state_leaves(state) -> dict:
  return {k: np.asarray(v) for k, v in flatten_variables(jax.device_get(
      {'g': state.g, 'g_ema': state.g_ema, 'd': state.d, 'pl_mean': state.pl_mean,
       'g_opt': state.g_opt, 'd_opt': state.d_opt, 'step': state.step})).items()}


def assert_same_leaves(got: dict, want: dict) -> None:
  assert set(got) == set(want)
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def copy_run(source: Path, target: Path) -> Path:
  shutil.copytree(source, target, ignore=shutil.ignore_patterns('.lock'))
  return target


def run_module(*args: str, cwd=None, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True,
                        timeout=timeout, cwd=cwd)


def one_error_line(out: subprocess.CompletedProcess) -> str:
  """The single line a failed command printed to stderr (after the C++ libraries' start-up
  notices, which are not sg2jax's)."""
  assert out.returncode == 1, (out.returncode, out.stderr[-3000:])
  lines = [line for line in out.stderr.strip().splitlines()
           if not line.startswith(('WARNING: All log messages before absl', 'I0000 '))]
  assert len(lines) == 1 and lines[0].startswith('error: '), out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  return lines[0]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 5-step run on a folder with two bad images (checkpoints 2, 4, 5), its final state and the
  images folder."""
  root = tmp_path_factory.mktemp('faults')
  folder = write_folder(root / 'images')
  from sg2jax.train.loop import train_and_evaluate
  state = train_and_evaluate(folder_config(folder, 5), root / 'run')
  return root / 'run', state_leaves(state), folder


# ----------------------------------------------------------------------------------------------
# 1. Bad images.

def test_bad_images_are_replaced_by_the_next_good_one_deterministically(tmp_path, caplog):
  folder = write_folder(tmp_path / 'images')
  source = FolderSource(folder)
  names = [Path(source.name(i)).name for i in range(len(source))]
  bad = [names.index(n) for n in BAD_FILES]
  assert bad == [4, 11]
  make = lambda **kw: TrainData(source, 8, 3, global_batch_size=6, seed=3, **kw)
  caplog.set_level(logging.WARNING)
  data = make(prefetch=1, num_threads=4)
  batches = [data.next_batch(6) for _ in range(9)]  # 54 draws: three epochs of 18
  assert data.skipped_images == 2
  for name in BAD_FILES:  # one warning per bad file, naming it
    assert sum(name in r.getMessage() for r in caplog.records) == 1, caplog.text
  caplog.clear()
  originals = [source[i]['image'] if i not in bad else None for i in range(len(source))]
  expected = sorted([i for i in range(18) if i not in bad] + [i + 1 for i in bad])
  images = np.concatenate([b['image'] for b in batches])
  for epoch in range(3):  # each bad image is replaced by the next one: 5 and 12 come twice
    drawn = sorted(next(i for i, o in enumerate(originals) if o is not None
                        and np.array_equal(o, image)) for image in images[18 * epoch:][:18])
    assert drawn == expected
  # The same batches without prefetching, on one thread, and resumed from a saved position.
  again = make(prefetch=0, num_threads=1)
  for batch in batches:
    np.testing.assert_array_equal(again.next_batch(6)['image'], batch['image'])
  interrupted = make()
  for _ in range(4):
    interrupted.next_batch(6)
  state = json.loads(json.dumps(interrupted.get_state()))  # as a checkpoint's meta holds it
  resumed = make()
  resumed.set_state(state)
  assert resumed.skipped_images == len(state['bad_images'])
  for batch in batches[4:]:
    np.testing.assert_array_equal(resumed.next_batch(6)['image'], batch['image'])
  strict = make(strict=True)
  with pytest.raises(BadImageError, match=r'img03x.png: not a readable image .*config.data.strict'):
    for _ in range(3):
      strict.next_batch(6)


def test_training_skips_bad_images_and_reports_the_count(trained):
  workdir, leaves, _ = trained
  assert int(leaves['step']) == 5
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  from tensorboard.util.tensor_util import make_ndarray
  events = EventAccumulator(str(workdir), size_guidance={'tensors': 0})
  events.Reload()
  counts = [float(make_ndarray(e.tensor_proto)) for e in events.Tensors('Data/skipped_images')]
  assert counts and counts[-1] == 2, counts  # 40 draws: both bad files met
  assert TrainCheckpoints(workdir, asynchronous=False).all_steps() == [2, 4, 5]


def test_strict_data_saves_a_checkpoint_before_the_error(trained, tmp_path):
  from sg2jax.train.loop import train_and_evaluate
  _, _, folder = trained
  with pytest.raises(BadImageError) as error:
    train_and_evaluate(folder_config(folder, 5, **{'data.strict': True}), tmp_path / 'run')
  message = str(error.value)
  assert len(message.splitlines()) == 1
  assert 'img03x.png' in message or 'img09x.png' in message
  step = int(message.split('; saved step ')[1].split(':')[0])
  checkpoints = TrainCheckpoints(tmp_path / 'run', asynchronous=False)
  assert checkpoints.latest_step() == step
  assert int(np.asarray(checkpoints.restore_raw_state(step)['step'])) == step
  checkpoints.close()


def bomb_png(path: Path, size: int = 20000) -> Path:
  """A valid PNG of `size` x `size` black pixels (1-bit grey, deflated row by row): about 50 KB
  on disk that declares 400 million pixels, which Pillow refuses (DecompressionBombError)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
  deflate, row = zlib.compressobj(9), bytes(1 + size // 8)  # filter byte, then the row's bits
  pixels = b''.join(deflate.compress(row) for _ in range(size)) + deflate.flush()
  header = struct.pack('>IIBBBBB', size, size, 1, 0, 0, 0, 0)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', pixels) +
                   chunk(b'IEND', b''))
  return path


def bomb_first(folder: Path, grey: bool = False) -> Path:
  """`000bomb.png` (sorted first) and GOOD_IMAGES good 8x8 images (RGB, or grey)."""
  folder.mkdir(parents=True)
  bomb_png(folder / '000bomb.png')
  rng = np.random.default_rng(0)
  for i in range(GOOD_IMAGES):
    image = rng.integers(0, 256, (8, 8) if grey else (8, 8, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f'img{i:02d}.png')
  return folder


def test_an_unreadable_first_image_is_skipped_and_the_size_comes_from_the_next(trained, tmp_path):
  """The image `build` reads to learn the data's size and channels is a decompression bomb: it
  is skipped and counted like any other bad image and the next one gives the size; with
  config.data.strict, and when no image reads, one line."""
  from sg2jax.train.build import build
  from sg2jax.train.loop import train_and_evaluate
  folder = bomb_first(tmp_path / 'images')
  bomb = folder / '000bomb.png'
  assert bomb.stat().st_size < 100_000
  with pytest.raises(Image.DecompressionBombError):
    Image.open(bomb)
  grey = build(folder_config(bomb_first(tmp_path / 'grey', grey=True), 2, resolution=0))
  assert (grey.generator.img_resolution, grey.generator.img_channels) == (8, 1)
  assert grey.data.skipped_images == 1 and grey.data.get_state()['bad_images'] == [0]
  # Training starts (the size learned: config.resolution unset) and reports the skipped image.
  state = train_and_evaluate(folder_config(folder, 2, resolution=0), tmp_path / 'run')
  assert int(state.step) == 2
  checkpoints = TrainCheckpoints(tmp_path / 'run', asynchronous=False)
  meta = checkpoints.restore_meta(2)
  checkpoints.close()
  assert meta['networks']['G']['img_resolution'] == 8 and meta['data']['bad_images'] == [0]
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  from tensorboard.util.tensor_util import make_ndarray
  events = EventAccumulator(str(tmp_path / 'run'), size_guidance={'tensors': 0})
  events.Reload()
  counts = [float(make_ndarray(e.tensor_proto)) for e in events.Tensors('Data/skipped_images')]
  assert counts == [1.0], counts
  with pytest.raises(BadImageError) as error:
    build(folder_config(folder, 2, **{'resolution': 0, 'data.strict': True}))
  message = str(error.value)
  assert message.startswith(f'{bomb}: not a readable image (DecompressionBombError: ')
  assert message.endswith('(config.data.strict is set)') and '\n' not in message
  only_bad = tmp_path / 'bad'
  only_bad.mkdir()
  (only_bad / 'a.png').write_bytes(b'\x89PNG\r\n\x1a\n but the rest is gone')
  shutil.copy(bomb, only_bad / 'b.png')
  with pytest.raises(BadImageError) as error:
    build(folder_config(only_bad, 2, resolution=0))
  message = str(error.value)
  assert message.startswith(f'none of the 2 images of the dataset can be read; the first: '
                            f'{only_bad / "a.png"}: not a readable image (')
  assert '\n' not in message


# ----------------------------------------------------------------------------------------------
# 2. dataset_tool writes under a temporary name.

@pytest.mark.parametrize('dest', ['out.zip', 'out.lmdb', 'outdir'])
def test_a_failed_dataset_tool_run_leaves_nothing_and_can_be_rerun(tmp_path, dest):
  folder = write_folder(tmp_path / 'images')
  target = tmp_path / dest
  with pytest.raises(ValueError, match='img03x.png: not a readable image'):
    convert_dataset(folder, target, 8)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['images']  # no output, no .partial
  partial = tmp_path / f'{dest}.partial'  # a crashed run's leftover is removed
  partial.mkdir() if dest == 'outdir' else partial.write_bytes(b'leftover')
  with pytest.warns(UserWarning, match='removing .*partial, left by an earlier run'):
    counts = convert_dataset(folder, target, 8, skip_bad=True)
  assert counts == {'written': GOOD_IMAGES, 'skipped_transform': 0, 'skipped_bad': 2}
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['images', dest])
  from sg2jax.data.prepare import open_images
  assert len(open_images(target)) == GOOD_IMAGES


def test_dataset_tool_dest_that_is_a_file_is_one_line(tmp_path):
  write_folder(tmp_path / 'images')
  (tmp_path / 'taken').write_text('a file')
  out = run_module('sg2jax.dataset_tool', '--source', str(tmp_path / 'images'), '--dest',
                   str(tmp_path / 'taken'), '--resolution', '8', '--skip-bad')
  assert one_error_line(out) == (f'error: --dest {tmp_path / "taken"} already exists (a file); '
                                 f'remove it or choose a new --dest')


# ----------------------------------------------------------------------------------------------
# 3. Damaged checkpoints.

def largest_file(directory: Path) -> Path:
  return max((p for p in directory.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


DAMAGE = {
    'data file missing': lambda c: largest_file(c / 'state').unlink(),
    'data file truncated': lambda c: (lambda f: f.write_bytes(f.read_bytes()[:100]))(
        largest_file(c / 'state')),
    'state metadata missing': lambda c: (c / 'state' / '_METADATA').unlink(),
    'meta missing': lambda c: (c / 'meta' / 'metadata').unlink(),
}


# Orbax leaves un-awaited reads of a damaged checkpoint to the garbage collector.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_a_damaged_checkpoint_is_skipped_by_tools_and_moved_aside_by_training(
    trained, tmp_path, damage, caplog):
  workdir = copy_run(trained[0], tmp_path / 'run')
  DAMAGE[damage](workdir / 'checkpoints' / '5')
  caplog.set_level(logging.WARNING)
  networks = load_training_networks(workdir)  # tools: the previous checkpoint, nothing moved
  checkpoints = TrainCheckpoints(workdir, asynchronous=False)
  want = flatten_variables(checkpoints.restore_raw_state(4)['g_ema'])
  got = flatten_variables(networks['G_ema'].variables)
  assert_same_leaves({k: np.asarray(v) for k, v in got.items()},
                     {k: np.asarray(v) for k, v in want.items()})
  assert (workdir / 'checkpoints' / '5').is_dir()
  assert any('checkpoints/5 is damaged' in r.getMessage() for r in caplog.records)
  files = sorted(p.relative_to(workdir / 'checkpoints' / '5')
                 for p in (workdir / 'checkpoints' / '5').rglob('*'))
  step, meta, _ = checkpoints.restore_newest()  # training: moved aside, never deleted
  assert step == 4 and meta['step'] == 4
  aside = [p for p in (workdir / 'checkpoints').iterdir() if p.name.startswith('5.damaged-')]
  assert len(aside) == 1 and not (workdir / 'checkpoints' / '5').exists()
  assert sorted(p.relative_to(aside[0]) for p in aside[0].rglob('*')) == files
  assert checkpoints.all_steps() == [2, 4]
  checkpoints.close()


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_resume_past_a_damaged_checkpoint_with_the_runs_own_config_is_exact(trained, tmp_path):
  """`--workdir` alone (the run's config.json) resumes from step 4 when step 5 is damaged, and
  step 5 trained again equals the straight run's bit for bit (bad images skipped alike)."""
  from sg2jax.main import load_config
  from sg2jax.train.loop import train_and_evaluate
  workdir = copy_run(trained[0], tmp_path / 'run')
  DAMAGE['data file truncated'](workdir / 'checkpoints' / '5')
  state = train_and_evaluate(load_config(None, str(workdir)), workdir)
  assert_same_leaves(state_leaves(state), trained[1])
  names = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  assert names[:3] == ['2', '4', '5'] and names[3].startswith('5.damaged-'), names


def test_no_restorable_checkpoint_is_one_clear_error(trained, tmp_path):
  workdir = copy_run(trained[0], tmp_path / 'run')
  for step in (2, 4, 5):
    DAMAGE['meta missing'](workdir / 'checkpoints' / str(step))
  checkpoints = TrainCheckpoints(workdir, asynchronous=False)
  with pytest.raises(ValueError, match=r'no checkpoint in .* restores \(moved aside to .*5\.damaged'
                                       r'.*\); run again to start this run over'):
    checkpoints.restore_newest()
  checkpoints.close()


# ----------------------------------------------------------------------------------------------
# 4. config.json is written once the run is accepted.

def test_a_refused_restart_keeps_config_json_and_names_a_command_that_works(trained, tmp_path):
  from sg2jax.main import load_config
  from sg2jax.train.config import load_run_config
  from sg2jax.train.loop import train_and_evaluate
  workdir = copy_run(trained[0], tmp_path / 'run')
  saved = (workdir / 'config.json').read_bytes()
  other = folder_config(trained[2], 6, **{'G.channel_max': 8})
  with pytest.raises(ValueError) as error:
    train_and_evaluate(other, workdir)
  assert (workdir / 'config.json').read_bytes() == saved
  assert f'python -m sg2jax.main --workdir {workdir} ' in str(error.value)
  assert f'--config {workdir / "config.json"} --config.KEY=VALUE' in str(error.value)
  for spec, where in ((None, str(workdir)), (str(workdir / 'config.json'), None)):
    config = load_config(spec, where)  # what `--workdir W` / `--config W/config.json` load
    assert config.to_json() == load_run_config(workdir).to_json()
    assert config.G.channel_max == 16 and config.data.path == str(trained[2])


# ----------------------------------------------------------------------------------------------
# 5 and 6. One run per workdir; SIGTERM exits 143, SIGINT 130, after saving.

def start_training(workdir: Path, log: Path, *overrides: str) -> subprocess.Popen:
  args = [sys.executable, '-m', 'sg2jax.main', '--config', str(TESTS / 'tiny_experiment.py'),
          '--workdir', str(workdir), *overrides]
  return subprocess.Popen(args, stdout=open(log, 'w'), stderr=subprocess.STDOUT)


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
  start = time.time()
  while not predicate():
    assert proc.poll() is None, log.read_text()[-3000:]
    assert time.time() - start < timeout, 'timed out'
    time.sleep(0.01)


def test_a_second_run_on_a_busy_workdir_is_refused_naming_the_first(trained, tmp_path):
  """Another process holds the lock (as a running training does): training fails at once with
  one line naming it; once that process is killed (-9) the OS has released the lock."""
  from sg2jax.train.loop import train_and_evaluate
  workdir = copy_run(trained[0], tmp_path / 'run')
  holder = subprocess.Popen([sys.executable, '-c', (
      'import sys, time; from sg2jax.checkpoint import WorkdirLock; '
      f'lock = WorkdirLock({str(workdir)!r}).acquire(); print("locked", flush=True); '
      'time.sleep(600)')],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(WorkdirInUseError) as error:
      train_and_evaluate(folder_config(trained[2], 6), workdir)
    message = str(error.value)
    assert message.startswith(f'{workdir} is being trained by another process (pid {holder.pid} '
                              f'on ') and message.endswith('or use another --workdir')
    assert TrainCheckpoints(workdir, asynchronous=False).all_steps() == [2, 4, 5]  # untouched
  finally:
    holder.kill()
    holder.wait(timeout=60)
  with WorkdirLock(workdir):  # free again; and exclusive within one process too
    with pytest.raises(WorkdirInUseError):
      WorkdirLock(workdir).acquire()


def test_library_info_lines_are_dropped_from_the_log():
  """The commands keep absl's log to sg2jax's lines: orbax's and jax's INFO lines go, anyone's
  warnings stay."""
  from absl import logging as absl_logging
  import sg2jax.cli
  keep = sg2jax.cli.quiet_library_logs()
  try:
    own = str(Path(sg2jax.cli.__file__).parent / 'train' / 'loop.py')
    orbax = '/site-packages/orbax/checkpoint/_src/checkpoint_manager.py'
    record = lambda path, level: logging.LogRecord('absl', level, path, 1, 'x', (), None)
    assert keep(record(own, logging.INFO)) and keep(record(orbax, logging.WARNING))
    assert not keep(record(orbax, logging.INFO))
    assert os.environ['TF_CPP_MIN_LOG_LEVEL'] in ('1', '2', '3')
  finally:
    absl_logging.get_absl_handler().removeFilter(keep)


@pytest.mark.slow
def test_a_second_training_is_refused_and_sigterm_exits_143(trained, tmp_path):
  """The commands as users run them. (After `trained`, whose programs the subprocesses load from
  the compilation cache.)"""
  workdir, log = tmp_path / 'run', tmp_path / 'first.log'
  first = start_training(workdir, log, '--config.total_kimg=100', '--config.snapshot_ticks=1000')
  try:
    wait_for(lambda: 'tick 1 ' in log.read_text(), first, log)
    second = run_module('sg2jax.main', '--config', str(TESTS / 'tiny_experiment.py'),
                        '--workdir', str(workdir))
    line = one_error_line(second)
    assert line.startswith(f'error: {workdir} is being trained by another process (pid '
                           f'{first.pid} on '), line
    assert first.poll() is None  # the first run goes on
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 143, log.read_text()[-3000:]
  finally:
    first.kill()
  text = log.read_text()
  assert text.strip().splitlines()[-1].startswith('sg2jax.main: stopped by SIGTERM at step ')
  assert 'run the same command again to resume' in text
  # The log is sg2jax's: orbax's and jax's INFO lines are dropped (their warnings would stay).
  assert 'loop.py' in text and 'checkpoint_manager.py' not in text and 'xla_bridge' not in text
  WorkdirLock(workdir).acquire().release()  # the lock is the OS's: free once the run is gone


def test_sigint_saves_and_raises_interrupted_with_status_130(trained, tmp_path):
  from sg2jax.train.loop import Interrupted, train_and_evaluate
  workdir = copy_run(trained[0], tmp_path / 'run')

  def interrupt(exp, state, step, kimg):
    os.kill(os.getpid(), signal.SIGINT)
    return {}

  # Resumed at step 5, the next tick (2 steps) snapshots step 7 and runs the hook.
  with pytest.raises(Interrupted, match=r'stopped by SIGINT at step 7 after saving') as error:
    train_and_evaluate(folder_config(trained[2], 11), workdir, hooks=[interrupt])
  assert error.value.exit_code == 130
  assert TrainCheckpoints(workdir, asynchronous=False).latest_step() == 7


# ----------------------------------------------------------------------------------------------
# 7. What a file may allocate; one-line errors.

def _global(module: str, name: str) -> bytes:
  return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _text(text: str) -> bytes:
  return b'X' + struct.pack('<I', len(text)) + text.encode()


def _int(n: int) -> bytes:
  raw = n.to_bytes(8, 'little', signed=True)
  return b'\x8a\x08' + raw  # LONG1


def _tensor_pickle(size: tuple, stride: tuple, numel: int, legacy: bool = False) -> bytes:
  """A protocol-2 pickle of `{'w': tensor}` as torch.save writes it: `_rebuild_tensor_v2` of a
  persistent storage ('0', FloatStorage of `numel`) with the given size and stride."""
  storage = (b'(' + _text('storage') + _global('torch', 'FloatStorage') + _text('0') +
             _text('cpu') + _int(numel) + (b'N' if legacy else b'') + b't' + b'Q')
  shape = lambda dims: b'(' + b''.join(_int(d) for d in dims) + b't'
  tensor = (_global('torch._utils', '_rebuild_tensor_v2') + b'(' + storage + _int(0) +
            shape(size) + shape(stride) + b'\x89' + _global('collections', 'OrderedDict') +
            b')R' + b'tR')
  return b'\x80\x02}' + _text('w') + tensor + b's.'


def torch_zip(path: Path, pickled: bytes, storage: bytes = b'\0' * 4, bomb_bytes: int = 0) -> Path:
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', pickled)
    if bomb_bytes:  # a storage of zeros, deflated: a small file that inflates to bomb_bytes
      info = zipfile.ZipInfo('archive/data/0')
      info.compress_type = zipfile.ZIP_DEFLATED
      with archive.open(info, 'w') as f:
        for _ in range(bomb_bytes >> 20):
          f.write(bytes(1 << 20))
    else:
      archive.writestr('archive/data/0', storage)
  return path


def crafted(kind: str, directory: Path) -> tuple[Path, str]:
  """(a crafted file, the loader that reads it)."""
  path = directory / f'{kind}.bin'
  if kind == 'bytes8':  # 20 bytes claiming a 1 TB bytes object
    path.write_bytes(b'\x80\x04\x8e' + struct.pack('<Q', 1 << 40) + b'.')
    return path, 'network'
  if kind == 'ndarray':  # numpy's reconstruction of a 10^11-element array
    path.write_bytes(b'\x80\x02' + _global('numpy.core.multiarray', '_reconstruct') +
                     _global('numpy', 'ndarray') + _int(10 ** 11) + b'\x85' + b'C\x01b' +
                     b'\x87R.')
    return path, 'network'
  if kind == 'stride0':  # a tensor of 10^12 elements on a one-element storage
    return torch_zip(path, _tensor_pickle((10 ** 12,), (0,), 1)), 'state_dict'
  if kind == 'zip_bomb':  # 64 MB of storage deflated to ~64 KB
    pickled = _tensor_pickle((1 << 24,), (1,), 1 << 24)
    with zipfile.ZipFile(torch_zip(path, pickled, bomb_bytes=64 << 20)) as archive:
      assert archive.getinfo('archive/data/0').compress_type == zipfile.ZIP_DEFLATED
    assert path.stat().st_size < 1 << 20
    return path, 'state_dict'
  if kind == 'legacy_count':  # a legacy torch.save whose storage claims 10^12 elements
    with open(path, 'wb') as f:
      for header in (0x1950A86A20F9469CFC6C, 1001, {'little_endian': True}):
        pickle.dump(header, f, protocol=2)
      f.write(_tensor_pickle((1,), (1,), 10 ** 12, legacy=True))
      pickle.dump(['0'], f, protocol=2)
      f.write(struct.pack('<q', 10 ** 12) + b'\0' * 4)
    return path, 'state_dict'
  raise ValueError(kind)


@pytest.mark.parametrize('kind', ['bytes8', 'ndarray', 'stride0', 'zip_bomb', 'legacy_count'])
def test_crafted_files_are_refused_before_allocating(tmp_path, kind):
  from sg2jax.formats.official import load_official_pickle
  from sg2jax.formats.state_dict import read_state_dict
  path, reader = crafted(kind, tmp_path)
  tracemalloc.start()
  try:
    with pytest.raises(ValueError, match='not a readable') as error:
      if reader == 'network':
        load_official_pickle(path)
      else:
        read_state_dict(path, 'FID Inception weights', 'download it')
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert 'AllocationError' in str(error.value) and len(str(error.value).splitlines()) == 1
  assert peak < 4 << 20, f'{kind}: {peak / 2 ** 20:.1f} MB allocated before the refusal'


def test_real_files_stay_within_the_limits():
  """The budget (4x the file + 16 MB) leaves room: every weight file of tests/data loads."""
  from sg2jax.formats.official import load_official_pickle
  from sg2jax.formats.state_dict import read_state_dict
  for name in ('ada_snapshot_tiny.pkl', 'tf_snapshot_tiny.pkl'):
    assert 'G_ema' in load_official_pickle(DATA / name)
  for name in ('inception_fid_subset.pth', 'inception_fid_subset_legacy.pth'):
    assert read_state_dict(DATA / name, 'weights', '')


def test_memory_error_and_user_errors_are_one_line(monkeypatch):
  from sg2jax.cli import run

  def out_of_memory():
    raise MemoryError()

  def bad_value():
    raise ValueError('two lines\nbecome one')

  monkeypatch.setattr(sys, 'argv', ['prog'])
  with pytest.raises(SystemExit, match=r'^error: out of memory \(MemoryError\); use smaller'):
    run(out_of_memory)
  with pytest.raises(SystemExit, match=r'^error: two lines become one$'):
    run(bad_value)
  with pytest.raises(ValueError, match='two lines'):  # --debug: the error, with its traceback
    run(bad_value, argv=['--debug'])


def test_refused_pickles_and_bad_outdirs_are_one_line_and_debug_shows_the_traceback(tmp_path):
  marker = tmp_path / 'pwned'

  class Exploit:
    def __reduce__(self):
      return (os.mkdir, (str(marker),))

  evil = tmp_path / 'evil.pkl'
  evil.write_bytes(pickle.dumps({'G': Exploit()}))
  args = ('sg2jax.generate', '--network', str(evil), '--seeds', '0', '--outdir', str(tmp_path))
  line = one_error_line(run_module(*args))
  assert line.startswith('error: evil.pkl: refusing to load global posix.mkdir')
  debug = run_module(*args, '--debug')
  assert debug.returncode == 1 and 'Traceback' in debug.stderr
  assert 'UnsafePickleError' in debug.stderr and not marker.exists()
  (tmp_path / 'taken').write_text('a file')
  for tool, extra in (('sg2jax.generate', ('--seeds', '0')),
                      ('sg2jax.project', ('--target', str(tmp_path / 'taken')))):
    out = run_module(tool, '--network', str(DATA / 'ada_snapshot_tiny.pkl'), *extra,
                     '--outdir', str(tmp_path / 'taken'))
    assert one_error_line(out) == (f'error: --outdir {tmp_path / "taken"} is a file, not a '
                                   f'folder; pass a folder path for --outdir')


# ----------------------------------------------------------------------------------------------
# 8. --config names.

def test_config_names_resolve_from_any_directory(tmp_path, monkeypatch):
  from sg2jax.main import find_config
  package = (TESTS.parent / 'experiments').resolve()
  elsewhere, own = tmp_path / 'elsewhere', tmp_path / 'own'
  elsewhere.mkdir()
  own.mkdir()
  monkeypatch.chdir(own)
  assert find_config('demo.py').resolve() == package / 'demo.py'
  assert find_config('experiments/demo.py').resolve() == package / 'demo.py'
  (own / 'demo.py').write_text('')
  assert find_config('demo.py') == Path('demo.py')  # the current directory comes first
  with pytest.raises(FileNotFoundError, match=rf'^--config nothere.py not found; looked for '
                                              rf'{own}/nothere.py, .*/experiments/nothere.py$'):
    find_config('nothere.py')
  # From another directory the demo config loads (the bad override after it is the error).
  for name in ('demo.py', 'experiments/demo.py'):
    out = run_module('sg2jax.main', '--config', name, '--workdir', str(tmp_path / 'w'),
                     '--config.totl_kimg=1', cwd=elsewhere)
    assert one_error_line(out).startswith('error: bad --config override: totl_kimg Did you mean')
  out = run_module('sg2jax.main', '--config', 'nothere.py', '--workdir', str(tmp_path / 'w'),
                   cwd=elsewhere)
  assert one_error_line(out).startswith(f'error: --config nothere.py not found; looked for '
                                        f'{elsewhere}/nothere.py, ')


# ----------------------------------------------------------------------------------------------
# 9. Grids and the projector's advice.

@pytest.mark.parametrize('count, columns, rows', [(32, 8, 4), (16, 4, 4), (12, 4, 3), (3, 3, 1),
                                                  (7, 3, 3), (1, 1, 1)])
def test_grids_have_no_empty_cells_where_the_count_allows(count, columns, rows):
  from sg2jax.images import make_grid
  images = np.arange(1, count + 1, dtype=np.uint8).reshape(count, 1, 1, 1)
  grid = make_grid(images)
  assert grid.shape == (rows, columns, 1)
  assert (grid == 0).sum() == rows * columns - count
  assert make_grid(images, columns=count).shape == (1, count, 1)  # explicit columns still rule


def test_projector_advice_for_a_grey_network_and_16_bit_targets(tmp_path):
  from sg2jax.networks.generator import Generator
  from sg2jax.tools.projector import load_target, project
  grey = Generator(z_dim=8, w_dim=8, img_resolution=8, img_channels=1, mapping_layers=1,
                   channel_base=32, channel_max=8)
  path = tmp_path / 'colour.png'
  Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(path)
  with pytest.raises(ValueError, match=r'load each with load_target\(path, 8, channels=1\)'):
    project(grey, {}, load_target(path, 8)[None])
  assert load_target(path, 8, channels=1).shape == (8, 8, 1)  # what the advice says fits
  levels = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
  Image.fromarray(levels).save(tmp_path / 'grey16.png')
  target = load_target(tmp_path / 'grey16.png', 8, channels=1)[..., 0]
  np.testing.assert_allclose(target, levels / 257, atol=0.5)  # scaled, not clipped at 255


# ----------------------------------------------------------------------------------------------
# 11. convert prints the SHA-256 of what it reads.

def test_convert_prints_the_sha256_of_the_pickle(tmp_path, capsys):
  from sg2jax import convert
  network = DATA / 'tf_snapshot_tiny.pkl'
  assert convert.main(['--network', str(network), '--out', str(tmp_path / 'out')]) == 0
  digest = hashlib.sha256(network.read_bytes()).hexdigest()
  assert capsys.readouterr().out.splitlines()[0] == f'SHA-256 of {network}: {digest}'


# ----------------------------------------------------------------------------------------------
# 12. kill -9 in the middle of a save.

KILL_SEED = 'SG2JAX_KILL_SEED'
SAVING = '.orbax-checkpoint-tmp'  # orbax writes `<step>.orbax-checkpoint-tmp...`, then renames it
# Put by the test in the temporary directory of a killed save: the next run's save of that step
# reuses the name (orbax removes the leftover first), and the watcher must not take the leftover
# for a save in flight.
LEFTOVER = 'killed-here'


def kill_seed() -> tuple[random.Random, str]:
  """The random choices of a kill test and `SG2JAX_KILL_SEED=N`, their seed (from the environment,
  or fresh), which is printed and goes in every assertion message: run again with it set, the
  test makes the same choices (the timing of the training process is the machine's)."""
  seed = int(os.environ.get(KILL_SEED) or random.SystemRandom().randrange(1 << 30))
  print(f'{KILL_SEED}={seed}')
  return random.Random(seed), f'{KILL_SEED}={seed}'


def finished_steps(workdir: Path) -> list[int]:
  directory = workdir / 'checkpoints'
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def kill_in_a_save(workdir: Path, log: Path, rng: random.Random, where: str,
                   finished_first: int, tries: int = 8) -> tuple[Path, list[int]]:
  """Starts training on `workdir` (saving every 2 steps), lets `finished_first` saves finish,
  then kills it with SIGKILL in the middle of a later one; returns (that save's temporary
  directory, the finished checkpoints' steps at the kill).

  The moment: a random fraction of the previous save's duration after the temporary directory
  appeared (polled every 2 ms). The process is frozen (SIGSTOP) first, so that the test can see
  that the save is still in flight, its temporary directory not yet renamed, before the kill;
  a save that finished in between is let go (SIGCONT) and a later one is tried, sooner.
  """
  directory = workdir / 'checkpoints'
  proc = start_training(workdir, log, '--config.total_kimg=100')
  try:
    appeared: dict[str, float] = {}  # temporary directory -> when it was first seen
    finished, duration, missed, start = 0, 0.0, 0, time.monotonic()
    while True:
      assert proc.poll() is None, (where, log.read_text()[-3000:])
      assert time.monotonic() - start < 300, (where, 'timed out', log.read_text()[-3000:])
      names = set(os.listdir(directory)) if directory.is_dir() else set()
      now = time.monotonic()
      saving = {n for n in names if SAVING in n and not (directory / n / LEFTOVER).exists()}
      for name in set(appeared) - saving:  # renamed: that save finished
        finished, duration = finished + 1, now - appeared.pop(name)
      for name in sorted(saving - set(appeared)):
        appeared[name] = now
        if finished < finished_first:
          continue
        time.sleep(rng.random() * duration * 0.5 ** missed)
        os.kill(proc.pid, signal.SIGSTOP)
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), (where, status, log.read_text()[-3000:])
        if (directory / name).is_dir() and not (directory / name / LEFTOVER).exists():
          # Frozen while saving: nothing can rename it now.
          steps = finished_steps(workdir)
          os.kill(proc.pid, signal.SIGKILL)
          proc.wait(timeout=60)
          print(f'{where}: killed {1000 * (time.monotonic() - now):.0f} ms into the save of '
                f'{name} (finished: {steps}; saves that finished before the freeze: {missed})')
          return directory / name, steps
        os.kill(proc.pid, signal.SIGCONT)
        missed += 1
        assert missed < tries, (f'{where}: every one of {tries} saves finished before the '
                                f'process was frozen; saves are too fast to catch here')
      time.sleep(0.002)
  finally:
    proc.kill()
    proc.wait(timeout=60)


def check_killed_in_a_save(workdir: Path, saving: Path, finished: list[int], where: str) -> int:
  """The kill interrupted the save of `saving` and lost nothing: the temporary directory is still
  there, unfinished, the finished checkpoints are those of the moment of the kill and the newest
  restores. Returns its step, and marks the temporary directory as a leftover."""
  step = int(saving.name.split('.')[0])
  assert saving.is_dir(), f'{where}: {saving.name} is gone, the save was not interrupted'
  assert finished and step > finished[-1], (where, saving.name, finished)
  assert finished_steps(workdir) == finished, (where, finished_steps(workdir), finished)
  checkpoints = TrainCheckpoints(workdir, asynchronous=False)
  newest, meta, state = checkpoints.restore_newest(move_damaged=False)
  checkpoints.close()
  assert newest == meta['step'] == int(np.asarray(state['step'])) == finished[-1], where
  (saving / LEFTOVER).touch()
  return finished[-1]


def resume_after_the_kill(workdir: Path, saving: Path, previous: int, where: str, caplog) -> None:
  """A new run resumes from `previous`, saves the interrupted step again over its leftover
  temporary directory and trains one step further."""
  from sg2jax.train.loop import train_and_evaluate
  interrupted = int(saving.name.split('.')[0])
  caplog.set_level(logging.INFO)
  state = train_and_evaluate(tiny(total_kimg=kimg(interrupted + 1)), workdir)
  assert f'resumed from step {previous} ' in caplog.text, where
  assert int(state.step) == interrupted + 1, where
  steps = finished_steps(workdir)
  assert steps[-3:] == [previous, interrupted, interrupted + 1], (where, steps)
  assert not [p for p in (workdir / 'checkpoints').iterdir() if SAVING in p.name], where


def test_kill_9_in_the_middle_of_a_save_keeps_the_previous_checkpoint(trained, tmp_path, caplog):
  """SIGKILL while a checkpoint is being written (its temporary directory exists): the previous
  checkpoint restores, and a new run resumes from it and trains on."""
  rng, where = kill_seed()
  workdir = tmp_path / 'run'
  saving, finished = kill_in_a_save(workdir, tmp_path / 'killed.log', rng, where,
                                    finished_first=rng.randint(1, 3))
  previous = check_killed_in_a_save(workdir, saving, finished, where)
  resume_after_the_kill(workdir, saving, previous, where, caplog)


@pytest.mark.slow
def test_kill_9_in_the_middle_of_many_saves(trained, tmp_path, caplog):
  """Eight runs on one workdir, each resuming the last and killed in the middle of a save after
  0 to 3 finished ones (0: the save of the step the killed run before was saving); then a run
  that trains on."""
  rng, where = kill_seed()
  workdir, previous = tmp_path / 'run', None
  for attempt in range(8):
    log, at = tmp_path / f'attempt{attempt}.log', f'{where}, attempt {attempt}'
    saving, finished = kill_in_a_save(workdir, log, rng, at,
                                      finished_first=rng.randint(0 if attempt else 1, 3))
    if previous is not None:
      assert f'resumed from step {previous} ' in log.read_text(), (at, log.read_text()[-3000:])
    previous = check_killed_in_a_save(workdir, saving, finished, at)
  resume_after_the_kill(workdir, saving, previous, where, caplog)
