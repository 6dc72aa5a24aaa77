"""Progressive-growing StyleGAN2 networks of configs B-D (TF `G_synthesis_stylegan_revised` with
`G_main`, and `D_stylegan`; REFERENCE.md §1.13).

The layers are StyleGAN2's (modulated convs with demodulation, noise strength, FIR up/down
convs); the architecture is `orig` plus a ToRGB / FromRGB at every level. `lod` (traced) and
`resolution` (static, `R / 2^floor(lod)`) select the level as in `stylegan1.py`, whose growing
bases these networks fill with StyleGAN2's layers: the image is
`lerp(rgb_r, up(rgb_{r/2}), lod - floor(lod))` at the working resolution r, nearest-upsampled to R.

Parameter tree: as the StyleGAN2 networks (`mapping/fc*`, `synthesis/b*/conv0|conv1`), with
`synthesis/b{r}/torgb` for TF `ToRGB_lod{l}` (r = R / 2^l) at every level, and D
`b{r}/fromrgb` (`FromRGB_lod{l}`), `b{r}/conv0|conv1`, `b4/fromrgb|conv|fc|out`.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sg2jax.networks.generator import DTYPES, GeneratorInterface
from sg2jax.networks.layers import EqualizedConv, EqualizedDense
from sg2jax.networks.mapping import MappingNetwork
from sg2jax.networks.stylegan1 import (DBlockBase, DHeadBase, GrowingDiscriminatorBase,
                                       GrowingSynthesisBase)
from sg2jax.networks.synthesis import SynthesisLayer, ToRGB, check_choice


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

  @property
  def layers(self) -> slice:
    """Its layers' indices in ws and in noise: 0 at 4x4, else `2 log2(r) - 5` and the next."""
    k = self.resolution.bit_length() - 1
    return slice(0, 1) if self.in_channels == 0 else slice(2 * k - 5, 2 * k - 3)

  def __call__(self, x, ws, noise_mode, noise):
    if self.in_channels == 0:
      x = jnp.broadcast_to(self.const, (ws.shape[0],) + self.const.shape)
      return self.conv1(x, ws[:, 0], noise_mode, noise[0])
    x = self.conv0(x, ws[:, 0], noise_mode, noise[0])
    return self.conv1(x, ws[:, 1], noise_mode, noise[1])

  def to_rgb(self, x, ws):
    return self.torgb(x, ws[:, self.layers.stop])  # shared with the next level's conv0


class RevisedSynthesis(GrowingSynthesisBase):
  """ws `[N, num_ws, w_dim]` -> `[N, R, R, C]` with per-level ToRGB and the lod fade."""
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  use_noise: bool = True
  fused_modconv: bool = True
  dtype: str = 'float32'

  @property
  def num_layers(self) -> int:
    return self.num_ws - 1

  def make_block(self, resolution: int, in_channels: int, out_channels: int,
                 name: str) -> RevisedBlock:
    return RevisedBlock(in_channels, out_channels, resolution, self.img_channels,
                        self.resample_filter, self.conv_clamp, self.use_noise, self.fused_modconv,
                        self.dtype, name=name)


class ProgressiveGenerator(GeneratorInterface):
  """G_main with the revised synthesis (configs B-D): the StyleGAN2 mapping, progressive growing."""
  embed_features: Optional[int] = None
  layer_features: Optional[int] = None
  w_avg_beta: float = 0.995
  channel_base: int = 16384
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  use_noise: bool = True
  fused_modconv: bool = True  # as `Generator.fused_modconv`: set with `modconv_form`
  dtype: str = 'float32'

  progressive = True

  def setup(self):
    self.mapping = MappingNetwork(
        z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
        num_layers=self.mapping_layers, embed_features=self.embed_features,
        layer_features=self.layer_features, lr_multiplier=self.mapping_lr_multiplier,
        w_avg_beta=self.w_avg_beta)
    self.synthesis = RevisedSynthesis(
        self.w_dim, self.img_resolution, self.img_channels, self.channel_base, self.channel_max,
        self.conv_clamp, self.resample_filter, self.use_noise, self.fused_modconv, self.dtype)


class GrowingDBlock(DBlockBase):
  """D_stylegan at one resolution: its FromRGB, conv 3x3, conv 3x3 down=2 (FIR + stride 2)."""
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


class GrowingDHead(DHeadBase):
  """D_stylegan at 4x4: FromRGB_lod(K-2), minibatch stddev, conv, dense, output (float32)."""
  conv_clamp: Optional[float] = None

  def setup(self):
    self.fromrgb = EqualizedConv(self.channels, 1, activation='lrelu', conv_clamp=self.conv_clamp)
    self.conv = EqualizedConv(self.channels, 3, activation='lrelu', conv_clamp=self.conv_clamp)
    self.fc = EqualizedDense(self.fc_channels, activation='lrelu')
    self.out = EqualizedDense(1)


class ProgressiveDiscriminator(GrowingDiscriminatorBase):
  """D_stylegan (configs B-D): the `orig` StyleGAN2 D with a FromRGB at every level."""
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  dtype: str = 'float32'

  conditional_error = 'conditional progressive networks (configs B-D) are not supported'

  def __post_init__(self):
    check_choice(self.dtype, DTYPES, 'dtype')
    super().__post_init__()

  def make_block(self, tmp_channels: int, out_channels: int, name: str) -> GrowingDBlock:
    return GrowingDBlock(tmp_channels, out_channels, self.resample_filter, self.conv_clamp,
                         self.dtype, name=name)

  def make_head(self, channels: int, fc_channels: int, name: str) -> GrowingDHead:
    return GrowingDHead(channels, fc_channels, self.mbstd_group_size, self.mbstd_num_channels,
                        self.conv_clamp, name=name)
