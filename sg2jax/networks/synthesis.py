"""Synthesis network ws -> image, architectures orig / skip / resnet (REFERENCE.md §1.7).

Noise for the convolution layers comes, in order of precedence, from
- `noise`: a sequence with one unit-variance array per layer (layer order = TF `noise0..`),
  each broadcastable to `[N, H, W, 1]`; the layer multiplies it by its `noise_strength`;
- `noise_mode='random'`: fresh `N(0, 1)` maps from the Flax rng stream `'noise'`;
- `noise_mode='const'`: the stored maps (`buffers` collection, `noise_const [H, W]`);
- `noise_mode='none'`: no noise.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.networks.layers import (EqualizedConv, EqualizedDense, call_block, channels_at,
                                    check_full_resolution, check_resolution)
from sg2jax.ops.bias_act import bias_act, default_gain
from sg2jax.ops.equalized import weight_gain
from sg2jax.ops.modconv import modulated_conv2d
from sg2jax.ops.upfirdn import setup_filter, upsample2d

NOISE_MODES = ('random', 'const', 'none')
ARCHITECTURES = ('orig', 'skip', 'resnet')


def num_ws_for(img_resolution: int) -> int:
  """`2 * log2(R) - 2`: one w per conv layer plus one for the last ToRGB (REFERENCE.md §1.6)."""
  return 2 * check_resolution(img_resolution) - 2


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
  if value not in choices:
    raise ValueError(f'{what} {value!r} is not one of {", ".join(choices)}')
  return value


def layer_noise(noise_mode: str, noise: Optional[Sequence[jnp.ndarray]],
                num_layers: int) -> list[Optional[jnp.ndarray]]:
  """Checks `noise_mode` and `noise` (None or one map per layer); returns one entry per layer."""
  check_choice(noise_mode, NOISE_MODES, 'noise_mode')
  if noise is not None and len(noise) != num_layers:
    raise ValueError(f'noise must hold {num_layers} maps (one per layer), got {len(noise)}')
  return [None] * num_layers if noise is None else list(noise)


def noise_input(layer: nn.Module, batch_size: int, noise_mode: str,
                noise: Optional[jnp.ndarray]) -> Optional[jnp.ndarray]:
  """A layer's unit-variance noise (broadcastable to `[N, res, res, 1]`) by the precedence above,
  or None; declares the layer's buffer `noise_const [res, res]` (init N(0, 1))."""
  res = layer.resolution
  noise_const = layer.variable(
      'buffers', 'noise_const',
      lambda: jax.random.normal(layer.make_rng('params'), (res, res), jnp.float32))
  if noise is not None:
    return jnp.asarray(noise, jnp.float32)
  if noise_mode == 'random':
    return jax.random.normal(layer.make_rng('noise'), (batch_size, res, res, 1))
  if noise_mode == 'const':
    return noise_const.value[None, :, :, None]
  return None


class SynthesisLayer(nn.Module):
  """Modulated 3x3 conv (optionally up=2) + noise + bias + lrelu * sqrt(2).

  Params: `affine` (dense w -> in-channel styles, bias init 1), `weight [k, k, in, out]`,
  `bias [out]`, `noise_strength []` (init 0); buffer `noise_const [res, res]` (init N(0, 1)).
  """
  features: int
  resolution: int
  kernel_size: int = 3
  up: int = 1
  use_noise: bool = True
  activation: str = 'lrelu'
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  conv_clamp: Optional[float] = None
  fused_modconv: bool = True
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jnp.ndarray, w: jnp.ndarray, noise_mode: str = 'random',
               noise: Optional[jnp.ndarray] = None, gain: float = 1.0) -> jnp.ndarray:
    n, k = x.shape[0], self.kernel_size
    styles = EqualizedDense(x.shape[-1], bias_init=1.0, name='affine')(w)  # [N, in]
    weight = self.param('weight', nn.initializers.normal(1.0), (k, k, x.shape[-1], self.features))
    scaled_noise = None
    if self.use_noise:
      unit_noise = noise_input(self, n, noise_mode, noise)
      noise_strength = self.param('noise_strength', nn.initializers.zeros, ())
      if unit_noise is not None:
        scaled_noise = unit_noise * noise_strength
    f = setup_filter(self.resample_filter) if self.up > 1 else None
    x = modulated_conv2d(x.astype(self.dtype), weight, styles, demodulate=True, up=self.up,
                         padding=k // 2, resample_filter=f, fused=self.fused_modconv,
                         noise=scaled_noise)
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return bias_act(x, bias, self.activation, gain=default_gain(self.activation) * gain,
                    clamp=clamp)


class ToRGB(nn.Module):
  """Modulated 1x1 conv to image channels, no demodulation, no noise, + bias, linear."""
  img_channels: int
  kernel_size: int = 1
  conv_clamp: Optional[float] = None
  fused_modconv: bool = True
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    k, cin = self.kernel_size, x.shape[-1]
    # The equalized gain 1/sqrt(fan_in) goes on the styles (same product as on the weight).
    styles = EqualizedDense(cin, bias_init=1.0, name='affine')(w) * weight_gain(k * k * cin)
    weight = self.param('weight', nn.initializers.normal(1.0), (k, k, cin, self.img_channels))
    x = modulated_conv2d(x.astype(self.dtype), weight, styles, demodulate=False, padding=k // 2,
                         fused=self.fused_modconv)
    bias = self.param('bias', nn.initializers.zeros, (self.img_channels,))
    return bias_act(x.astype(jnp.float32), bias, 'linear', clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
  """One resolution: (const | conv0 up=2) -> conv1 [-> ToRGB], with the architecture's skips.

  `ws` holds the block's `num_conv + num_torgb` latents; its ToRGB shares its w with the next
  block's conv0 (the caller advances by `num_conv` only).
  """
  in_channels: int  # 0 for the 4x4 block, which starts from the learned constant
  out_channels: int
  resolution: int
  img_channels: int
  is_last: bool
  architecture: str = 'skip'
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  conv_clamp: Optional[float] = None
  use_noise: bool = True
  fused_modconv: bool = True
  dtype: str = 'float32'

  @property
  def num_conv(self) -> int:
    return 1 if self.in_channels == 0 else 2

  @property
  def num_torgb(self) -> int:
    return 1 if (self.is_last or self.architecture == 'skip') else 0

  @nn.compact
  def __call__(self, x: Optional[jnp.ndarray], img: Optional[jnp.ndarray], ws: jnp.ndarray,
               noise_mode: str = 'random',
               noise: Optional[Sequence[jnp.ndarray]] = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    layer = lambda name, up=1: SynthesisLayer(
        self.out_channels, self.resolution, up=up, use_noise=self.use_noise,
        resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
        fused_modconv=self.fused_modconv, dtype=self.dtype, name=name)
    noise = [None] * self.num_conv if noise is None else list(noise)
    if self.in_channels == 0:
      const = self.param('const', nn.initializers.normal(1.0),
                         (self.resolution, self.resolution, self.out_channels))
      x = jnp.broadcast_to(const, (ws.shape[0],) + const.shape)  # [N, 4, 4, C]
      x = layer('conv1')(x, ws[:, 0], noise_mode, noise[0])
    elif self.architecture == 'resnet':
      y = EqualizedConv(self.out_channels, 1, use_bias=False, up=2,
                        resample_filter=self.resample_filter, dtype=self.dtype,
                        name='skip')(x, gain=np.sqrt(0.5))
      x = layer('conv0', up=2)(x, ws[:, 0], noise_mode, noise[0])
      x = layer('conv1')(x, ws[:, 1], noise_mode, noise[1], gain=np.sqrt(0.5))
      x = y + x
    else:
      x = layer('conv0', up=2)(x, ws[:, 0], noise_mode, noise[0])
      x = layer('conv1')(x, ws[:, 1], noise_mode, noise[1])
    if img is not None:
      img = upsample2d(img, setup_filter(self.resample_filter))
    if self.num_torgb:
      y = ToRGB(self.img_channels, conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
                dtype=self.dtype, name='torgb')(x, ws[:, self.num_conv])
      img = y if img is None else img + y
    return x, img


class SynthesisNetwork(nn.Module):
  """ws `[N, num_ws, w_dim]` -> image `[N, R, R, img_channels]` (float32, nominally [-1, 1])."""
  w_dim: int
  img_resolution: int
  img_channels: int = 3
  architecture: str = 'skip'
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: Optional[float] = None
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  use_noise: bool = True
  fused_modconv: bool = True
  dtype: str = 'float32'

  def __post_init__(self):
    check_resolution(self.img_resolution)
    check_choice(self.architecture, ARCHITECTURES, 'synthesis architecture')
    super().__post_init__()

  @property
  def block_resolutions(self) -> list[int]:
    return [2 ** i for i in range(2, check_resolution(self.img_resolution) + 1)]

  @property
  def num_ws(self) -> int:
    return num_ws_for(self.img_resolution)

  @property
  def num_layers(self) -> int:
    """Convolution layers with noise inputs (= num_ws - 1)."""
    return self.num_ws - 1

  @nn.compact
  def __call__(self, ws: jnp.ndarray, noise_mode: str = 'random',
               noise: Optional[Sequence[jnp.ndarray]] = None, lod=0.0,
               resolution: Optional[int] = None, remat: str = 'none') -> jnp.ndarray:
    """`lod` and `resolution` as the progressive networks take them: ignored / None or R.
    `remat`: what the blocks keep for the backward pass (`layers.call_block`; G's blocks may
    be ordered: every phase that differentiates G differentiates its parameters)."""
    del lod
    check_full_resolution(self.img_resolution, resolution)
    noise = layer_noise(noise_mode, noise, self.num_layers)
    if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
      raise ValueError(f'synthesis expects ws of shape [N, {self.num_ws}, {self.w_dim}], '
                       f'got {ws.shape}')
    ws = ws.astype(jnp.float32)
    x = img = None
    i = 0  # the block's first conv layer: its index in noise and in ws
    for res in self.block_resolutions:
      block = SynthesisBlock(
          in_channels=0 if res == 4 else channels_at(res // 2, self.channel_base, self.channel_max),
          out_channels=channels_at(res, self.channel_base, self.channel_max),
          resolution=res, img_channels=self.img_channels, is_last=res == self.img_resolution,
          architecture=self.architecture, resample_filter=self.resample_filter,
          conv_clamp=self.conv_clamp, use_noise=self.use_noise, fused_modconv=self.fused_modconv,
          dtype=self.dtype, name=f'b{res}')
      x, img = call_block(block, x, img, ws[:, i:i + block.num_conv + block.num_torgb],
                          noise_mode, noise[i:i + block.num_conv], remat=remat,
                          static_argnums=(3,), orderable=True)
      i += block.num_conv
    return img
