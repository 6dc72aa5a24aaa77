"""sg2jax on Cloud Storage (`gs://`), against a real emulator on 127.0.0.1 (tests/gcs_emulator.py):
a dataset written there by dataset_tool, a run trained there (checkpoints through TensorStore,
config.json, samples, TensorBoard events), damaged and cut-short checkpoints in the bucket, the
workdir lock, the tools with `gs://` inputs and outputs, fine-tuning from a `gs://` pickle, and
one-line errors. Every test checks that nothing this process's Python code connected to was
anywhere but 127.0.0.1 (tests/gcs_emulator.py says what that covers).

The slow tests (`-m slow`) kill a run with SIGKILL in the middle of a save to the bucket, train
two processes on one `gs://` workdir and stop one with SIGTERM, and run `eval`, `project` and
fine-tuning with bucket paths.
"""

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

from gcs_emulator import Emulator, outside
from test_faults import assert_same_leaves, state_leaves
from tiny_experiment import kimg, tiny
from sg2jax import storage
from sg2jax.checkpoint import BucketLock, WorkdirInUseError, load_training_networks
from sg2jax.networks.weights import flatten_variables

STEPS = 5  # checkpoints at steps 2, 4 and 5


@pytest.fixture(scope='module')
def gcs():
  emulator = Emulator().start()
  yield emulator
  emulator.stop()


@pytest.fixture(autouse=True)
def nothing_leaves_the_machine(request):
  yield
  if 'gcs' in request.fixturenames:
    assert outside() == [], 'connections beyond 127.0.0.1'


def bucket_config(data: str, steps: int, **overrides):
  return tiny(**{'data.source': 'zip', 'data.path': data, 'total_kimg': kimg(steps),
                 **overrides})


def copy_in_bucket(source: str, target: str) -> str:
  storage.copy_tree(source, target)
  return target


@pytest.fixture(scope='module')
def bucket_run(gcs, tmp_path_factory):
  """dataset_tool writes a zip to the bucket; a 5-step run trains on it in a `gs://` workdir.
  Returns (workdir, final state leaves, dataset)."""
  from sg2jax.data.prepare import convert_dataset
  from sg2jax.train.loop import train_and_evaluate
  folder = tmp_path_factory.mktemp('gcs') / 'images'
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(16):
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f'{i:02d}.png')
  data = gcs.gs('datasets/shapes.zip')
  counts = convert_dataset(folder, data, 8)
  assert counts['written'] == 16
  workdir = gcs.gs('runs/first')
  state = train_and_evaluate(bucket_config(data, STEPS), workdir)
  return workdir, state_leaves(state), data


def test_a_run_in_the_bucket_writes_its_whole_workdir_there(gcs, bucket_run):
  workdir, leaves, data = bucket_run
  assert gcs.objects('datasets') == ['datasets/shapes.zip']  # one object, no partial left
  names = gcs.objects('runs/first')
  for step in (2, 4, 5):  # every checkpoint complete: orbax's commit mark is written last
    assert f'runs/first/checkpoints/{step}/commit_success.txt' in names
  assert 'runs/first/config.json' in names
  assert json.loads(storage.as_path(workdir + '/config.json').read_text())['data']['path'] == data
  assert {'runs/first/samples/reals.png', 'runs/first/samples/fakes0000005.png'} <= set(names)
  assert any(n.startswith('runs/first/events.out.tfevents.') for n in names)
  assert 'runs/first/.lock' not in names  # released
  assert not [n for n in names if 'tmp' in n or 'partial' in n]
  networks = load_training_networks(workdir)  # read back from the bucket
  g_ema = flatten_variables(networks['G_ema'].variables)
  for key, value in g_ema.items():
    np.testing.assert_array_equal(value, leaves[f'g_ema/{key}'], err_msg=key)


# 'unfinished' is what test_kill_9_in_the_middle_of_a_save_to_the_bucket makes for real: slow.
@pytest.mark.parametrize('damage', ['damaged', pytest.param('unfinished', marks=pytest.mark.slow)])
def test_a_bad_newest_checkpoint_in_the_bucket_is_moved_aside_and_resume_is_exact(
    gcs, bucket_run, damage, caplog):
  """`damaged`: a data object of the newest checkpoint is gone (tools skip it, training moves it
  aside); `unfinished`: its commit mark is missing, what a save cut short leaves on object
  storage (not a checkpoint at all: moved aside when the next run opens the workdir). Either
  way training resumes from step 4 and ends bit-identical to the uninterrupted run."""
  from sg2jax.train.loop import train_and_evaluate
  source, leaves, data = bucket_run
  workdir = copy_in_bucket(source, gcs.gs(f'runs/{damage}'))
  fs = storage.filesystem()
  if damage == 'damaged':
    files = [n for n in gcs.objects(f'runs/{damage}/checkpoints/5/state') if '/d/' in n]
    fs.rm(f'{gcs.bucket}/{files[0]}')
    load_training_networks(workdir)  # the tools skip it (step 4)
  else:
    fs.rm(f'{gcs.bucket}/runs/{damage}/checkpoints/5/commit_success.txt')
  caplog.set_level(logging.INFO)
  state = train_and_evaluate(bucket_config(data, STEPS), workdir)
  assert 'resumed from step 4 ' in caplog.text
  assert f'moved it aside to 5.{damage}-' in caplog.text
  names = gcs.objects(f'runs/{damage}/checkpoints')
  assert any(n.startswith(f'runs/{damage}/checkpoints/5.{damage}-') for n in names)
  assert f'runs/{damage}/checkpoints/5/commit_success.txt' in names  # saved again
  assert_same_leaves(state_leaves(state), leaves)


def test_a_folder_dataset_in_the_bucket_reads_as_the_local_one(gcs, tmp_path):
  """dataset_tool writes a folder to the bucket; FolderSource and ZipSource
  read the bucket's copies image for image as the local ones."""
  from sg2jax.data.prepare import convert_dataset
  from sg2jax.data.sources import FolderSource, ZipSource
  folder = tmp_path / 'images'
  folder.mkdir()
  rng = np.random.default_rng(1)
  for i in range(5):
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f'{i}.png')
  convert_dataset(folder, tmp_path / 'local', 8)
  convert_dataset(folder, gcs.gs('datasets/folder'), 8)
  convert_dataset(folder, tmp_path / 'local.zip', 8)
  storage.upload(tmp_path / 'local.zip', gcs.gs('datasets/uploaded.zip'))
  names = gcs.objects('datasets/folder')
  assert 'datasets/folder/dataset.json' in names and len(names) == 6
  pairs = ((FolderSource(tmp_path / 'local'), FolderSource(gcs.gs('datasets/folder'))),
           (ZipSource(tmp_path / 'local.zip'), ZipSource(gcs.gs('datasets/uploaded.zip'))))
  for local, remote in pairs:
    assert len(local) == len(remote) == 5
    for i in range(5):
      np.testing.assert_array_equal(local[i]['image'], remote[i]['image'])


def test_gs_paths_go_through_gcsfs_even_after_local_epath_paths(gcs, tmp_path):
  """epath remembers whether to use TensorFlow's gfile the first time any path picks a backend
  (orbax's local paths, other tests); sg2jax's storage settings win all the same."""
  from etils import epath
  from etils.epath import backend
  assert not epath.Path(tmp_path / 'nothing').exists()
  storage._configured = None  # as in a process that used local epath paths first
  path = storage.as_path(gcs.gs('probe.txt'))
  path.write_text('probe')
  assert path._backend is backend.fsspec_backend and path.read_text() == 'probe'


def test_the_bucket_lock_refuses_a_second_run_and_takes_over_a_stale_one(gcs):
  workdir = gcs.gs('runs/locked')
  first = BucketLock(workdir, timeout=600).acquire()
  with pytest.raises(WorkdirInUseError, match=r'pid \d+ on .*last heartbeat \d+ s ago.*older '
                                              r'than 600 s \(SG2JAX_LOCK_TIMEOUT\)'):
    BucketLock(workdir, timeout=600).acquire()
  # The first owner is "killed": its heartbeat stops, nothing releases the lock.
  first._stop.set()
  first._thread.join()
  time.sleep(1.1)
  second = BucketLock(workdir, timeout=1).acquire()  # stale after 1 s: taken over
  record = json.loads(storage.as_path(workdir + '/.lock').read_text())
  assert record['token'] == second.token and record['pid'] == os.getpid()
  first._thread = None  # the killed owner never releases
  second.release()
  assert gcs.objects('runs/locked') == []


def test_of_two_runs_starting_at_once_exactly_one_gets_the_lock(gcs):
  """The lock object is created only if absent (a generation precondition), so a race between
  the check and the upload cannot give the workdir to two runs."""
  workdir = gcs.gs('runs/race')
  locks = [BucketLock(workdir, timeout=600) for _ in range(4)]
  for lock in locks:  # all of them past the "is there a lock?" check
    lock._read = lambda: None
  results = [None] * len(locks)
  barrier = threading.Barrier(len(locks))

  def take(i):
    barrier.wait()
    try:
      locks[i].acquire()
      results[i] = 'owner'
    except WorkdirInUseError:
      results[i] = 'refused'

  threads = [threading.Thread(target=take, args=(i,)) for i in range(len(locks))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert sorted(results) == ['owner'] + ['refused'] * (len(locks) - 1)
  locks[results.index('owner')].release()


def test_tools_read_and_write_the_bucket(gcs, bucket_run):
  """export (workdir -> gs pickle), convert (gs pickle -> gs checkpoint), generate (from both,
  to gs)."""
  from sg2jax import convert, export, generate
  workdir, _, _ = bucket_run
  pkl, converted = gcs.gs('nets/first.pkl'), gcs.gs('nets/first-converted')
  assert export.main(['--network', workdir, '--out', pkl]) == 0
  assert convert.main(['--network', pkl, '--out', converted]) == 0
  for network, out in ((workdir, 'gen/workdir'), (converted, 'gen/converted')):
    assert generate.main(['--network', network, '--seeds', '0-1', '--outdir', gcs.gs(out)]) == 0
    assert gcs.objects(out) == [f'{out}/seed0000.png', f'{out}/seed0001.png']
  a, b = (np.asarray(Image.open(storage.as_path(gcs.gs(f'gen/{k}/seed0001.png')).open('rb')))
          for k in ('workdir', 'converted'))
  np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_fine_tuning_from_a_pickle_in_the_bucket(gcs, bucket_run):
  """`resume_from` a `gs://` pickle (export's), into a `gs://` workdir."""
  from sg2jax import export
  from sg2jax.train.loop import train_and_evaluate
  workdir, _, data = bucket_run
  pkl = gcs.gs('nets/for-fine-tuning.pkl')
  assert export.main(['--network', workdir, '--out', pkl]) == 0
  state = train_and_evaluate(bucket_config(data, 1, resume_from=pkl), gcs.gs('runs/finetune'))
  assert int(state.step) == 1


def test_bucket_errors_are_one_line_saying_what_to_do(gcs, tmp_path):
  with pytest.raises(FileNotFoundError, match=r'^bucket gs://no-such-bucket does not exist: '
                                              r'create it with `gcloud storage buckets create'):
    storage.require_bucket('gs://no-such-bucket/run')
  forbidden = OSError('Forbidden: gs://theirs/x\nsg2jax@p.iam does not have storage.objects.get')
  line = storage.cloud_error_line(forbidden, 'gs://theirs/x')
  assert line.startswith('no permission for gs://theirs: ') and 'roles/storage.objectAdmin' in line
  from google.auth.exceptions import DefaultCredentialsError
  line = storage.cloud_error_line(DefaultCredentialsError('Could not find credentials'), 'gs://b/x')
  assert line.startswith('no Google Cloud credentials')
  assert 'gcloud auth application-default' in line
  folder = tmp_path / 'images'
  folder.mkdir()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / 'a.png')
  out = subprocess.run([sys.executable, '-m', 'sg2jax.dataset_tool', '--source', str(folder),
                        '--dest', 'gs://no-such-bucket/d.zip', '--resolution', '8'],
                       capture_output=True, text=True, timeout=120)
  errors = [line for line in out.stderr.splitlines() if line.startswith('error: ')]
  assert out.returncode == 1 and len(errors) == 1, out.stderr[-2000:]
  assert 'bucket gs://no-such-bucket does not exist' in errors[0]
  assert 'Traceback' not in out.stderr


# ----------------------------------------------------------------------------------------------
# Slow: processes killed and stopped while they write to the bucket.

TESTS = Path(__file__).parent


def training_command(workdir: str, *overrides: str) -> list[str]:
  return [sys.executable, '-m', 'sg2jax.main', '--config', str(TESTS / 'tiny_experiment.py'),
          '--workdir', workdir, *overrides]


def step_objects(gcs: Emulator, prefix: str) -> dict[int, bool]:
  """{step: finished (has its commit mark)} of the checkpoints under `prefix`."""
  steps: dict[int, bool] = {}
  for name in gcs.objects(f'{prefix}/checkpoints'):
    step, _, rest = name[len(prefix) + len('/checkpoints/'):].partition('/')
    if step.isdigit():
      steps[int(step)] = steps.get(int(step), False) or rest == 'commit_success.txt'
  return steps


@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_save_to_the_bucket(gcs, bucket_run, tmp_path, caplog,
                                                     monkeypatch):
  """SIGKILL while a checkpoint is being written to the bucket (its objects there, its commit
  mark not yet): the previous checkpoint restores; the next run takes over the killed run's
  lock once it is stale, moves the cut-short checkpoint aside, resumes from the previous one
  and trains on."""
  from sg2jax.train.loop import train_and_evaluate
  _, _, data = bucket_run
  monkeypatch.setenv('SG2JAX_LOCK_TIMEOUT', '30')  # the killed run's lock: stale after 30 s
  prefix = 'runs/killed'
  log = tmp_path / 'killed.log'
  proc = subprocess.Popen(training_command(gcs.gs(prefix), '--config.data.source=zip',
                                           f'--config.data.path={data}',
                                           '--config.total_kimg=100'),
                          stdout=open(log, 'w'), stderr=subprocess.STDOUT)
  try:
    start, killed = time.monotonic(), None
    while killed is None:
      assert proc.poll() is None, log.read_text()[-3000:]
      assert time.monotonic() - start < 400, ('timed out', log.read_text()[-3000:])
      steps = step_objects(gcs, prefix)
      saving = [s for s, done in steps.items() if not done]
      if saving and any(steps.values()):  # a save in flight after a finished one
        os.kill(proc.pid, signal.SIGSTOP)
        os.waitpid(proc.pid, os.WUNTRACED)
        steps = step_objects(gcs, prefix)
        if not steps.get(saving[0], True):  # frozen while still unfinished
          os.kill(proc.pid, signal.SIGKILL)
          proc.wait(timeout=60)
          killed = (saving[0], max(s for s, done in steps.items() if done))
        else:
          os.kill(proc.pid, signal.SIGCONT)
      time.sleep(0.005)
  finally:
    proc.kill()
    proc.wait(timeout=60)
  interrupted, previous = killed
  print(f'killed in the save of step {interrupted}; newest finished: {previous}')
  assert interrupted > previous
  assert f'{prefix}/.lock' in gcs.objects(prefix)  # nothing released it
  with pytest.raises(WorkdirInUseError, match='older than 30 s'):
    train_and_evaluate(bucket_config(data, interrupted + 1), gcs.gs(prefix))
  time.sleep(30)
  caplog.set_level(logging.INFO)
  state = train_and_evaluate(bucket_config(data, interrupted + 1), gcs.gs(prefix))
  assert f'resumed from step {previous} ' in caplog.text
  assert f'moved it aside to {interrupted}.unfinished-' in caplog.text
  assert int(state.step) == interrupted + 1
  steps = step_objects(gcs, prefix)
  assert steps[interrupted] and steps[interrupted + 1]


def distributed_run(workdir: str, data: str, steps: int, log: Path,
                    stop_after_step: Optional[int] = None, gcs=None, prefix: str = '') -> list[int]:
  """Two processes (2 CPU devices each, jax.distributed on 127.0.0.1) train `workdir`; with
  `stop_after_step`, process 1 gets SIGTERM once checkpoint `stop_after_step` is finished.
  Returns the exit codes."""
  port = Emulator().port  # a free port for the coordinator
  env = dict(os.environ, XLA_FLAGS=' '.join(
      [f for f in os.environ.get('XLA_FLAGS', '').split() if 'device_count' not in f] +
      ['--xla_force_host_platform_device_count=2']))
  procs = [subprocess.Popen(
      training_command(workdir, '--config.data.source=zip', f'--config.data.path={data}',
                       f'--config.total_kimg={kimg(steps)}',
                       f'--coordinator_address=127.0.0.1:{port}',
                       '--num_processes=2', f'--process_id={i}'),
      env=env, stdout=open(f'{log}.{i}', 'w'), stderr=subprocess.STDOUT) for i in range(2)]
  try:
    if stop_after_step is not None:
      start = time.monotonic()
      while not step_objects(gcs, prefix).get(stop_after_step):
        assert all(p.poll() is None for p in procs), Path(f'{log}.0').read_text()[-3000:]
        assert time.monotonic() - start < 500, 'timed out'
        time.sleep(0.05)
      procs[1].send_signal(signal.SIGTERM)
    return [p.wait(timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
      p.wait(timeout=60)


@pytest.mark.slow
def test_two_processes_on_one_bucket_workdir_stop_together_and_resume_exactly(
    gcs, bucket_run, tmp_path):
  """2 processes share a `gs://` workdir; SIGTERM to one: both save once, at the same step, and
  exit 143; the same command resumes them, and the result is bit-identical to an uninterrupted
  2-process run."""
  from sg2jax.checkpoint import TrainCheckpoints
  _, _, data = bucket_run
  steps = 12
  codes = distributed_run(gcs.gs('runs/two'), data, steps, tmp_path / 'stopped', 2, gcs,
                          'runs/two')
  assert codes == [128 + signal.SIGTERM] * 2, [Path(f'{tmp_path}/stopped.{i}').read_text()[-3000:]
                                               for i in range(2)]
  stopped = TrainCheckpoints(gcs.gs('runs/two'), asynchronous=False, repair=False)
  stop_step = stopped.latest_step()
  stopped.close()
  assert 2 <= stop_step < steps
  assert all(step_objects(gcs, 'runs/two').values())  # nothing half-written
  assert distributed_run(gcs.gs('runs/two'), data, steps, tmp_path / 'resumed') == [0, 0]
  assert distributed_run(gcs.gs('runs/straight'), data, steps, tmp_path / 'straight') == [0, 0]
  states = []
  for prefix in ('runs/two', 'runs/straight'):
    checkpoints = TrainCheckpoints(gcs.gs(prefix), asynchronous=False, repair=False)
    assert checkpoints.latest_step() == steps
    states.append(flatten_variables(checkpoints.restore_raw_state(steps)))
    checkpoints.close()
  assert_same_leaves(*states)


@pytest.mark.slow
def test_eval_reads_a_bucket_workdir_and_writes_results_and_cache_there(gcs, bucket_run):
  """`sg2jax.eval` on a `gs://` workdir (its config.json names a `gs://` dataset): metrics.jsonl,
  TensorBoard events and the real-feature cache land in a `gs://` outdir; a second evaluation
  reads the cached features back from the bucket."""
  from sg2jax import eval as eval_cli
  workdir, _, _ = bucket_run
  outdir = gcs.gs('eval/first')
  for _ in range(2):
    assert eval_cli.main(['--metric', 'fd_vgg2k', '--workdir', workdir, '--num-samples', '16',
                          '--batch-size', '8', '--outdir', outdir, '--no-progress']) == 0
  names = gcs.objects('eval/first')
  records = [json.loads(line) for line in
             storage.as_path(outdir + '/metrics.jsonl').read_text().splitlines()]
  assert [r['metric'] for r in records] == ['fd_vgg2k', 'fd_vgg2k']
  assert records[0]['value'] == records[1]['value'] and records[0]['step'] == STEPS
  assert any(n.startswith('eval/first/metric_cache/reals-') for n in names)
  assert any(n.startswith('eval/first/events.out.tfevents.') for n in names)


@pytest.mark.slow
def test_project_and_generate_figures_with_bucket_paths(gcs, bucket_run):
  """project: network, target and outdir in the bucket (images, npz files, the video uploaded);
  generate --projected-w reads the bucket's projected_w.npz."""
  from sg2jax import generate, project
  workdir, _, _ = bucket_run
  target = storage.as_path(gcs.gs('targets/t.png'))
  buffer = io.BytesIO()
  Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buffer, format='png')
  target.write_bytes(buffer.getvalue())
  assert project.main(['--network', workdir, '--target', str(target), '--outdir',
                       gcs.gs('proj'), '--num-steps', '2', '--save-video',
                       '--video-every', '1']) == 0
  assert gcs.objects('proj') == ['proj/proj.mp4', 'proj/proj.png', 'proj/projected_noise.npz',
                                 'proj/projected_w.npz', 'proj/target.png']
  assert generate.main(['--network', workdir, '--projected-w', gcs.gs('proj/projected_w.npz'),
                        '--outdir', gcs.gs('proj-gen')]) == 0
  assert gcs.objects('proj-gen') == ['proj-gen/proj00.png']
