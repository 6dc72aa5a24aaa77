"""What every sg2jax command sets before JAX starts: its XLA flags (the user's own win) and the
persistent compilation cache (a second start of the same run compiles nothing)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sg2jax.cli import CPU_XLA_FLAGS, add_xla_flags, compile_cache_dir, default_compile_cache

TESTS = Path(__file__).parent
YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'


def test_add_xla_flags_appends_ours_and_keeps_the_users(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  flags = add_xla_flags().split()
  assert flags == ['--xla_force_host_platform_device_count=2', *CPU_XLA_FLAGS]
  assert add_xla_flags().split() == flags  # idempotent
  monkeypatch.setenv('XLA_FLAGS', f'{YNN_FLAG}=individual_convolution')
  assert add_xla_flags().split() == [f'{YNN_FLAG}=individual_convolution']
  monkeypatch.delenv('XLA_FLAGS')
  assert add_xla_flags().split() == list(CPU_XLA_FLAGS)


def clean_env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_COMPILATION_CACHE_DIR', 'SG2JAX_COMPILE_CACHE')}
  env.update(extra)
  return env


@pytest.mark.parametrize('user_flags,applied', [
    ('', 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'),
    (f'{YNN_FLAG}=individual_convolution', 'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION')])
def test_the_flags_reach_xla(tmp_path, user_flags, applied):
  """XLA's own record of the options it compiled with (`--xla_dump_to`) shows sg2jax's flag, or
  the user's value of it."""
  code = ('from sg2jax.cli import configure_jax\n'
          "configure_jax('highest', 'none')\n"
          'import jax, jax.numpy as jnp\n'
          'jax.jit(lambda x: x * 2)(jnp.ones(3)).block_until_ready()\n')
  env = clean_env(XLA_FLAGS=f'--xla_dump_to={tmp_path / "dump"} {user_flags}'.strip())
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr
  options = [p.read_text() for p in (tmp_path / 'dump').glob('*.debug_options')]
  assert options, 'XLA wrote no debug options'
  assert all(re.search(rf'xla_cpu_experimental_ynn_fusion_type: {applied}\b', text)
             for text in options)


def test_compile_cache_dir(monkeypatch, tmp_path):
  for name in ('SG2JAX_COMPILE_CACHE', 'JAX_COMPILATION_CACHE_DIR'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache_dir('auto') == default_compile_cache() == tmp_path / 'xdg/sg2jax/jax'
  assert compile_cache_dir('none') is None and compile_cache_dir('') is None
  assert compile_cache_dir(str(tmp_path / 'here')) == tmp_path / 'here'
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'jax'))
  assert compile_cache_dir('auto') == tmp_path / 'jax'
  monkeypatch.setenv('SG2JAX_COMPILE_CACHE', 'none')
  assert compile_cache_dir('auto') is None
  monkeypatch.setenv('SG2JAX_COMPILE_CACHE', str(tmp_path / 'env'))
  assert compile_cache_dir('auto') == tmp_path / 'env'
  assert compile_cache_dir(str(tmp_path / 'config')) == tmp_path / 'config'  # the config wins


def test_a_second_start_compiles_nothing(tmp_path):
  """The training loop logs each phase's compilation with its time; a second start of the same
  run loads every phase from the persistent compilation cache."""
  env = clean_env(SG2JAX_COMPILE_CACHE=str(tmp_path / 'cache'),
                  XLA_FLAGS='--xla_backend_optimization_level=0')

  def start(workdir):
    out = subprocess.run(
        [sys.executable, '-m', 'sg2jax.main', '--config', str(TESTS / 'tiny_experiment.py'),
         '--workdir', str(tmp_path / workdir), '--config.total_kimg=0.008'],
        env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr

  phases = ('g_main', 'g_reg', 'd_main', 'd_reg', 'ema')
  first = start('first')
  for phase in phases:
    assert f'compiling {phase} ...' in first
    assert re.search(rf'compiled {phase} in [\d.]+ s', first)
  second = start('second')
  for phase in phases:
    assert re.search(rf'loaded {phase} from the persistent compilation cache in [\d.]+ s', second)
  assert 'compiled ' not in second
