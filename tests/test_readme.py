"""The README's commands run as written, at tiny size.

Every command of the README's ```bash blocks (and its one ```python block) is either executed
here or listed in `NOT_RUN` with the reason. Executed commands get three kinds of change, all
listed in `RULES`: files that cannot exist here are replaced by tests/data's stand-ins (the tiny
official pickles for NVIDIA's releases), paths under /tmp and runs/ move into a temporary
folder, and options that only make them small are appended (argparse and config flags: the last
value wins), never removed. They run in README order in one folder, so a command that uses an
earlier one's output (project -> generate --projected-w, fine-tune -> eval -> export) tests that
the README's sequence works.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from goldens import DATA

README = Path(__file__).parents[1] / 'README.md'

# The tiny_experiment networks and length (tests/tiny_experiment.py), as config flags, so the
# README's demo compiles the programs the rest of the suite has cached.
TINY_TRAINING = (
    '--config.resolution=8', '--config.data.num_images=64', '--config.batch_size=8',
    '--config.batch_gpu=4', '--config.G.channel_base=64', '--config.G.channel_max=16',
    '--config.D.channel_base=64', '--config.D.channel_max=16', '--config.G.z_dim=16',
    '--config.G.w_dim=16', '--config.total_kimg=0.04', '--config.kimg_per_tick=0.016',
    '--config.snapshot_ticks=1', '--config.image_snapshot_ticks=1', '--config.grid_size=4',
    '--config.g_reg_interval=2', '--config.d_reg_interval=4')

NOT_RUN = {
    r'^pip install': 'the install; .ci/run does it',
    r'^pytest$': 'this test suite',
    r'^python -m sg2jax\.explore': 'a server that runs until stopped (tests/test_explore.py and '
                                   'tests/test_explore_browser.py run it)',
    r'^git clone|^python3 -m venv': "installs the official code for benchmarks (not sg2jax's)",
    r'^python benchmarks/': 'a benchmark (hours, or needs the official code); its output is in '
                            'the README',
    r'--source car_lmdb|lsun_car': 'needs the LSUN Car LMDB (tests/test_data.py writes and reads '
                                   'LMDBs and the center-crop-wide letterbox)',
    r'--workdir runs/ffhq --inception|--inception pt_inception': 'needs the Inception/VGG16 '
        'weights files, which cannot be downloaded here (tests/test_eval_cli.py runs these '
        'metrics with weights files the tests write)',
    r'^python -m sg2jax\.aot --topology .* --config experiments/ffhq\.py': 'config F compiled '
        'for a TPU takes minutes to tens of minutes per phase here (tests/test_aot.py runs '
        'sg2jax.aot on tiny configs for v5e-1, v5e-8 and v4-8)',
    r'gs://my-bucket': 'needs a real bucket and TPU slice (tests/test_gcs.py runs the same '
                       'tools on gs:// paths against a Cloud Storage emulator)',
}

# (pattern, replacements, appended options) for the commands that run; first match wins.
RULES = [
    (r'^python -m sg2jax\.main --config experiments/demo\.py', {'/tmp/': 'tmp/'}, TINY_TRAINING),
    (r'^python -m sg2jax\.dataset_tool --source my_images/',
     {'--resolution 256': '--resolution 32'}, ()),
    (r'^python -m sg2jax\.main --config experiments/finetune\.py',
     {'ffhq-res256-mirror-paper256-noaug.pkl': str(DATA / 'ada_snapshot_tiny.pkl')},
     ('--config.batch_size=8', '--config.batch_gpu=4', '--config.total_kimg=0.016',
      '--config.kimg_per_tick=0.016', '--config.grid_size=4')),
    (r'^python -m sg2jax\.eval --metric fd_vgg2k', {}, ('--num-samples', '16')),
    # The fine-tuned 32x32 run of the README's fine-tuning section: ppl_w's face crop of the
    # 8x8 demo would be smaller than LPIPS takes.
    (r'^python -m sg2jax\.eval --metric ppl_w', {'runs/ffhq': 'runs/mine'},
     ('--num-samples', '8')),
    (r'^python -m sg2jax\.project', {'/tmp/': 'tmp/'},
     ('--num-steps', '2', '--video-every', '1')),
    (r'^python -m sg2jax\.generate .*--interpolate', {'/tmp/': 'tmp/'}, ('--frames', '3')),
    (r'^python -m sg2jax\.(generate|convert|export)',
     {'/tmp/': 'tmp/', 'stylegan2-ffhq-config-f.pkl': str(DATA / 'tf_snapshot_tiny.pkl'),
      'network-snapshot-025000.pkl': str(DATA / 'ada_snapshot_tiny.pkl')}, ()),
    (r'^python -c ', {}, ()),
    (r'^PYTHON_BLOCK$', {"'stylegan2-ffhq-config-f.pkl'": repr(str(DATA / 'tf_snapshot_tiny.pkl'))},
     ()),
]


def readme_commands() -> list[str]:
  """The README's bash commands (continuation lines joined, comments dropped), in order, with
  its python block as the pseudo-command 'PYTHON_BLOCK'."""
  text = README.read_text()
  commands = []
  for kind, body in re.findall(r'```(bash|python)\n(.*?)```', text, re.S):
    if kind == 'python':
      commands.append('PYTHON_BLOCK')
      continue
    for line in re.sub(r'\\\n\s*', ' ', body).splitlines():
      line = re.sub(r'\s+#.*$', '', line).strip()
      if line and not line.startswith('#'):
        commands.append(line)
  return commands


def python_block() -> str:
  blocks = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)
  assert len(blocks) == 1
  return blocks[0]


def plan(command: str):
  """('skip', reason) or ('run', rule index, replacements, appended options)."""
  for pattern, reason in NOT_RUN.items():
    if re.search(pattern, command):
      return ('skip', reason)
  for index, (pattern, replacements, extra) in enumerate(RULES):
    if re.search(pattern, command):
      return ('run', index, replacements, extra)
  return None


def test_every_readme_command_is_run_or_has_a_reason():
  """A new README command must be added to RULES (runs) or NOT_RUN (with why); a rule no
  command uses anymore is stale."""
  commands = readme_commands()
  assert len(commands) >= 20
  unplanned = [c for c in commands if plan(c) is None]
  assert not unplanned, f'README commands neither run nor excused: {unplanned}'
  used = {plan(c)[1] for c in commands if plan(c)[0] == 'run'}
  assert used == set(range(len(RULES))), f'unused RULES: {set(range(len(RULES))) - used}'
  skipped = {p for p in NOT_RUN if any(re.search(p, c) for c in commands)}
  assert skipped == set(NOT_RUN), f'unused NOT_RUN: {set(NOT_RUN) - skipped}'


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path):
  """Each runnable command in README order, in one folder; every one must succeed. (~6 minutes
  on 2 cores.)"""
  (tmp_path / 'tmp').mkdir()
  images = tmp_path / 'my_images'
  images.mkdir()
  from sg2jax.data.sources import ShapesSource
  from sg2jax.images import save_image
  shapes = ShapesSource(16, 32, seed=4)
  for i in range(16):
    save_image(images / f'{i:02d}.png', shapes[i]['image'])
  ran, replaced = [], set()
  for command in readme_commands():
    step = plan(command)
    if step[0] == 'skip':
      continue
    _, _, replacements, extra = step
    text = python_block() if command == 'PYTHON_BLOCK' else command
    for old, new in replacements.items():
      if old in text:
        replaced.add(old)
        text = text.replace(old, new)
    if command == 'PYTHON_BLOCK':
      argv = [sys.executable, '-c', text]
    else:
      words = shlex.split(text)
      assert words[0] == 'python'
      argv = [sys.executable, *words[1:], *extra]
    out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f'{command}\n{out.stderr[-3000:]}'
    ran.append(command)
  assert len(ran) >= 15
  stale = {old for _, replacements, _ in RULES for old in replacements} - replaced
  assert not stale, f'replacements no README command needs anymore: {stale}'
  assert (tmp_path / 'render').is_dir() and (tmp_path / 'demo.pkl').is_file()
  assert (tmp_path / 'mine.pkl').is_file() and (tmp_path / 'ffhq-f').is_dir()
