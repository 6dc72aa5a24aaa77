"""Discriminator (orig / skip / resnet) with label conditioning (REFERENCE.md §1.9, §1.11)."""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sg2jax.networks.generator import DTYPES
from sg2jax.networks.layers import (EqualizedConv, EqualizedDense, call_block, channels_at,
                                    check_full_resolution, check_images, check_resolution)
from sg2jax.networks.mapping import MappingNetwork
from sg2jax.networks.synthesis import ARCHITECTURES, check_choice
from sg2jax.ops.mbstd import minibatch_stddev
from sg2jax.ops.upfirdn import downsample2d, setup_filter


class DiscriminatorBlock(nn.Module):
  """One resolution: [FromRGB ->] conv0 3x3 -> conv1 3x3 down=2, with the architecture's skips."""
  in_channels: int  # 0 for the first (highest-resolution) block
  tmp_channels: int
  out_channels: int
  img_channels: int
  architecture: str = 'resnet'
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  conv_clamp: Optional[float] = None
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: Optional[jnp.ndarray],
               img: Optional[jnp.ndarray]) -> tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    conv = lambda features, kernel_size, name, **kw: EqualizedConv(
        features, kernel_size, resample_filter=self.resample_filter, dtype=self.dtype, name=name,
        **kw)
    if self.in_channels == 0 or self.architecture == 'skip':
      y = conv(self.tmp_channels, 1, 'fromrgb', activation='lrelu', conv_clamp=self.conv_clamp)(img)
      x = y if x is None else x + y
      img = downsample2d(img, setup_filter(self.resample_filter)) if self.architecture == 'skip' else None
    resnet = self.architecture == 'resnet'
    gain = np.sqrt(0.5) if resnet else 1.0  # resnet: skip and main path each * sqrt(1/2)
    if resnet:
      y = conv(self.out_channels, 1, 'skip', use_bias=False, down=2)(x, gain=gain)
    x = conv(self.tmp_channels, 3, 'conv0', activation='lrelu', conv_clamp=self.conv_clamp)(x)
    x = conv(self.out_channels, 3, 'conv1', activation='lrelu', down=2,
             conv_clamp=self.conv_clamp)(x, gain=gain)
    return (y + x if resnet else x), img


class DiscriminatorEpilogue(nn.Module):
  """4x4: [FromRGB ->] minibatch stddev -> conv 3x3 -> fc -> out (-> label projection). float32."""
  in_channels: int
  cmap_dim: int
  img_channels: int
  has_fromrgb: bool
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x: Optional[jnp.ndarray], img: jnp.ndarray, cmap: Optional[jnp.ndarray],
               batch_gpu: Optional[int] = None) -> jnp.ndarray:
    if self.has_fromrgb:
      y = EqualizedConv(self.in_channels, 1, activation='lrelu', conv_clamp=self.conv_clamp,
                        name='fromrgb')(img)
      x = y if x is None else x + y
    x = x.astype(jnp.float32)
    if self.mbstd_num_channels > 0:
      x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels, batch_gpu)
    x = EqualizedConv(self.in_channels, 3, activation='lrelu', conv_clamp=self.conv_clamp,
                      name='conv')(x)
    # NHWC flatten: (h, w, c) order; the official (c, h, w) order is permuted at conversion.
    x = x.reshape(x.shape[0], -1)  # [N, 4 * 4 * C]
    x = EqualizedDense(self.in_channels, activation='lrelu', name='fc')(x)
    x = EqualizedDense(1 if self.cmap_dim == 0 else self.cmap_dim, name='out')(x)
    if self.cmap_dim > 0:
      x = jnp.sum(x * cmap, axis=1, keepdims=True) * (1 / np.sqrt(self.cmap_dim))
    return x  # [N, 1]


class Discriminator(nn.Module):
  """StyleGAN2 discriminator: image `[N, R, R, C]` in [-1, 1] (+ labels) -> logits `[N, 1]`.

  Parameter paths follow the official names (`b32/fromrgb/weight`, `b4/fc/weight`,
  `mapping/embed/weight`). Conditioning follows ADA: `cmap = mapping(c)` and the score is
  `sum(out * cmap) / sqrt(cmap_dim)`.

  Differs from official: at `img_resolution = 4` (no blocks) the epilogue gets a FromRGB for every
  architecture; ADA supports only `skip` there.
  """
  c_dim: int = 0
  img_resolution: int = 1024
  img_channels: int = 3
  architecture: str = 'resnet'
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  cmap_dim: Optional[int] = None  # None: channels at 4x4
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  dtype: str = 'float32'

  def __post_init__(self):
    check_resolution(self.img_resolution)
    check_choice(self.architecture, ARCHITECTURES, 'architecture')
    check_choice(self.dtype, DTYPES, 'dtype')
    super().__post_init__()

  progressive = False

  @property
  def block_resolutions(self) -> list[int]:
    return [2 ** i for i in range(check_resolution(self.img_resolution), 2, -1)]

  @nn.compact
  def __call__(self, img: jnp.ndarray, c: Optional[jnp.ndarray] = None,
               batch_gpu: Optional[int] = None, lod=0.0,
               resolution: Optional[int] = None, remat: str = 'none') -> jnp.ndarray:
    """Logits `[N, 1]`; `batch_gpu`: minibatch-stddev groups form within consecutive parts of
    this many samples (the per-GPU batch of the official runs), default the whole batch.
    `lod` and `resolution` as the progressive discriminators take them: ignored / None or R.
    `remat`: what the blocks keep for the backward pass (`layers.call_block`; D's blocks are
    not ordered: G main differentiates D with respect to its input only)."""
    del lod
    check_full_resolution(self.img_resolution, resolution)
    r = self.img_resolution
    check_images(img, r, self.img_channels)
    channels = lambda res: channels_at(res, self.channel_base, self.channel_max)
    img = img.astype(jnp.float32)
    x = None
    for res in self.block_resolutions:
      block = DiscriminatorBlock(
          in_channels=channels(res) if res < r else 0, tmp_channels=channels(res),
          out_channels=channels(res // 2), img_channels=self.img_channels,
          architecture=self.architecture, resample_filter=self.resample_filter,
          conv_clamp=self.conv_clamp, dtype=self.dtype, name=f'b{res}')
      x, img = call_block(block, x, img, remat=remat)
    cmap_dim = 0
    cmap = None
    if self.c_dim > 0:
      cmap_dim = channels(4) if self.cmap_dim is None else self.cmap_dim
      if c is None or c.shape[-1] != self.c_dim:
        raise ValueError(f'this discriminator is conditional: pass labels c of shape '
                         f'[N, {self.c_dim}]')
      cmap = MappingNetwork(z_dim=0, c_dim=self.c_dim, w_dim=cmap_dim, num_ws=None,
                            num_layers=self.mapping_layers,
                            lr_multiplier=self.mapping_lr_multiplier, w_avg_beta=None,
                            name='mapping')(None, c)
    return DiscriminatorEpilogue(
        channels(4), cmap_dim=cmap_dim, img_channels=self.img_channels,
        has_fromrgb=self.architecture == 'skip' or r == 4,
        mbstd_group_size=self.mbstd_group_size, mbstd_num_channels=self.mbstd_num_channels,
        conv_clamp=self.conv_clamp, name='b4')(x, img, cmap, batch_gpu)
