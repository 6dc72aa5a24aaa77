"""Trainable parameter counts equal the official ones (param_counts.json, counted by ADA)."""

import json

import jax
import numpy as np
import pytest

from goldens import DATA
from sg2jax.formats.official import ada_discriminator_config, ada_generator_config
from sg2jax.networks.weights import abstract_variables, build_network, count_params

COUNTS = json.loads((DATA / 'param_counts.json').read_text())['configs']


def size(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize('name', sorted(COUNTS))
def test_parameter_counts(name):
  ref = COUNTS[name]
  g = build_network(ada_generator_config(ref['G_kwargs']))
  d = build_network(ada_discriminator_config(ref['D_kwargs']))
  gv, dv = abstract_variables(g), abstract_variables(d)
  assert count_params(gv) == ref['G']
  assert count_params(dv) == ref['D']
  assert size(gv['params']['mapping']) == ref['G_mapping']
  assert size(gv['params']['synthesis']) == ref['G_synthesis']
  assert g.num_ws == ref['G_num_ws']
  for block, count in ref['G_params_by_block'].items():
    assert size(gv['params']['synthesis'][block]) == count, block
  for block, count in ref['D_params_by_block'].items():
    assert size(dv['params'][block]) == count, block


def test_readme_states_the_counts():
  readme = (DATA.parent.parent / 'README.md').read_text()
  for ref in COUNTS.values():
    for net in ('G', 'D'):
      assert f'{ref[net]:,}' in readme, f'README lacks the {net} count {ref[net]:,}'
