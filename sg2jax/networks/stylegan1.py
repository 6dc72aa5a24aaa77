"""The original StyleGAN networks of config A (TF `networks_stylegan.py`: G_style, D_basic;
REFERENCE.md §1.13), with progressive growing built in.

Differences from StyleGAN2, all per the official code:
- equalized layers put the activation's sqrt(2) into the weight scale (`gain`), and lrelu has no
  output gain, so biases are not scaled by sqrt(2);
- a synthesis layer is conv (nearest 2x + conv + [1,2,1] blur when upsampling) -> "epilogue":
  noise with per-channel weights, bias, lrelu, instance norm, AdaIN style `x (1 + y_s) + y_b`;
- the 4x4 block starts from a constant initialized to ones and applies an epilogue to it directly;
- D blocks blur before the 3x3 conv and downsample by 2x2 averaging.

Progressive growing: `lod` (a traced scalar) and `resolution` (static, `R / 2^floor(lod)`) select
the level; with `t = lod - floor(lod)` the image is `lerp(rgb_r, up(rgb_{r/2}), t)` shown at R by
nearest upsampling, and D reads `box_down(img)` at the matching levels (REFERENCE.md §1.13). The
growing synthesis and discriminator, and D's levels, are bases here that the networks of configs
B-D (`progressive.py`) share: each network only chooses its layers.

Parameter tree (TF name -> sg2jax): `G_mapping/Dense{i}` -> `mapping/fc{i}`;
`G_synthesis/4x4/Const` -> `synthesis/b4/const` + epilogue `synthesis/b4/conv0`;
`4x4/Conv` -> `b4/conv1`; `{r}x{r}/Conv0_up`, `Conv1` -> `b{r}/conv0`, `conv1` (each with
`weight`, `bias`, `noise_weight`, `style/{weight,bias}`); `ToRGB_lod{l}` -> `b{R/2^l}/torgb`;
D: `FromRGB_lod{l}` -> `b{R/2^l}/fromrgb`, `{r}x{r}/Conv0`, `Conv1_down` -> `b{r}/conv0`,
`conv1`; `4x4/Conv`, `Dense0`, `Dense1` -> `b4/conv`, `fc`, `out`.
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.networks.generator import GeneratorInterface
from sg2jax.networks.layers import (call_block, channels_at, check_images, check_resolution,
                                    growth_level)
from sg2jax.networks.mapping import Scalar, tracked_w_avg, truncate
from sg2jax.networks.synthesis import layer_noise, noise_input, num_ws_for
from sg2jax.ops.bias_act import bias_act
from sg2jax.ops.conv2d import conv2d
from sg2jax.ops.mbstd import minibatch_stddev
from sg2jax.ops.normalize import normalize_2nd_moment
from sg2jax.ops.pyramid import downsample_box, lerp, upsample_nearest
from sg2jax.ops.upfirdn import filter2d, setup_filter

SQRT2 = float(np.sqrt(2))


def instance_norm(x: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
  """Per sample and channel: subtract the mean over H, W, divide by the RMS (+ eps inside)."""
  x = x - x.mean(axis=(1, 2), keepdims=True)
  return x * jax.lax.rsqrt(jnp.square(x).mean(axis=(1, 2), keepdims=True) + eps)


class WscaleDense(nn.Module):
  """TF `dense` + `apply_bias` with `use_wscale`: `x @ (w * gain * lr / sqrt(in)) + b * lr`, then
  the activation without an output gain."""
  features: int
  gain: float = 1.0
  lr_multiplier: float = 1.0
  activation: str = 'linear'

  @nn.compact
  def __call__(self, x):
    w = self.param('weight', nn.initializers.normal(1.0 / self.lr_multiplier),
                   (x.shape[-1], self.features))
    b = self.param('bias', nn.initializers.zeros, (self.features,))
    scale = self.gain * self.lr_multiplier / np.sqrt(x.shape[-1])
    return bias_act(x @ (w * scale), b * self.lr_multiplier, self.activation, gain=1.0)


class WscaleConv(nn.Module):
  """TF `conv2d` + `apply_bias` with `use_wscale`: SAME conv with `w * gain / sqrt(k*k*in)`,
  + bias, activation without an output gain. `down=True` (D's `Conv1_down`) blurs with
  `blur_filter`, convolves, averages 2x2 blocks, then adds the bias (TF's fused 4x4 stride-2 form
  used from 128 up is the same computation)."""
  features: int
  kernel_size: int
  gain: float = SQRT2
  activation: str = 'lrelu'
  down: bool = False
  blur_filter: Sequence[float] = (1, 2, 1)
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    w = self.param('weight', nn.initializers.normal(1.0), (k, k, x.shape[-1], self.features))
    b = self.param('bias', nn.initializers.zeros, (self.features,))
    x = x.astype(self.dtype)
    if self.down:
      x = filter2d(x, setup_filter(self.blur_filter))
    x = conv2d(x, (w * (self.gain / np.sqrt(k * k * x.shape[-1]))).astype(x.dtype),
               padding=((k // 2, (k - 1) // 2), (k // 2, (k - 1) // 2)))
    if self.down:
      x = downsample_box(x, 2)
    return bias_act(x, b, self.activation, gain=1.0)


class StyleLayer(nn.Module):
  """One G_style layer: [conv] -> noise * per-channel weight -> bias -> lrelu -> instance norm ->
  style modulation. `kernel_size=0` is the epilogue on the 4x4 constant.

  Up layers: nearest 2x upsampling, 3x3 conv, [1,2,1] blur. When `fused` (TF uses it for outputs
  of 128 and up), TF's transposed convolution equals nearest 2x upsampling and a conv with the
  spatially flipped kernel, which is what is computed here (pretrained weights of those layers are
  stored in that convention).
  """
  features: int
  resolution: int
  kernel_size: int = 3
  up: bool = False
  fused: bool = False
  blur_filter: Sequence[float] = (1, 2, 1)
  use_noise: bool = True
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x, w, noise_mode='random', noise=None):
    if self.kernel_size:
      k = self.kernel_size
      weight = self.param('weight', nn.initializers.normal(1.0),
                          (k, k, x.shape[-1], self.features))
      scale = SQRT2 / np.sqrt(k * k * x.shape[-1])
      x = x.astype(self.dtype)
      if self.up:
        x = upsample_nearest(x, 2)
        if self.fused:
          weight = weight[::-1, ::-1]
      x = conv2d(x, (weight * scale).astype(x.dtype), padding=((k // 2, k // 2), (k // 2, k // 2)))
      if self.up:
        x = filter2d(x, setup_filter(self.blur_filter))
    x = x.astype(jnp.float32)
    if self.use_noise:
      n = noise_input(self, x.shape[0], noise_mode, noise)
      noise_weight = self.param('noise_weight', nn.initializers.zeros, (self.features,))
      if n is not None:
        x = x + n * noise_weight
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    x = instance_norm(bias_act(x, bias, 'lrelu', gain=1.0))
    style = WscaleDense(2 * self.features, gain=1.0, name='style')(w)  # [N, 2C]
    return x * (style[:, None, None, :self.features] + 1) + style[:, None, None, self.features:]


class StyleMapping(nn.Module):
  """G_mapping of StyleGAN: pixel-norm z, `num_layers` dense layers (gain sqrt(2) in the weight,
  lr 0.01, lrelu), broadcast to `num_ws`, `w_avg` tracking and truncation."""
  z_dim: int
  w_dim: int
  num_ws: int
  num_layers: int = 8
  layer_features: Optional[int] = None
  lr_multiplier: float = 0.01
  w_avg_beta: float = 0.995

  @nn.compact
  def __call__(self, z, c=None, truncation_psi: Scalar = 1.0,
               truncation_cutoff: Optional[Scalar] = None, update_w_avg: bool = False):
    if c is not None and c.shape[-1]:
      raise ValueError('conditional StyleGAN (config A) networks are not supported')
    x = normalize_2nd_moment(z.astype(jnp.float32))
    hidden = self.w_dim if self.layer_features is None else self.layer_features
    for i in range(self.num_layers):
      x = WscaleDense(self.w_dim if i == self.num_layers - 1 else hidden, gain=SQRT2,
                      lr_multiplier=self.lr_multiplier, activation='lrelu', name=f'fc{i}')(x)
    w_avg = tracked_w_avg(self, x, update_w_avg)
    x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
    return truncate(x, w_avg, truncation_psi, truncation_cutoff)


class StyleBlock(nn.Module):
  """G_style at one resolution (two layers), with the ToRGB of that level."""
  in_channels: int  # 0 for 4x4
  out_channels: int
  resolution: int
  img_channels: int
  fused: bool = False
  blur_filter: Sequence[float] = (1, 2, 1)
  use_noise: bool = True
  dtype: str = 'float32'

  def setup(self):
    layer = lambda **kw: StyleLayer(self.out_channels, self.resolution, blur_filter=self.blur_filter,
                                    use_noise=self.use_noise, dtype=self.dtype, **kw)
    if self.in_channels == 0:
      self.const = self.param('const', nn.initializers.ones,
                              (self.resolution, self.resolution, self.out_channels))
      self.conv0 = layer(kernel_size=0)
    else:
      self.conv0 = layer(up=True, fused=self.fused)
    self.conv1 = layer()
    self.torgb = WscaleConv(self.img_channels, 1, gain=1.0, activation='linear')

  @property
  def layers(self) -> slice:
    """Its two layers' indices in ws and in noise: `2 log2(r) - 4` and the next."""
    i = 2 * (self.resolution.bit_length() - 1) - 4
    return slice(i, i + 2)

  def __call__(self, x, ws, noise_mode, noise):
    if self.in_channels == 0:
      x = jnp.broadcast_to(self.const, (ws.shape[0],) + self.const.shape)
    x = self.conv0(x, ws[:, 0], noise_mode, noise[0])
    return self.conv1(x, ws[:, 1], noise_mode, noise[1])

  def to_rgb(self, x, ws):
    del ws  # StyleGAN's ToRGB is not modulated
    return self.torgb(x).astype(jnp.float32)


class GrowingSynthesisBase(nn.Module):
  """ws `[N, num_ws, w_dim]` -> `[N, R, R, C]` of a growing generator (configs A-D), TF's
  recursive form: the blocks up to the working level r run in turn; r's ToRGB image is faded with
  r/2's (nearest-upsampled 2x) by the fractional lod, then nearest-upsampled to R. While
  initializing, every block and ToRGB is created.

  Subclasses add their fields and `num_layers`, and `make_block(resolution, in_channels,
  out_channels, name)`; a block is called with `ws` and `noise` at its `layers`, and its
  `to_rgb(x, ws)` gets all of `ws`.
  """
  w_dim: int
  img_resolution: int
  img_channels: int = 3
  channel_base: int = 16384
  channel_max: int = 512

  @property
  def num_ws(self) -> int:
    return num_ws_for(self.img_resolution)

  @nn.compact
  def __call__(self, ws, noise_mode='random', noise=None, lod=0.0, resolution=None,
               remat='none'):
    noise = layer_noise(noise_mode, noise, self.num_layers)
    level = growth_level(self.img_resolution, resolution)
    top = self.img_resolution >> level
    ws = ws.astype(jnp.float32)
    channels = lambda r: channels_at(r, self.channel_base, self.channel_max)
    blocks = {2 ** k: self.make_block(2 ** k, 0 if k == 2 else channels(2 ** (k - 1)),
                                      channels(2 ** k), f'b{2 ** k}')
              for k in range(2, check_resolution(self.img_resolution) + 1)}
    features = {}
    x = None
    for r, block in blocks.items():
      if r > top and not self.is_initializing():
        break
      x = features[r] = call_block(block, x, ws[:, block.layers], noise_mode,
                                   noise[block.layers], remat=remat, static_argnums=(2,),
                                   orderable=True)
    to_rgb = lambda r: blocks[r].to_rgb(features[r], ws)
    if self.is_initializing():
      for r in blocks:
        to_rgb(r)
    img = to_rgb(top)
    if top > 4:
      img = lerp(img, upsample_nearest(to_rgb(top // 2), 2), lod - level)
    return upsample_nearest(img, self.img_resolution // top)


class StyleSynthesis(GrowingSynthesisBase):
  """G_synthesis of StyleGAN (config A): ws `[N, num_ws, w_dim]` -> `[N, R, R, C]`."""
  fused_scale: Union[str, bool] = 'auto'  # 'auto': fused up-convs from 128 up (as TF)
  blur_filter: Sequence[float] = (1, 2, 1)
  use_noise: bool = True
  dtype: str = 'float32'

  @property
  def num_layers(self) -> int:
    return self.num_ws

  def make_block(self, resolution: int, in_channels: int, out_channels: int,
                 name: str) -> StyleBlock:
    fused = resolution >= 128 if self.fused_scale == 'auto' else bool(self.fused_scale)
    return StyleBlock(in_channels, out_channels, resolution, self.img_channels, fused=fused,
                      blur_filter=self.blur_filter, use_noise=self.use_noise, dtype=self.dtype,
                      name=name)


class StyleGenerator(GeneratorInterface):
  """G_style: StyleGAN's mapping + synthesis (config A), with progressive growing."""
  layer_features: Optional[int] = None
  w_avg_beta: float = 0.995
  channel_base: int = 16384
  channel_max: int = 512
  fused_scale: Union[str, bool] = 'auto'
  blur_filter: Sequence[float] = (1, 2, 1)
  use_noise: bool = True
  dtype: str = 'float32'

  progressive = True

  def __post_init__(self):
    if self.c_dim:
      raise ValueError('conditional StyleGAN (config A) networks are not supported')
    super().__post_init__()

  def setup(self):
    self.mapping = StyleMapping(self.z_dim, self.w_dim, self.num_ws, self.mapping_layers,
                                self.layer_features, self.mapping_lr_multiplier, self.w_avg_beta)
    self.synthesis = StyleSynthesis(
        self.w_dim, self.img_resolution, self.img_channels, self.channel_base, self.channel_max,
        self.fused_scale, self.blur_filter, self.use_noise, self.dtype)


class DBlockBase(nn.Module):
  """A level of a growing D: its FromRGB (`fromrgb`, for when it is the working level), then two
  convs (`conv0`, and `conv1` to half the resolution). Subclasses make the layers in `setup`."""
  tmp_channels: int
  out_channels: int

  def from_rgb(self, img):
    return self.fromrgb(img)

  def __call__(self, x):
    return self.conv1(self.conv0(x))


class DHeadBase(nn.Module):
  """The 4x4 head of a growing D: its FromRGB (`fromrgb`), minibatch stddev, then `conv`, `fc` and
  `out` in float32. Subclasses make the layers in `setup`."""
  channels: int
  fc_channels: int  # TF nf(0); equals `channels` in every official config
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1

  def from_rgb(self, img):
    return self.fromrgb(img)

  def __call__(self, x, batch_gpu=None):
    x = x.astype(jnp.float32)
    if self.mbstd_num_channels > 0:
      x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels, batch_gpu)
    x = self.conv(x)
    return self.out(self.fc(x.reshape(x.shape[0], -1)))  # NHWC flatten; converter permutes


class BasicDBlock(DBlockBase):
  """D_basic at one resolution: FromRGB of that level, conv 3x3, blur + conv 3x3 + 2x2 average."""
  blur_filter: Sequence[float] = (1, 2, 1)
  dtype: str = 'float32'

  def setup(self):
    self.fromrgb = WscaleConv(self.tmp_channels, 1, dtype=self.dtype)
    self.conv0 = WscaleConv(self.tmp_channels, 3, dtype=self.dtype)
    self.conv1 = WscaleConv(self.out_channels, 3, down=True, blur_filter=self.blur_filter,
                            dtype=self.dtype)


class BasicDHead(DHeadBase):
  """D_basic at 4x4: FromRGB_lod(K-2), minibatch stddev, conv 3x3, dense, dense -> 1."""

  def setup(self):
    self.fromrgb = WscaleConv(self.channels, 1)
    self.conv = WscaleConv(self.channels, 3)
    self.fc = WscaleDense(self.fc_channels, gain=SQRT2, activation='lrelu')
    self.out = WscaleDense(1, gain=1.0)


class GrowingDiscriminatorBase(nn.Module):
  """A growing discriminator (configs A-D; TF D_basic / D_stylegan, recursive form): image
  `[N, R, R, C]` -> logits `[N, 1]`. The working level r's FromRGB reads the image box-downsampled
  to r; after r's block, that is faded with the FromRGB of r/2 by the fractional lod; then the
  remaining blocks and the head `b4`. While initializing, every level's FromRGB is created.

  Subclasses add their fields, `conditional_error` (labels are not supported) and
  `make_block(tmp_channels, out_channels, name)`, `make_head(channels, fc_channels, name)`.
  """
  c_dim: int = 0
  img_resolution: int = 1024
  img_channels: int = 3
  channel_base: int = 16384
  channel_max: int = 512

  progressive = True
  conditional_error = 'conditional networks are not supported'

  def __post_init__(self):
    check_resolution(self.img_resolution)
    if self.c_dim:
      raise ValueError(self.conditional_error)
    super().__post_init__()

  @nn.compact
  def __call__(self, img, c=None, batch_gpu=None, lod=0.0, resolution=None,
               remat='none'):
    r_max = self.img_resolution
    check_images(img, r_max, self.img_channels)
    channels = lambda r: channels_at(r, self.channel_base, self.channel_max)
    blocks = {2 ** k: self.make_block(channels(2 ** k), channels(2 ** (k - 1)), f'b{2 ** k}')
              for k in range(check_resolution(r_max), 2, -1)}
    head = self.make_head(channels(4), channels(2), 'b4')
    level = growth_level(r_max, resolution)
    top = r_max >> level
    img = img.astype(jnp.float32)
    entry = lambda r: (head if r == 4 else blocks[r]).from_rgb(downsample_box(img, r_max // r))
    if self.is_initializing():  # create every level's FromRGB
      for r in list(blocks) + [4]:
        entry(r)
    x = entry(top)
    for r, block in blocks.items():
      if r > top:
        continue
      x = call_block(block, x, remat=remat)
      if r == top:
        x = lerp(x, entry(r // 2), lod - level)
    return head(x, batch_gpu)


class BasicDiscriminator(GrowingDiscriminatorBase):
  """D_basic: StyleGAN's discriminator (config A), with progressive growing."""
  blur_filter: Sequence[float] = (1, 2, 1)
  mbstd_group_size: Optional[int] = 4
  mbstd_num_channels: int = 1
  fused_scale: Union[str, bool] = 'auto'  # accepted for TF configs; same computation either way
  dtype: str = 'float32'

  conditional_error = 'conditional StyleGAN (config A) networks are not supported'

  def make_block(self, tmp_channels: int, out_channels: int, name: str) -> BasicDBlock:
    return BasicDBlock(tmp_channels, out_channels, self.blur_filter, self.dtype, name=name)

  def make_head(self, channels: int, fc_channels: int, name: str) -> BasicDHead:
    return BasicDHead(channels, fc_channels, self.mbstd_group_size, self.mbstd_num_channels,
                      name=name)
