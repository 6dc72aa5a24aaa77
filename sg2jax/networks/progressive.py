"""Progressive-growing StyleGAN2 networks of configs B-D (TF `G_synthesis_stylegan_revised` with
`G_main`, and `D_stylegan`; SPEC.md §1.14).

The layers are StyleGAN2's (modulated convs with demodulation, noise strength, FIR up/down
convs); the architecture is `orig` plus a ToRGB / FromRGB at every level. `lod` (traced) and
`resolution` (static, `R / 2^floor(lod)`) select the level as in `stylegan1.py`: the image is
`lerp(rgb_r, up(rgb_{r/2}), lod - floor(lod))` at the working resolution r, nearest-upsampled to R.

Parameter tree: as the StyleGAN2 networks (`mapping/fc*`, `synthesis/b*/conv0|conv1`), with
`synthesis/b{r}/torgb` for TF `ToRGB_lod{l}` (r = R / 2^l) at every level, and D
`b{r}/fromrgb` (`FromRGB_lod{l}`), `b{r}/conv0|conv1`, `b4/fromrgb|conv|fc|out`.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sg2jax.networks.generator import DTYPES, GeneratorInterface
from sg2jax.networks.layers import (EqualizedConv, EqualizedDense, channels_at, check_resolution,
                                    growth_level)
from sg2jax.networks.mapping import MappingNetwork
from sg2jax.networks.stylegan1 import grow_discriminator, grow_image
from sg2jax.networks.synthesis import NOISE_MODES, SynthesisLayer, ToRGB, check_choice
from sg2jax.ops.mbstd import minibatch_stddev


class RevisedBlock(nn.Module):
  """One level of the revised synthesis: (const | conv0 up=2) -> conv1, and its ToRGB."""
  in_channels: int  # 0 for 4x4
  out_channels: int
  resolution: int
  img_channels: int
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  conv_clamp: Optional[float] = None
  use_noise: bool = True
  fused_modconv: bool = True
  dtype: str = 'float32'

  def setup(self):
    layer = lambda up=1: SynthesisLayer(
        self.out_channels, self.resolution, up=up, use_noise=self.use_noise,
        resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
        fused_modconv=self.fused_modconv, dtype=self.dtype)
    if self.in_channels == 0:
      self.const = self.param('const', nn.initializers.normal(1.0),
                              (self.resolution, self.resolution, self.out_channels))
    else:
      self.conv0 = layer(up=2)
    self.conv1 = layer()
    self.torgb = ToRGB(self.img_channels, conv_clamp=self.conv_clamp,
                       fused_modconv=self.fused_modconv, dtype=self.dtype)

  def __call__(self, x, ws, noise_mode, noise):
    if self.in_channels == 0:
      x = jnp.broadcast_to(self.const, (ws.shape[0],) + self.const.shape)
      return self.conv1(x, ws[:, 0], noise_mode, noise[0])
    x = self.conv0(x, ws[:, 0], noise_mode, noise[0])
    return self.conv1(x, ws[:, 1], noise_mode, noise[1])

  def to_rgb(self, x, w):
    return self.torgb(x, w)


class RevisedSynthesis(nn.Module):
  """ws `[N, num_ws, w_dim]` -> `[N, R, R, C]` with per-level ToRGB and the lod fade."""
  w_dim: int
  img_resolution: int
  img_channels: int = 3
  channel_base: int = 16384
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  use_noise: bool = True
  fused_modconv: bool = True
  dtype: str = 'float32'

  @property
  def num_ws(self) -> int:
    return 2 * check_resolution(self.img_resolution) - 2

  @property
  def num_layers(self) -> int:
    return self.num_ws - 1

  @nn.compact
  def __call__(self, ws, noise_mode='random', noise=None, lod=0.0, resolution=None):
    check_choice(noise_mode, NOISE_MODES, 'noise_mode')
    if noise is not None and len(noise) != self.num_layers:
      raise ValueError(f'noise must hold {self.num_layers} maps (one per layer), got {len(noise)}')
    noise = [None] * self.num_layers if noise is None else list(noise)
    level = growth_level(self.img_resolution, resolution)
    top = self.img_resolution >> level
    ws = ws.astype(jnp.float32)
    channels = lambda r: channels_at(r, self.channel_base, self.channel_max)
    blocks = {2 ** k: RevisedBlock(
        0 if k == 2 else channels(2 ** (k - 1)), channels(2 ** k), 2 ** k, self.img_channels,
        self.resample_filter, self.conv_clamp, self.use_noise, self.fused_modconv, self.dtype,
        name=f'b{2 ** k}') for k in range(2, check_resolution(self.img_resolution) + 1)}
    features = {}
    x = None
    for r, block in blocks.items():
      if r > top and not self.is_initializing():
        break
      k = r.bit_length() - 1
      first_layer = 0 if r == 4 else 2 * k - 5  # layer index = ws index of its conv
      count = 1 if r == 4 else 2
      x = block(x, ws[:, first_layer:first_layer + count], noise_mode,
                noise[first_layer:first_layer + count])
      features[r] = x
    # ToRGB at res 2^k reads ws[2k - 3] (shared with the next level's conv0).
    to_rgb = lambda r: blocks[r].to_rgb(features[r], ws[:, 2 * (r.bit_length() - 1) - 3])
    return grow_image(to_rgb, list(blocks), lod, level, self.img_resolution,
                      self.is_initializing())


class ProgressiveGenerator(GeneratorInterface):
  """G_main with the revised synthesis (configs B-D): the StyleGAN2 mapping, progressive growing."""
  z_dim: int = 512
  c_dim: int = 0
  w_dim: int = 512
  img_resolution: int = 1024
  img_channels: int = 3
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  embed_features: Optional[int] = None
  layer_features: Optional[int] = None
  w_avg_beta: float = 0.995
  channel_base: int = 16384
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  use_noise: bool = True
  fused_modconv: bool = True
  dtype: str = 'float32'

  progressive = True

  def __post_init__(self):
    check_resolution(self.img_resolution)
    check_choice(self.dtype, DTYPES, 'dtype')
    super().__post_init__()

  def setup(self):
    self.mapping = MappingNetwork(
        z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
        num_layers=self.mapping_layers, embed_features=self.embed_features,
        layer_features=self.layer_features, lr_multiplier=self.mapping_lr_multiplier,
        w_avg_beta=self.w_avg_beta)
    self.synthesis = RevisedSynthesis(
        self.w_dim, self.img_resolution, self.img_channels, self.channel_base, self.channel_max,
        self.conv_clamp, self.resample_filter, self.use_noise, self.fused_modconv, self.dtype)


class GrowingDBlock(nn.Module):
  """D_stylegan at one resolution: its FromRGB, conv 3x3, conv 3x3 down=2 (FIR + stride 2)."""
  tmp_channels: int
  out_channels: int
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  conv_clamp: Optional[float] = None
  dtype: str = 'float32'

  def setup(self):
    conv = lambda features, kernel, **kw: EqualizedConv(
        features, kernel, activation='lrelu', resample_filter=self.resample_filter,
        conv_clamp=self.conv_clamp, dtype=self.dtype, **kw)
    self.fromrgb = conv(self.tmp_channels, 1)
    self.conv0 = conv(self.tmp_channels, 3)
    self.conv1 = conv(self.out_channels, 3, down=2)

  def from_rgb(self, img):
    return self.fromrgb(img)

  def __call__(self, x):
    return self.conv1(self.conv0(x))


class GrowingDHead(nn.Module):
  """D_stylegan at 4x4: FromRGB_lod(K-2), minibatch stddev, conv, dense, output (float32)."""
  channels: int
  fc_channels: int  # TF nf(0); equals `channels` in every official config
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  conv_clamp: Optional[float] = None

  def setup(self):
    self.fromrgb = EqualizedConv(self.channels, 1, activation='lrelu', conv_clamp=self.conv_clamp)
    self.conv = EqualizedConv(self.channels, 3, activation='lrelu', conv_clamp=self.conv_clamp)
    self.fc = EqualizedDense(self.fc_channels, activation='lrelu')
    self.out = EqualizedDense(1)

  def from_rgb(self, img):
    return self.fromrgb(img)

  def __call__(self, x, mbstd_shard_size=None):
    x = x.astype(jnp.float32)
    if self.mbstd_num_channels > 0:
      x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels, mbstd_shard_size)
    x = self.conv(x)
    return self.out(self.fc(x.reshape(x.shape[0], -1)))  # NHWC flatten; converter permutes


class ProgressiveDiscriminator(nn.Module):
  """D_stylegan (configs B-D): the `orig` StyleGAN2 D with a FromRGB at every level."""
  c_dim: int = 0
  img_resolution: int = 1024
  img_channels: int = 3
  channel_base: int = 16384
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  dtype: str = 'float32'

  progressive = True

  def __post_init__(self):
    check_resolution(self.img_resolution)
    check_choice(self.dtype, DTYPES, 'dtype')
    if self.c_dim:
      raise ValueError('conditional progressive networks (configs B-D) are not supported')
    super().__post_init__()

  @nn.compact
  def __call__(self, img, c=None, mbstd_shard_size=None, lod=0.0, resolution=None):
    r_max = self.img_resolution
    if img.ndim != 4 or img.shape[1:] != (r_max, r_max, self.img_channels):
      raise ValueError(f'discriminator expects images [N, {r_max}, {r_max}, '
                       f'{self.img_channels}] (NHWC), got {img.shape}')
    channels = lambda r: channels_at(r, self.channel_base, self.channel_max)
    blocks = {2 ** k: GrowingDBlock(channels(2 ** k), channels(2 ** (k - 1)),
                                    self.resample_filter, self.conv_clamp, self.dtype,
                                    name=f'b{2 ** k}')
              for k in range(check_resolution(r_max), 2, -1)}
    head = GrowingDHead(channels(4), channels(2), self.mbstd_group_size, self.mbstd_num_channels,
                        self.conv_clamp, name='b4')
    level = growth_level(r_max, resolution)
    return grow_discriminator(blocks, head, img.astype(jnp.float32), lod, level, r_max,
                              mbstd_shard_size, self.is_initializing())
