"""Networks as JSON-able data: `{'class': 'Generator', **constructor fields}` and back.

Checkpoints store this next to the variables, so any tool can rebuild the network that made them.
"""

import dataclasses
from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.networks.discriminator import Discriminator
from sg2jax.networks.generator import Generator
from sg2jax.networks.progressive import ProgressiveDiscriminator, ProgressiveGenerator
from sg2jax.networks.stylegan1 import BasicDiscriminator, StyleGenerator

NETWORK_CLASSES = {cls.__name__: cls for cls in (
    Generator, Discriminator, StyleGenerator, BasicDiscriminator, ProgressiveGenerator,
    ProgressiveDiscriminator)}
GENERATOR_CLASSES = (Generator, StyleGenerator, ProgressiveGenerator)


def is_generator(network: nn.Module) -> bool:
  return isinstance(network, GENERATOR_CLASSES)


class NetworkWeights(NamedTuple):
  """A network as data: its config (`network_config`) and its variables tree."""
  config: dict[str, Any]
  variables: dict


def network_config(network: nn.Module) -> dict[str, Any]:
  """The constructor fields of `network` (a Generator or Discriminator) as a JSON-able dict."""
  config = {'class': type(network).__name__}
  for field in dataclasses.fields(network):
    if field.name in ('parent', 'name'):
      continue
    value = getattr(network, field.name)
    config[field.name] = list(value) if isinstance(value, tuple) else value
  return config


def build_network(config: dict[str, Any]) -> nn.Module:
  """Inverse of `network_config`; unknown classes or fields are an error that names them."""
  config = dict(config)
  name = config.pop('class', None)
  if name not in NETWORK_CLASSES:
    raise ValueError(f'unknown network class {name!r}; expected one of {sorted(NETWORK_CLASSES)}')
  cls = NETWORK_CLASSES[name]
  known = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
  unknown = sorted(set(config) - known)
  if unknown:
    raise ValueError(f'{name} has no option(s) {", ".join(unknown)}')
  for key in ('resample_filter', 'blur_filter'):
    if key in config:
      config[key] = tuple(config[key])
  return cls(**config)


def example_inputs(network: nn.Module, batch_size: int = 1) -> tuple:
  """Zero inputs of the right shapes for `init` / `eval_shape`."""
  c = jnp.zeros((batch_size, network.c_dim)) if network.c_dim > 0 else None
  if is_generator(network):
    return (jnp.zeros((batch_size, network.z_dim)), c)
  r = network.img_resolution
  return (jnp.zeros((batch_size, r, r, network.img_channels)), c)


def init_variables(network: nn.Module, key: jax.Array) -> dict:
  """Freshly initialized variables (official initialization, REFERENCE.md §1.10)."""
  kwargs = {'noise_mode': 'const'} if is_generator(network) else {}
  return dict(network.init({'params': key}, *example_inputs(network), **kwargs))


def abstract_variables(network: nn.Module) -> dict:
  """`jax.ShapeDtypeStruct` tree of the variables, computed without allocating them."""
  return jax.eval_shape(lambda key: init_variables(network, key), jax.random.key(0))


def random_variables(network: nn.Module, seed: int = 0) -> dict:
  """Variables in the network's tree with N(0, 1) values (style affine biases 1, as initialized),
  drawn with numpy: weights for tests and benchmarks that need *some* values, without compiling
  the network's initializer (its threefry draws dominate compile time on CPU)."""
  rng = np.random.default_rng(seed)

  def leaf(path, x):
    if path[-1].key == 'bias' and path[-2].key == 'affine':
      return np.ones(x.shape, np.float32)
    return rng.normal(size=x.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, abstract_variables(network))


def count_params(variables: dict, collection: str = 'params') -> int:
  """Number of scalars in one collection (trainable parameters by default)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables.get(collection, {}))))


def flatten_variables(variables: dict) -> dict[str, Any]:
  """`{'params/mapping/fc0/weight': leaf, ...}`: one slash-joined path per leaf."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    flat['/'.join(str(getattr(k, 'key', k)) for k in path)] = leaf
  return flat


def check_variables(network: nn.Module, variables: dict, source: str,
                    expected: Optional[dict] = None) -> None:
  """Raises one clear error if `variables` misses leaves, has unknown ones, or wrong shapes."""
  expected = flatten_variables(expected if expected is not None else abstract_variables(network))
  got = flatten_variables(variables)
  missing = sorted(set(expected) - set(got))
  unknown = sorted(set(got) - set(expected))
  wrong = sorted(f'{k} {tuple(got[k].shape)} (expected {tuple(expected[k].shape)})'
                 for k in set(got) & set(expected)
                 if tuple(got[k].shape) != tuple(expected[k].shape))
  problems = []
  if missing:
    problems.append(f'missing {", ".join(missing)}')
  if unknown:
    problems.append(f'unknown {", ".join(unknown)}')
  if wrong:
    problems.append(f'wrong shape {", ".join(wrong)}')
  if problems:
    raise ValueError(f'{source} does not fit {type(network).__name__}'
                     f'(img_resolution={network.img_resolution}, ...): ' + '; '.join(problems))
