"""Equalized-learning-rate layers (thin Flax wrappers over `sg2jax.ops`) and the channel formula."""

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.ops.equalized import equalized_conv2d, equalized_dense
from sg2jax.ops.upfirdn import setup_filter


def call_block(block: nn.Module, *args, remat: str = 'none', static_argnums=(),
               orderable: bool = False):
  """`block(*args)` under the rematerialization mode `remat` (training's `config.remat`).

  'blocks': under `nn.checkpoint`: the backward pass keeps only the block's inputs and computes
  its intermediates again when it takes the block's gradient (one block's worth of them in memory
  at a time). 'blocks_ordered': as 'blocks', and where the caller says the block is `orderable`
  the block's backward pass hands on the gradient with respect to its inputs only together with
  the gradient with respect to its parameters (an optimization barrier over both), so the
  compiler cannot postpone the reductions that give the parameters' gradients, and the maps they
  read, to the end of the backward pass. `orderable` only for blocks whose parameters every phase
  that differentiates the block differentiates: the barrier keeps the parameters' gradient even
  where nothing uses it. `static_argnums` index `args` (strings, None)."""
  if remat == 'none':
    return block(*args)
  static = {i: args[i] for i in static_argnums}

  def run(module, *inputs):
    inputs = iter(inputs)
    return module(*(static[i] if i in static else next(inputs) for i in range(len(args))))

  run = nn.checkpoint(run)
  dynamic = [a for i, a in enumerate(args) if i not in static]
  if remat != 'blocks_ordered' or not orderable:
    return run(block, *dynamic)

  def backward(vjp_fn, cotangent):
    return jax.lax.optimization_barrier(vjp_fn(cotangent))

  ordered = nn.custom_vjp(run, forward_fn=lambda module, *inputs: nn.vjp(run, module, *inputs),
                          backward_fn=backward)
  return ordered(block, *dynamic)


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
  """Feature maps of a block at `resolution`: `min(channel_base // resolution, channel_max)`.

  `channel_base` is ADA's name (= 2 * TF `fmap_base`): 16384 for configs A-E, 32768 for config F
  (REFERENCE.md §1.8).
  """
  return min(channel_base // resolution, channel_max)


def check_resolution(resolution: int, what: str = 'img_resolution') -> int:
  """Returns `log2(resolution)`; raises a one-line error unless it is a power of two >= 4."""
  if (not isinstance(resolution, (int, np.integer)) or resolution < 4
      or resolution & (resolution - 1)):
    nearest = 2 ** max(2, round(math.log2(max(int(resolution), 1))))
    raise ValueError(
        f'{what} {resolution} is not a power of two >= 4; use e.g. {nearest} (LSUN Car 512x384 '
        f'is padded to 512x512: dataset_tool --transform center-crop-wide)')
  return int(resolution).bit_length() - 1


def growth_level(img_resolution: int, resolution: Optional[int]) -> int:
  """`log2(R / r)`: the integer part of lod for the working resolution r (None: R)."""
  if resolution is None:
    return 0
  level = check_resolution(img_resolution) - check_resolution(resolution, 'resolution')
  if level < 0:
    raise ValueError(f'resolution {resolution} exceeds the network resolution {img_resolution}')
  return level


def check_full_resolution(img_resolution: int, resolution: Optional[int]) -> None:
  """Networks that do not grow run at their own resolution only (`lod` is then ignored)."""
  if growth_level(img_resolution, resolution):
    raise ValueError(f'this network does not grow progressively: it runs at {img_resolution}, '
                     f'not {resolution}')


def check_images(img: jnp.ndarray, img_resolution: int, img_channels: int) -> None:
  """Discriminators read NHWC images `[N, R, R, C]` of their own size; others are an error."""
  if img.ndim != 4 or img.shape[1:] != (img_resolution, img_resolution, img_channels):
    raise ValueError(f'discriminator expects images [N, {img_resolution}, {img_resolution}, '
                     f'{img_channels}] (NHWC), got {img.shape}')


class EqualizedDense(nn.Module):
  """Fully connected layer with equalized learning rate: params `weight [in, out]`, `bias [out]`.

  The weight is initialized `N(0, 1/lr^2)` and the bias `bias_init`, both stored raw and scaled
  at run time (`weight * lr / sqrt(in)`, `bias * lr`), as the official layers (REFERENCE.md §1.1).
  """
  features: int
  lr_multiplier: float = 1.0
  bias_init: float = 0.0
  activation: str = 'linear'
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    weight = self.param('weight', nn.initializers.normal(1.0 / self.lr_multiplier),
                        (x.shape[-1], self.features))
    bias = None
    if self.use_bias:
      bias = self.param('bias', nn.initializers.constant(self.bias_init), (self.features,))
    return equalized_dense(x, weight, bias, self.lr_multiplier, self.activation)


class EqualizedConv(nn.Module):
  """Convolution with equalized learning rate and optional FIR up/down-sampling.

  Params `weight [k, k, in, out]` (N(0, 1)) and `bias [out]` (zeros). The call's `gain` scales the
  activation output (and the clamp), as resnet branches need (`sqrt(0.5)`).
  """
  features: int
  kernel_size: int
  activation: str = 'linear'
  use_bias: bool = True
  up: int = 1
  down: int = 1
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  conv_clamp: Optional[float] = None
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jnp.ndarray, gain: float = 1.0) -> jnp.ndarray:
    k = self.kernel_size
    weight = self.param('weight', nn.initializers.normal(1.0), (k, k, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,)) if self.use_bias else None
    f = setup_filter(self.resample_filter) if (self.up > 1 or self.down > 1) else None
    return equalized_conv2d(x.astype(self.dtype), weight, bias, self.activation, up=self.up,
                            down=self.down, resample_filter=f, gain=gain,
                            conv_clamp=self.conv_clamp)
