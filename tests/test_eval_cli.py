"""`python -m sg2jax.eval` end to end, as users run it, on a tiny training workdir.

The workdir holds the 32x32 snapshot of tests/data/ada_snapshot_tiny.pkl as a training checkpoint
(step 1000, 16 kimg) and a config.json naming a folder of 10 images written here, with mirroring
on. The FID Inception weights are random, written in the real format (pytorch-fid's legacy
torch.save file, every tensor the loader expects). The CLI's results are checked against the
formulas applied to features computed here directly: G_ema with the documented keys, the
official uint8 conversion, the Inception network without jit sharding. Linear separability runs
on the snapshot with 40 tiny attribute-classifier pickles written here, against the numpy TF
D_basic of test_linear_separability.py.
"""

import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from eval_workdir import make_eval_workdir
from goldens import DATA
from sg2jax.data.sources import ShapesSource
from sg2jax.feature_nets.attribute_classifier import CLASSIFIER_FILES
from sg2jax.feature_nets.inception import inception_state_dict_shapes, load_inception_weights
from sg2jax.formats.official import load_official_pickle
from sg2jax.images import to_uint8
from sg2jax.metrics import fid, inception_score, kid
from sg2jax.metrics import linear_separability as ls
from sg2jax.metrics.context import MIRROR_SEED, inception_detector
from sg2jax.metrics.registry import known_metrics
from sg2jax.networks.weights import build_network
from test_feature_nets import write_torch_file
from test_linear_separability import KWARGS, classifier_tf_vars, np_d_basic, write_classifier

NUM_IMAGES = 10


def run_eval(*args: str) -> subprocess.CompletedProcess:
  """The CLI in a fresh process with the shared compilation cache of conftest, 2 host devices
  (one per core: the batch is still sharded) and XLA's default optimization level (the
  Inception network runs ~2x faster than with conftest's 4 devices at level 0)."""
  flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
           if 'optimization_level' not in f and 'device_count' not in f]
  env = {**os.environ, 'XLA_FLAGS': ' '.join(flags + ['--xla_force_host_platform_device_count=2'])}
  return subprocess.run([sys.executable, '-m', 'sg2jax.eval', *args], capture_output=True,
                        text=True, timeout=600, env=env)


def read_results(workdir: Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def inception_pth(tmp_path_factory) -> Path:
  """Random FID Inception weights in pytorch-fid's file format: He-normal convolutions, BatchNorm
  (weight 1, small bias, mean 0, var 1) with `num_batches_tracked`, a small fc."""
  rng = np.random.default_rng(0)
  state = OrderedDict()
  for name, shape in inception_state_dict_shapes().items():
    leaf = name.rsplit('.', 1)[1]
    if name.endswith('conv.weight'):
      value = rng.normal(size=shape) * math.sqrt(2.0 / math.prod(shape[1:]))
    elif leaf in ('weight', 'running_var'):
      value = np.ones(shape) if name != 'fc.weight' else rng.normal(size=shape) * 0.5
    else:
      value = rng.normal(size=shape) * 0.1 if leaf == 'bias' else np.zeros(shape)
    state[name] = value.astype(np.float32)
    if name.endswith('bn.running_var'):
      state[name.replace('running_var', 'num_batches_tracked')] = np.array(0, np.int64)
  path = tmp_path_factory.mktemp('weights') / 'pt_inception-random.pth'
  write_torch_file(path, state, legacy=True)
  return path


@pytest.fixture(scope='module')
def workdir(tmp_path_factory) -> Path:
  """A training workdir: the snapshot as checkpoint step 1000 and a config naming the images."""
  shapes = ShapesSource(NUM_IMAGES, 32, seed=7)
  images = np.stack([shapes[i]['image'] for i in range(NUM_IMAGES)])
  return make_eval_workdir(tmp_path_factory.mktemp('run'), images, step=1000, kimg=16.0)


@pytest.mark.slow  # the README's ppl_w command runs in test_readme.py
def test_ppl_w_on_a_workdir(workdir):
  """The headline command (with fewer samples): network, kimg and step come from the workdir."""
  out = run_eval('--metric', 'ppl_w', '--workdir', str(workdir), '--num-samples', '8',
                 '--batch-size', '4')
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith('ppl_w ')
  record = [r for r in read_results(workdir) if r['metric'] == 'ppl_w'][-1]
  assert {k: record[k] for k in ('samples', 'network', 'kimg', 'step', 'repeats', 'std')} == {
      'samples': 8, 'network': str(workdir), 'kimg': 16.0, 'step': 1000, 'repeats': 1, 'std': 0}
  assert math.isfinite(record['value']) and record['value'] > 0 and record['seconds'] > 0
  assert list(workdir.glob('events.out.tfevents.*'))  # TensorBoard


def direct_features(workdir: Path, inception_pth: Path, num_real: int, num_gen: int, seed: int,
                    batch_size: int):
  """Inception pool3 / logits of the reals (first `num_real`, unflipped and flipped as the mirror
  draw says) and of `num_gen` generated images, without MetricContext."""
  detector = inception_detector(load_inception_weights(inception_pth))
  forward = jax.jit(detector.forward)
  folder = json.loads((workdir / 'config.json').read_text())['data']['path']
  reals = np.stack([np.asarray(Image.open(Path(folder) / f'{i:05d}.png'))
                    for i in range(num_real)])
  flips = np.random.default_rng(MIRROR_SEED).random(num_real) < 0.5
  mirrored = np.where(flips[:, None, None, None], reals[:, :, ::-1], reals)
  net = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')['G_ema']
  g = build_network(net.config)
  synthesize = jax.jit(lambda z, key: g.apply(net.variables, z, noise_mode='random',
                                              rngs={'noise': key}))
  generated = []
  for b in range(math.ceil(num_gen / batch_size)):
    key_z, _, key_noise = jax.random.split(jax.random.fold_in(jax.random.key(seed), b), 3)
    generated.append(to_uint8(synthesize(jax.random.normal(key_z, (batch_size, g.z_dim)),
                                         key_noise)))
  generated = np.concatenate(generated)[:num_gen]
  run = lambda x: jax.device_get(forward(detector.params, x.astype(np.float32)))
  return run(reals), run(mirrored), run(generated)


@pytest.mark.slow  # the longest default test; the Inception network itself is tested in test_feature_nets.py
def test_inception_metrics_on_a_workdir(workdir, inception_pth):
  """IS and KID (no 2048x2048 sqrtm: fast) against the formulas on direct features, and the
  cached real features against the direct ones (test_metrics.py shows that a cached entry is
  read without decoding an image)."""
  out = run_eval('--metric', 'kid50k_full,is50k', '--workdir', str(workdir), '--inception',
                 str(inception_pth), '--num-samples', '20', '--batch-size', '10')
  assert out.returncode == 0, out.stderr
  assert 'reals -> inception' in out.stderr and 'generated -> inception' in out.stderr
  results = {r['metric']: r['value'] for r in read_results(workdir)[-3:]}
  assert list(results) == ['kid50k_full', 'is50k', 'is50k_std']
  real, _, gen = direct_features(workdir, inception_pth, NUM_IMAGES, 20, 0, 10)
  np.testing.assert_allclose(results['kid50k_full'], kid.kernel_inception_distance(
      real['pool3'], gen['pool3'], seed=0), rtol=2e-3)
  mean, std = inception_score.inception_score(gen['logits'])
  np.testing.assert_allclose([results['is50k'], results['is50k_std']], [mean, std], rtol=2e-3)
  assert results['kid50k_full'] > 1e-4 and results['is50k'] > 1.01  # 2 images per split
  cached = list((workdir / 'metric_cache').glob(f'reals-inception-{NUM_IMAGES}-*.npz'))
  assert len(cached) == 1
  with np.load(cached[0]) as stored:
    np.testing.assert_allclose(stored['pool3'], real['pool3'], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_fid_metrics_on_a_workdir(workdir, inception_pth):
  """FID (paper and ADA protocols, the run's mirroring), FID-infinity and IS-infinity. Slow:
  every FID takes a 2048x2048 scipy sqrtm (~40 s on 2 cores; fid_inf needs one per size)."""
  out = run_eval('--metric', 'fid50k_full,fid50k,fid_inf,is_inf', '--workdir', str(workdir),
                 '--inception', str(inception_pth), '--num-samples', str(NUM_IMAGES),
                 '--batch-size', '10')
  assert out.returncode == 0, out.stderr
  results = {r['metric']: r['value'] for r in read_results(workdir)[-4:]}
  assert list(results) == ['fid50k_full', 'fid50k', 'fid_inf', 'is_inf']
  real, mirrored, gen = direct_features(workdir, inception_pth, NUM_IMAGES, NUM_IMAGES, 0, 10)
  np.testing.assert_allclose(results['fid50k_full'],
                             fid.fid_from_features(real['pool3'], gen['pool3'], ddof=0), rtol=2e-3)
  np.testing.assert_allclose(results['fid50k'],
                             fid.fid_from_features(mirrored['pool3'], gen['pool3'], ddof=1),
                             rtol=2e-3)
  assert results['fid50k_full'] > 1e-3 and all(math.isfinite(v) for v in results.values())
  cached = sorted(p.name for p in (workdir / 'metric_cache').glob('*.npz'))
  assert sum('-mirror-' in name for name in cached) == 1  # fid50k: the run mirrored


def test_unknown_metric_is_one_line():
  out = run_eval('--metric', 'fid50k_ful', '--network', str(DATA / 'ada_snapshot_tiny.pkl'))
  assert out.returncode == 1
  known = known_metrics()
  assert out.stderr.strip() == (
      f"error: unknown metric 'fid50k_ful'; known metrics: {', '.join(known)}")
  assert {'fid50k', 'fid50k_full', 'kid50k_full', 'is50k', 'pr50k3', 'pr50k3_full', 'ppl_zfull',
          'ppl_zend', 'ppl_wfull', 'ppl_wend', 'ppl2_wend', 'ppl_w', 'ls', 'fid_inf',
          'is_inf'} <= set(known)


def test_list():
  from sg2jax import eval as eval_cli
  out = subprocess.run([sys.executable, '-m', 'sg2jax.eval', '--list'], capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith('is_inf ')
  with pytest.raises(SystemExit):
    eval_cli.parse_args(['--workdir', 'x'])  # --metric is required


def test_weight_file_errors(workdir, tmp_path):
  from sg2jax import eval as eval_cli
  base = ['--metric', 'fid50k_full', '--workdir', str(workdir), '--num-samples', '4']
  with pytest.raises(FileNotFoundError, match=(
      r"^this metric needs pytorch-fid's FID Inception-v3 weights, https://github.com/mseitzer/"
      r'pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth: '
      r'download it and pass --inception PATH$')):
    eval_cli.main(base)
  with pytest.raises(FileNotFoundError, match=(
      r'nope.pth not found; download https://github.com/mseitzer/pytorch-fid/releases/download/'
      r'fid_weights/pt_inception-2015-12-05-6726825d.pth')):
    eval_cli.main(base + ['--inception', str(tmp_path / 'nope.pth')])
  vgg = tmp_path / 'vgg16.pth'  # another network's state_dict (a few torchvision VGG16 entries)
  write_torch_file(vgg, OrderedDict([('features.0.weight', np.zeros((64, 3, 3, 3), np.float32)),
                                     ('features.0.bias', np.zeros(64, np.float32))]), legacy=False)
  with pytest.raises(ValueError, match=(
      rf"^--inception {vgg}: vgg16.pth does not hold pytorch-fid's FID Inception-v3 weights: "
      r'missing Conv2d_1a_3x3.conv.weight, .* and \d+ more; unknown features.0.weight, '
      r'features.0.bias$')):
    eval_cli.main(base + ['--inception', str(vgg)])


def test_too_small_dataset(workdir, inception_pth):
  from sg2jax import eval as eval_cli
  with pytest.raises(ValueError, match=(
      r'^the dataset holds 10 images, fewer than the 20 real images fid50k needs; pass '
      r'--num-samples 10 or use fid50k_full, which uses every image$')):
    eval_cli.main(['--metric', 'fid50k', '--workdir', str(workdir), '--inception',
                   str(inception_pth), '--num-samples', '20'])
  with pytest.raises(ValueError, match=r'^--batch-size 6 is not a positive multiple of the 4'):
    eval_cli.main(['--metric', 'ppl_w', '--workdir', str(workdir), '--batch-size', '6'])


# ----------------------------------------------------------------------------------------------
# Linear separability.

LS_RES = 8  # the test classifiers' input size

@pytest.fixture
def classifiers(tmp_path, fake_tf_network) -> tuple[Path, list[dict]]:
  """The 40 classifier pickles in the released format, tiny (8x8 input: the 32x32 snapshot's
  images are box-downsampled by 4, as 1024x1024 ones are for the real 256x256 classifiers)."""
  folder = tmp_path / 'classifiers'
  folder.mkdir()
  all_vars = [classifier_tf_vars(seed, res=LS_RES) for seed in range(len(CLASSIFIER_FILES))]
  for name, tf_vars in zip(CLASSIFIER_FILES, all_vars):
    write_classifier(folder / name, fake_tf_network, tf_vars, {**KWARGS, 'resolution': LS_RES})
  return folder, all_vars


def direct_ls(all_vars: list[dict], num: int, seed: int, batch_size: int) -> dict[str, float]:
  """`ls_z`, `ls_w` without MetricContext or the classifier bank: batch b's key
  `fold_in(key(seed), b)` split into (z, labels, noise); z, w (last ws row) and images of G_ema
  without truncation, random noise; 4x4 box means to 8x8; the numpy TF D_basic of every file
  (float64); then the protocol's host side (`attribute_entropies`, tested by hand in
  test_linear_separability.py)."""
  net = load_official_pickle(DATA / 'ada_snapshot_tiny.pkl')['G_ema']
  g = build_network(net.config)

  @jax.jit
  def generate(key):
    key_z, _, key_noise = jax.random.split(key, 3)
    z = jax.random.normal(key_z, (batch_size, g.z_dim))
    ws = g.apply(net.variables, z, method='map')
    images = g.apply(net.variables, ws, noise_mode='random', method='synthesize',
                     rngs={'noise': key_noise})
    return z, ws[:, -1], images

  z, w, logits = [], [], []
  for b in range(math.ceil(num / batch_size)):
    zb, wb, images = jax.device_get(generate(jax.random.fold_in(jax.random.key(seed), b)))
    f = 32 // LS_RES
    images = np.asarray(images, np.float64).reshape(batch_size, LS_RES, f, LS_RES, f, 3)
    images = images.mean((2, 4))  # [B, 8, 8, 3]
    nchw = images.transpose(0, 3, 1, 2)
    logits.append(np.concatenate([np_d_basic(nchw, v, fused=False) for v in all_vars], axis=1))
    z.append(zb)
    w.append(wb)
  z, w, logits = (np.concatenate(x)[:num] for x in (z, w, logits))
  probabilities = ls.attribute_probabilities(logits.astype(np.float32))
  entropies = ls.attribute_entropies({'z': z, 'w': w}, probabilities, num // 2, random_state=seed)
  return {f'ls_{space}': ls.separability_score(h) for space, h in entropies.items()}


@pytest.mark.slow  # its refusal of non-finite outputs stays in test_faults.py
def test_ls_on_a_network_with_classifier_pickles(classifiers, tmp_path):
  """`--metric ls --classifiers DIR` on the tiny snapshot: printed, recorded in metrics.jsonl and
  TensorBoard, and equal to the protocol computed directly. 256 samples keep 128 per attribute in
  32 dimensions: the SVMs do not separate them all, so both scores are well above 1."""
  folder, all_vars = classifiers
  network = tmp_path / 'network.pkl'
  network.write_bytes((DATA / 'ada_snapshot_tiny.pkl').read_bytes())
  out = run_eval('--metric', 'ls', '--network', str(network), '--classifiers', str(folder),
                 '--num-samples', '256', '--batch-size', '32', '--seed', '3')
  assert out.returncode == 0, out.stderr
  printed = {line.split()[0]: float(line.split()[1]) for line in out.stdout.splitlines()}
  assert list(printed) == ['ls_z', 'ls_w']
  records = read_results(tmp_path)
  assert [(r['metric'], r['samples'], r['seed']) for r in records] == [('ls_z', 256, 3),
                                                                        ('ls_w', 256, 3)]
  assert list(tmp_path.glob('events.out.tfevents.*'))  # TensorBoard
  expected = direct_ls(all_vars, 256, 3, 32)
  print(f'recorded {[r["value"] for r in records]}, direct {expected}')
  for record in records:
    assert printed[record['metric']] == pytest.approx(record['value'], rel=1e-5)  # 6 digits
    assert record['value'] == pytest.approx(expected[record['metric']], rel=1e-6)
    assert record['value'] > 1.1  # measured: ls_z 1.97, ls_w 1.26


def test_ls_requirement_errors(classifiers, tmp_path):
  """No folder given, a folder that does not exist, a missing file, too few samples: one line
  each (the CLI's `run` prints them), before anything is generated or recorded."""
  from sg2jax import eval as eval_cli
  folder, _ = classifiers
  base = ['--metric', 'ls', '--network', str(DATA / 'ada_snapshot_tiny.pkl'), '--num-samples', '8',
          '--batch-size', '4', '--outdir', str(tmp_path / 'out'), '--no-progress']
  with pytest.raises(FileNotFoundError, match=(
      r"^ls needs NVIDIA's 40 CelebA-HQ attribute classifiers: download celebahq-classifier-\*.pkl "
      r'from https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/metrics/ into a folder and pass '
      r'--classifiers DIR \(training: config.metrics_classifiers\)$')):
    eval_cli.main(base)
  with pytest.raises(FileNotFoundError, match=(
      r'^attribute classifier directory .*nowhere not found; download the 40 '
      r'celebahq-classifier-\*.pkl files from https://nvlabs-fi-cdn.nvidia.com/stylegan/')):
    eval_cli.main(base + ['--classifiers', str(tmp_path / 'nowhere')])
  (folder / CLASSIFIER_FILES[7]).unlink()
  with pytest.raises(FileNotFoundError, match=(
      r'^1 of 40 attribute classifiers missing in .*classifiers: '
      r'celebahq-classifier-07-bags-under-eyes.pkl; download them from https://')):
    eval_cli.main(base + ['--classifiers', str(folder)])
  with pytest.raises(ValueError, match=r'^ls keeps the most confident half of its samples: it '
                                       r'needs at least 2, got --num-samples 1$'):
    eval_cli.main(base[:4] + ['--classifiers', str(tmp_path / 'nowhere'), '--num-samples', '1'])
  assert not (tmp_path / 'out').exists()  # nothing recorded
