"""Reading the golden files in tests/data (made with the official PyTorch code; see its README).

Tolerance: `assert_matches_golden` requires max |out - ref| <= 1e-4 * min(1, max |ref|):
1e-4 absolute for arrays of unit scale or larger (images, logits, ws, most gradients), and 1e-4
relative to the array's own scale for arrays much smaller than 1 (R1 gradients ~1e-3, D R1
parameter gradients ~1e-4), where an absolute 1e-4 would accept anything. The official code's
own spread from float32 summation order (1 vs 2 threads) is up to 3e-6 on these arrays.
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from sg2jax.formats.official import ada_discriminator_config, ada_generator_config, ada_to_variables
from sg2jax.networks.weights import build_network, flatten_variables

DATA = Path(__file__).parent / 'data'
CASES = json.loads((DATA / 'golden_cases.json').read_text())


def load(name: str) -> dict:
  with np.load(DATA / name) as f:
    return dict(f)


def nhwc(x: np.ndarray) -> jnp.ndarray:
  """Golden NCHW -> sg2jax NHWC."""
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def nchw(x) -> np.ndarray:
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def hwio(w: np.ndarray, flip: bool = False) -> jnp.ndarray:
  """ADA OIHW weight -> HWIO; `flip` for weights ADA applies as a true convolution."""
  w = np.transpose(w, (2, 3, 1, 0))
  return jnp.asarray(w[::-1, ::-1] if flip else w)


def tolerance(ref: np.ndarray) -> float:
  return max(1e-4 * min(1.0, float(np.abs(ref).max(initial=0.0))), 1e-9)


def assert_matches_golden(out, ref, what: str = '') -> None:
  out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
  assert out.shape == ref.shape, f'{what}: shape {out.shape} != golden {ref.shape}'
  err = float(np.abs(out - ref).max(initial=0.0))
  assert err <= tolerance(ref), f'{what}: max abs error {err:.3g} > {tolerance(ref):.3g}'


def assert_trees_match_golden(got: dict, ref: dict, what: str = '') -> None:
  got, ref = flatten_variables(got), flatten_variables(ref)
  assert set(got) == set(ref), f'{what}: leaves differ: {sorted(set(got) ^ set(ref))}'
  for key in ref:
    assert_matches_golden(got[key], ref[key], f'{what} {key}')


def golden_network(config_name: str, params_file: str, **overrides):
  """(module, variables) of a golden network, config from the ADA kwargs it was built with."""
  kwargs = CASES['configs'][config_name]['kwargs']
  is_g = CASES['configs'][config_name]['cls'].endswith('Generator')
  config = (ada_generator_config if is_g else ada_discriminator_config)(kwargs)
  variables = ada_to_variables(load(params_file), 'G' if is_g else 'D', config['resample_filter'])
  return build_network({**config, **overrides}), variables
