"""Rematerialization (`config.remat='blocks'`) changes what the backward passes keep, not what
they compute: the phases' losses, gradients and new states equal those without it."""

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
], ids=['skip-resnet', 'resnet-skip'])
def test_remat_blocks_gives_the_same_losses_and_gradients(config_keys):
  assert REMAT_MODES == ('none', 'blocks')
  plain, remat = run_phases('none', config_keys), run_phases('blocks', config_keys)
  for name in PHASES:
    flat_plain = jax.tree_util.tree_leaves_with_path(plain[name])
    flat_remat = jax.tree.leaves(remat[name])
    assert len(flat_plain) == len(flat_remat)
    for (path, a), b in zip(flat_plain, flat_remat):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6,
                                 err_msg=f'{name} {jax.tree_util.keystr(path)}')


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
