"""Generator = mapping + synthesis, and style mixing (REFERENCE.md §1.5-§1.7)."""

from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sg2jax.networks.layers import check_resolution
from sg2jax.networks.mapping import MappingNetwork, Scalar
from sg2jax.networks.synthesis import ARCHITECTURES, SynthesisNetwork, check_choice, num_ws_for

DTYPES = ('float32', 'bfloat16')


def mix_styles(ws: jnp.ndarray, ws2: jnp.ndarray, cutoff: Union[int, jnp.ndarray]) -> jnp.ndarray:
  """Layers `l < cutoff` from `ws`, the rest from `ws2` (both `[N, num_ws, w_dim]`).

  `cutoff` may be traced, so one compiled step serves every cutoff.
  """
  layer = jnp.arange(ws.shape[1])[None, :, None]
  return jnp.where(layer < cutoff, ws, ws2)


def sample_mixing_cutoff(key: jax.Array, num_ws: int, mixing_prob: float) -> jnp.ndarray:
  """One cutoff per minibatch: uniform in `[1, num_ws - 1]` with prob `mixing_prob`, else `num_ws`.

  (`num_ws` means no mixing; REFERENCE.md §1.6.)
  """
  key_prob, key_cutoff = jax.random.split(key)
  cutoff = jax.random.randint(key_cutoff, (), 1, num_ws)
  return jnp.where(jax.random.uniform(key_prob, ()) < mixing_prob, cutoff, num_ws)


def fused_modconv(training: bool, devices: Sequence[Any]) -> bool:
  """THE rule for the form of the modulated convolutions (REFERENCE.md §1.4), which every caller
  uses: training (`sg2jax.train.build`), the metrics, the projector and `sg2jax.generate
  --modconv auto`.

  Fused (each sample's modulated weights, one grouped convolution over the batch) only to run G
  outside training on a single device that is not a CPU; modulating the activations around the
  shared weights everywhere else:
  - training: the official training uses the non-fused form (ADA picks the fused one only
    outside training, REFERENCE.md §1.4);
  - a batch sharded over several devices: XLA's SPMD partitioner cannot split the fused form's
    grouped convolution, whose groups come from the batch ("output feature dimension not
    divisible by feature_group_count", jax 0.10.2);
  - XLA:CPU runs grouped convolutions slowly (generation 1.5x slower, config F at 64x64, batch
    8; README "Training speed").
  The values are the same either way, up to float rounding (tests/test_ops.py,
  test_generator.py, test_sampling.py).

  Args:
    training: G is being trained (its weights get gradients).
    devices: the devices the batch is split over (their platform, e.g. a compile-only TPU's
      'tpu', not the host's backend, decides).
  """
  return not training and len(devices) == 1 and devices[0].platform != 'cpu'


def modconv_form(generator: nn.Module, fused: bool) -> nn.Module:
  """`generator` computing its modulated convolutions fused or not (`fused_modconv` decides);
  generators without modulated convolutions (StyleGAN, config A) as they are."""
  if not hasattr(generator, 'fused_modconv') or generator.fused_modconv == fused:
    return generator
  return generator.clone(fused_modconv=fused)


class GeneratorInterface(nn.Module):
  """What every generator offers (configs A-F): `map` (z -> ws), `synthesize` (ws -> images)
  and both in `__call__`, with the level of detail `lod` (traced) and working `resolution`
  (static) of progressive growing; generators that do not grow accept `lod` and ignore it, and
  run at `resolution` None or their own.

  The fields below, which every generator has, come first; a subclass adds its own after them
  (among them `dtype`, checked here with `img_resolution`) and makes `self.mapping` and
  `self.synthesis` in `setup`."""
  z_dim: int = 512
  c_dim: int = 0
  w_dim: int = 512
  img_resolution: int = 1024
  img_channels: int = 3
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01

  progressive = False

  def __post_init__(self):
    check_resolution(self.img_resolution)
    check_choice(self.dtype, DTYPES, 'dtype')
    super().__post_init__()

  @property
  def num_ws(self) -> int:
    return num_ws_for(self.img_resolution)

  def map(self, z: jnp.ndarray, c: Optional[jnp.ndarray] = None, truncation_psi: Scalar = 1.0,
          truncation_cutoff: Optional[Scalar] = None, update_w_avg: bool = False) -> jnp.ndarray:
    """z `[N, z_dim]`, c `[N, c_dim]` -> ws `[N, num_ws, w_dim]`."""
    return self.mapping(z, c, truncation_psi, truncation_cutoff, update_w_avg)

  def synthesize(self, ws: jnp.ndarray, noise_mode: str = 'random',
                 noise: Optional[Sequence[jnp.ndarray]] = None, lod: Scalar = 0.0,
                 resolution: Optional[int] = None, remat: str = 'none') -> jnp.ndarray:
    """ws `[N, num_ws, w_dim]` -> images `[N, R, R, img_channels]`; `remat`: what the blocks
    keep for the backward pass (training's `config.remat`, `layers.call_block`)."""
    return self.synthesis(ws, noise_mode, noise, lod, resolution, remat)

  def __call__(self, z: jnp.ndarray, c: Optional[jnp.ndarray] = None,
               truncation_psi: Scalar = 1.0, truncation_cutoff: Optional[Scalar] = None,
               noise_mode: str = 'random', noise: Optional[Sequence[jnp.ndarray]] = None,
               update_w_avg: bool = False, lod: Scalar = 0.0,
               resolution: Optional[int] = None) -> jnp.ndarray:
    ws = self.map(z, c, truncation_psi, truncation_cutoff, update_w_avg)
    return self.synthesize(ws, noise_mode, noise, lod, resolution)


class Generator(GeneratorInterface):
  """StyleGAN2 generator (configs E/F and the Table 2 variants).

  Variable collections: `params` (trainable), `stats` (`mapping/w_avg`), `buffers`
  (`synthesis/b*/conv*/noise_const`). Parameter paths follow the official names
  (`mapping/fc0/weight`, `synthesis/b8/conv0/affine/bias`, ...).

  Call `G.apply(variables, z, c)` for images, or `method='map'` / `method='synthesize'` for the
  two halves. Random noise needs `rngs={'noise': key}`; `update_w_avg=True` needs
  `mutable=['stats']`.
  """
  # Mapping network (after `GeneratorInterface`'s fields).
  embed_features: Optional[int] = None  # None: w_dim
  layer_features: Optional[int] = None  # None: w_dim
  w_avg_beta: float = 0.995
  # Synthesis network.
  architecture: str = 'skip'
  channel_base: int = 32768  # config F; 16384 for configs A-E
  channel_max: int = 512
  conv_clamp: Optional[float] = None  # ADA presets use 256; the paper (TF) none
  resample_filter: Sequence[float] = (1, 3, 3, 1)
  use_noise: bool = True
  # Modulate the weights (one grouped conv) or the activations: the same values. Whoever runs a
  # generator sets this with `modconv_form` (the rule, `fused_modconv`); True is the official
  # networks' stored setting, what a network built from a config alone computes with.
  fused_modconv: bool = True
  dtype: str = 'float32'  # compute dtype of the synthesis convolutions; params stay float32

  def __post_init__(self):
    check_choice(self.architecture, ARCHITECTURES, 'architecture')
    super().__post_init__()

  def setup(self):
    self.mapping = MappingNetwork(
        z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
        num_layers=self.mapping_layers, embed_features=self.embed_features,
        layer_features=self.layer_features, lr_multiplier=self.mapping_lr_multiplier,
        w_avg_beta=self.w_avg_beta)
    self.synthesis = SynthesisNetwork(
        w_dim=self.w_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
        architecture=self.architecture, channel_base=self.channel_base,
        channel_max=self.channel_max, conv_clamp=self.conv_clamp,
        resample_filter=self.resample_filter, use_noise=self.use_noise,
        fused_modconv=self.fused_modconv, dtype=self.dtype)
