"""Rematerialization (`config.remat='blocks'`, 'blocks_ordered') changes what the backward
passes keep and in what order they run, not what they compute: the phases' losses, gradients
and new states equal those without it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.training_setup import build_phase_bench
from sg2jax.sharding import make_mesh
from sg2jax.train.step import REMAT_MODES
from tiny_experiment import tiny

PHASES = ('g_main', 'g_reg', 'd_main', 'd_reg')


def run_phases(remat: str, config_keys: dict) -> dict:
  """Each phase once from the same state and batch: its metrics and G's and D's new params."""
  bench = build_phase_bench(tiny(remat=remat, **config_keys), 8,
                            mesh=make_mesh(jax.devices()[:1]))
  out = {}
  for name in PHASES:
    state = jax.tree.map(jnp.copy, bench.state)  # the phase donates its state
    fn = bench.train_step.executable(name, state, bench.batch, bench.lod)
    state, metrics = fn(state, bench.batch, bench.lod)
    out[name] = jax.device_get((metrics, state.g['params'], state.d['params']))
  return out


@pytest.mark.parametrize('config_keys', [
    {},  # config F's architectures: G skip, D resnet
    pytest.param({'G.architecture': 'resnet', 'D.architecture': 'skip'},
                 marks=pytest.mark.slow),  # the other architectures' blocks: as long again
    pytest.param({'G.type': 'ProgressiveGenerator', 'D.type': 'ProgressiveDiscriminator'},
                 marks=pytest.mark.slow),  # configs B-D's networks (torgb outside the blocks)
], ids=['skip-resnet', 'resnet-skip', 'progressive'])
def test_remat_blocks_gives_the_same_losses_and_gradients(config_keys):
  assert REMAT_MODES == ('none', 'blocks', 'blocks_ordered')
  plain = run_phases('none', config_keys)
  for mode in REMAT_MODES[1:]:
    remat = run_phases(mode, config_keys)
    for name in PHASES:
      flat_plain = jax.tree_util.tree_leaves_with_path(plain[name])
      flat_remat = jax.tree.leaves(remat[name])
      assert len(flat_plain) == len(flat_remat)
      for (path, a), b in zip(flat_plain, flat_remat):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6,
                                   err_msg=f'{mode} {name} {jax.tree_util.keystr(path)}')


@pytest.mark.parametrize('config_keys', [{}, {'G.type': 'ProgressiveGenerator',
                                              'D.type': 'ProgressiveDiscriminator'}],
                         ids=['config-f', 'progressive'])
def test_remat_blocks_recomputes_the_blocks(config_keys):
  """With 'blocks' every synthesis and discriminator block runs under a checkpoint (one `remat`
  region per block in G main's program), and the compiled backward pass runs forward
  convolutions again (more convolutions than without)."""
  found = {}
  for remat in REMAT_MODES:
    bench = build_phase_bench(tiny(remat=remat, **config_keys), 8,
                              mesh=make_mesh(jax.devices()[:1]))
    text = str(jax.make_jaxpr(bench.train_step.phases['g_main'])(bench.state, bench.batch,
                                                                  bench.lod))
    compiled = bench.train_step.executable('g_main', bench.state, bench.batch, bench.lod)
    found[remat] = (text.count('remat2['), compiled.as_text().count(' convolution('))
  # 8x8: G has blocks 4 and 8, D block 8 (D's 4x4 epilogue is not a block).
  assert found['none'][0] == 0 and found['blocks'][0] >= 3, found
  assert found['blocks'][1] > found['none'][1], found


@pytest.mark.parametrize('config_keys', [
    {},
    pytest.param({'G.type': 'ProgressiveGenerator', 'D.type': 'ProgressiveDiscriminator'},
                 marks=pytest.mark.slow),  # configs A-D's synthesis: the same call_block path
], ids=['config-f', 'progressive'])
def test_blocks_ordered_orders_g_mains_synthesis_blocks_only(config_keys):
  """'blocks_ordered' puts one optimization barrier over each synthesis block's gradients in G
  main, and changes no other phase: G reg (the path-length term differentiates a gradient), D
  main and D reg are the programs of 'blocks'."""
  texts = {}
  for remat in ('blocks', 'blocks_ordered'):
    bench = build_phase_bench(tiny(remat=remat, **config_keys), 8,
                              mesh=make_mesh(jax.devices()[:1]))
    texts[remat] = {name: jax.jit(bench.train_step.phases[name]).lower(
        bench.state, bench.batch, bench.lod).as_text() for name in PHASES}
  added = texts['blocks_ordered']['g_main'].count('optimization_barrier') - \
      texts['blocks']['g_main'].count('optimization_barrier')
  assert added == 2, added  # 8x8: G has blocks 4 and 8
  for name in ('g_reg', 'd_main', 'd_reg'):  # D main runs G's forward only: the same program
    assert texts['blocks_ordered'][name] == texts['blocks'][name], name
