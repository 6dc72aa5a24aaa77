"""FID Inception-v3: pytorch-fid's `fid_inception_v3` in Flax, its input handling and weight loader.

The network is torchvision's Inception-v3 layout (1008 classes, no auxiliary head) with the
blocks of the TF graph `inception-2015-12-05` that FID was defined with (REFERENCE.md §5.2):
- Mixed_5b..5d (`InceptionA`), Mixed_6b..6e (`InceptionC`) and Mixed_7b (`InceptionE`, avg pool)
  average-pool their pool branch with TF semantics: padded zeros are not counted;
- Mixed_7c (`InceptionE`, max pool) max-pools its pool branch;
- BatchNorm (eval) with eps 1e-3 after every bias-free convolution, then ReLU.
Outputs: the 2048-d `pool3` features (FID, KID), the 1008-way `logits` (IS, optionally without
the output bias, REFERENCE.md §5.4) and the maps pytorch-fid exposes as blocks 0-2.

Input handling (`InceptionV3.input_handling`):
- `'official'` (REFERENCE.md §5.2, what FID/KID/IS use): uint8-valued images `[N, H, W, 3]` in
  `[0, 255]` at any size -> bilinear resize to 299x299 with TF1 legacy alignment
  (`src = dst * in / out`, no half-pixel offset, last pixel repeated at the edge) ->
  `(x - 128) / 128`.
- `'pytorch_fid'`: pytorch-fid's `InceptionV3(resize_input=True, normalize_input=True)` given
  `x / 255`: torch `interpolate(bilinear, align_corners=False)` (half-pixel centers) to 299 ->
  `2 x - 1`. Not the official metric; it reproduces pytorch-fid's numbers.
- `'none'`: the network input itself, `[N, 299, 299, 3]` in `[-1, 1]`.

Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (`INCEPTION_WEIGHTS_URL`), read
with numpy only by `load_inception_weights`.
"""

from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.formats.state_dict import check_state_dict, param_shapes, read_state_dict
from sg2jax.ops.conv2d import conv2d

INCEPTION_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                         'pt_inception-2015-12-05-6726825d.pth')
INPUT_HANDLINGS = ('official', 'pytorch_fid', 'none')
RESOLUTION = 299
BN_EPS = 1e-3


# ----------------------------------------------------------------------------------------------
# Input handling.

def _bilinear_taps(in_size: int, out_size: int, half_pixel_centers: bool):
  """Source pixels and weights of 1-D bilinear resampling, computed in float32 as the references.

  TF1 legacy (`half_pixel_centers=False`): `src = dst * (in / out)`. Torch `align_corners=False`
  (`True`): `src = max((dst + 0.5) * (in / out) - 0.5, 0)`. Both: `i0 = floor(src)`,
  `i1 = min(i0 + 1, in - 1)` (edge clamped), weights `1 - frac` and `frac`.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  dst = np.arange(out_size, dtype=np.float32)
  if half_pixel_centers:
    src = np.maximum((dst + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0.0))
  else:
    src = dst * scale
  i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  frac = src - i0.astype(np.float32)
  return i0, i1, np.float32(1.0) - frac, frac


def resize_bilinear(x: jnp.ndarray, height: int, width: int,
                    half_pixel_centers: bool) -> jnp.ndarray:
  """Bilinear resize without antialiasing, separable (width first, then height).

  Not `jax.image.resize`, which uses half-pixel centers and antialiases when downsampling.
  Pixels blend as `w0 * x[i0] + w1 * x[i1]` (torch's form); TF1 writes the same interpolation as
  `x[i0] + (x[i1] - x[i0]) * frac`, which differs by float rounding only.

  Args:
    x: `[N, H, W, C]` float.
    height: output height.
    width: output width.
    half_pixel_centers: False for TF1 legacy alignment (`src = dst * in / out`, the official
      Inception input, REFERENCE.md §5.2); True for torch `interpolate(mode='bilinear',
      align_corners=False)` (pytorch-fid).

  Returns:
    `[N, height, width, C]`; `x` itself when the size already matches (both rules are the
    identity there).
  """
  if x.shape[1:3] == (height, width):
    return x
  i0, i1, w0, w1 = _bilinear_taps(x.shape[2], width, half_pixel_centers)
  x = jnp.take(x, i0, axis=2) * w0[:, None] + jnp.take(x, i1, axis=2) * w1[:, None]  # [N, H, w, C]
  i0, i1, w0, w1 = _bilinear_taps(x.shape[1], height, half_pixel_centers)
  return (jnp.take(x, i0, axis=1) * w0[:, None, None]
          + jnp.take(x, i1, axis=1) * w1[:, None, None])  # [N, h, w, C]


def preprocess_official(images: jnp.ndarray) -> jnp.ndarray:
  """uint8-valued `[N, H, W, 3]` in [0, 255] -> TF1 legacy bilinear to 299 -> `(x - 128) / 128`."""
  x = resize_bilinear(images.astype(jnp.float32), RESOLUTION, RESOLUTION, half_pixel_centers=False)
  return (x - 128.0) / 128.0


def preprocess_pytorch_fid(images: jnp.ndarray) -> jnp.ndarray:
  """uint8-valued `[N, H, W, 3]` -> `x / 255` -> torch-style bilinear to 299 -> `2 x - 1`."""
  x = images.astype(jnp.float32) / 255.0
  x = resize_bilinear(x, RESOLUTION, RESOLUTION, half_pixel_centers=True)
  return 2.0 * x - 1.0


# ----------------------------------------------------------------------------------------------
# Layers.

def _max_pool(x: jnp.ndarray, size: int, stride: int, padding: int = 0) -> jnp.ndarray:
  pad = ((padding, padding), (padding, padding))
  return nn.max_pool(x, (size, size), strides=(stride, stride), padding=pad)


def _avg_pool_tf(x: jnp.ndarray) -> jnp.ndarray:
  """3x3, stride 1, pad 1, averaging only the pixels inside the image (TF `SAME` avg pool)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class BatchNorm(nn.Module):
  """Eval-mode BatchNorm: `(x - running_mean) / sqrt(running_var + eps) * weight + bias`.

  All four arrays are loaded and never trained, so they sit together in `params`.
  """
  eps: float = BN_EPS

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    weight = self.param('weight', nn.initializers.ones, (c,))
    bias = self.param('bias', nn.initializers.zeros, (c,))
    running_mean = self.param('running_mean', nn.initializers.zeros, (c,))
    running_var = self.param('running_var', nn.initializers.ones, (c,))
    return (x - running_mean) * jax.lax.rsqrt(running_var + self.eps) * weight + bias


class Conv(nn.Module):
  """Bias-free convolution (a cross-correlation, as torch's), params `weight [kh, kw, in, out]`."""
  features: int
  kernel_size: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    weight = self.param('weight', nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    (py, px) = self.padding
    return conv2d(x, weight, self.stride, ((py, py), (px, px)))


class BasicConv2d(nn.Module):
  """`conv` (no bias) -> `bn` (eval, eps 1e-3) -> ReLU."""
  features: int
  kernel_size: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = Conv(self.features, self.kernel_size, self.stride, self.padding, name='conv')(x)
    return nn.relu(BatchNorm(name='bn')(x))


class InceptionA(nn.Module):
  """Mixed_5b..5d: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | TF avg pool -> 1x1 (`pool_features`)."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    branch1x1 = BasicConv2d(64, name='branch1x1')(x)
    branch5x5 = BasicConv2d(48, name='branch5x5_1')(x)
    branch5x5 = BasicConv2d(64, (5, 5), padding=(2, 2), name='branch5x5_2')(branch5x5)
    branch3x3dbl = BasicConv2d(64, name='branch3x3dbl_1')(x)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(branch3x3dbl)
    branch_pool = BasicConv2d(self.pool_features, name='branch_pool')(_avg_pool_tf(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (35 -> 17): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    branch3x3 = BasicConv2d(384, (3, 3), stride=2, name='branch3x3')(x)
    branch3x3dbl = BasicConv2d(64, name='branch3x3dbl_1')(x)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, (3, 3), stride=2, name='branch3x3dbl_3')(branch3x3dbl)
    branch_pool = _max_pool(x, 3, 2)
    return jnp.concatenate([branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e: 1x1 | factorized 7x7 | twice factorized 7x7 | TF avg pool -> 1x1."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c7 = self.channels_7x7
    row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
    branch1x1 = BasicConv2d(192, name='branch1x1')(x)
    branch7x7 = BasicConv2d(c7, name='branch7x7_1')(x)
    branch7x7 = BasicConv2d(c7, **row, name='branch7x7_2')(branch7x7)
    branch7x7 = BasicConv2d(192, **col, name='branch7x7_3')(branch7x7)
    branch7x7dbl = BasicConv2d(c7, name='branch7x7dbl_1')(x)
    branch7x7dbl = BasicConv2d(c7, **col, name='branch7x7dbl_2')(branch7x7dbl)
    branch7x7dbl = BasicConv2d(c7, **row, name='branch7x7dbl_3')(branch7x7dbl)
    branch7x7dbl = BasicConv2d(c7, **col, name='branch7x7dbl_4')(branch7x7dbl)
    branch7x7dbl = BasicConv2d(192, **row, name='branch7x7dbl_5')(branch7x7dbl)
    branch_pool = BasicConv2d(192, name='branch_pool')(_avg_pool_tf(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (17 -> 8): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool 3x3/2."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    branch3x3 = BasicConv2d(192, name='branch3x3_1')(x)
    branch3x3 = BasicConv2d(320, (3, 3), stride=2, name='branch3x3_2')(branch3x3)
    branch7x7x3 = BasicConv2d(192, name='branch7x7x3_1')(x)
    branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, (3, 3), stride=2, name='branch7x7x3_4')(branch7x7x3)
    branch_pool = _max_pool(x, 3, 2)
    return jnp.concatenate([branch3x3, branch7x7x3, branch_pool], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/7c: 1x1 | 1x1 -> (1x3, 3x1) | 1x1 -> 3x3 -> (1x3, 3x1) | pool -> 1x1.

  `pool='avg'` (Mixed_7b): TF average pool (padding not counted). `pool='max'` (Mixed_7c): max
  pool 3x3, stride 1, pad 1 -- the TF graph's last block differs here from torchvision's.
  """
  pool: str

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
    branch1x1 = BasicConv2d(320, name='branch1x1')(x)
    branch3x3 = BasicConv2d(384, name='branch3x3_1')(x)
    branch3x3 = jnp.concatenate([BasicConv2d(384, **row, name='branch3x3_2a')(branch3x3),
                                 BasicConv2d(384, **col, name='branch3x3_2b')(branch3x3)], axis=-1)
    branch3x3dbl = BasicConv2d(448, name='branch3x3dbl_1')(x)
    branch3x3dbl = BasicConv2d(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(branch3x3dbl)
    branch3x3dbl = jnp.concatenate(
        [BasicConv2d(384, **row, name='branch3x3dbl_3a')(branch3x3dbl),
         BasicConv2d(384, **col, name='branch3x3dbl_3b')(branch3x3dbl)], axis=-1)
    pooled = _avg_pool_tf(x) if self.pool == 'avg' else _max_pool(x, 3, 1, padding=1)
    branch_pool = BasicConv2d(192, name='branch_pool')(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionLogits(nn.Module):
  """`fc`: 2048 -> 1008, params `weight [2048, 1008]`, `bias [1008]`.

  `no_output_bias=True` drops the bias, as the official Inception Score (REFERENCE.md §5.4: ADA's
  `no_output_bias=True`, TF's `inception_v3_softmax.pkl`).
  """
  num_classes: int = 1008
  no_output_bias: bool = False

  @nn.compact
  def __call__(self, pool3: jnp.ndarray) -> jnp.ndarray:
    weight = self.param('weight', nn.initializers.lecun_normal(),
                        (pool3.shape[-1], self.num_classes))
    bias = self.param('bias', nn.initializers.zeros, (self.num_classes,))
    logits = pool3 @ weight  # [N, 1008]
    return logits if self.no_output_bias else logits + bias


class InceptionOutputs(NamedTuple):
  """What `InceptionV3` computes (under jit, unused fields cost nothing)."""
  block0: jnp.ndarray    # [N, 73, 73, 64]: after the first max pool (pytorch-fid block 0)
  block1: jnp.ndarray    # [N, 35, 35, 192]: after the second max pool (block 1)
  mixed_6e: jnp.ndarray  # [N, 17, 17, 768]: Mixed_6e (block 2)
  mixed_7c: jnp.ndarray  # [N, 8, 8, 2048]: Mixed_7c, before the global average pool
  pool3: jnp.ndarray     # [N, 2048]: the FID / KID features (block 3)
  logits: jnp.ndarray    # [N, 1008]: fc(pool3), with or without the output bias


class InceptionV3(nn.Module):
  """The FID Inception-v3 (pytorch-fid's `fid_inception_v3`); params mirror its state_dict names.

  Attributes:
    input_handling: `'official'` (uint8-valued `[N, H, W, 3]`, TF1 legacy resize to 299,
      `(x - 128) / 128`), `'pytorch_fid'` (same input, pytorch-fid's resize and scaling) or
      `'none'` (`[N, 299, 299, 3]` network input). See the module docstring.
    no_output_bias: logits without the fc bias (Inception Score).
  """
  input_handling: str = 'official'
  no_output_bias: bool = False

  def prepare(self, images: jnp.ndarray) -> jnp.ndarray:
    """Input handling: images -> `[N, 299, 299, 3]` network input."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'InceptionV3 takes RGB images [N, H, W, 3] (NHWC), got shape '
                       f'{tuple(images.shape)}; convert grayscale to 3 channels first')
    if self.input_handling == 'official':
      return preprocess_official(images)
    if self.input_handling == 'pytorch_fid':
      return preprocess_pytorch_fid(images)
    if self.input_handling == 'none':
      if images.shape[1:3] != (RESOLUTION, RESOLUTION):
        raise ValueError(f"input_handling='none' takes [N, 299, 299, 3] network input, got "
                         f"{tuple(images.shape)}; use input_handling='official' to resize")
      return images.astype(jnp.float32)
    raise ValueError(f'input_handling {self.input_handling!r} is not one of {INPUT_HANDLINGS}')

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> InceptionOutputs:
    x = self.prepare(images)  # [N, 299, 299, 3]
    x = BasicConv2d(32, (3, 3), stride=2, name='Conv2d_1a_3x3')(x)  # [N, 149, 149, 32]
    x = BasicConv2d(32, (3, 3), name='Conv2d_2a_3x3')(x)  # [N, 147, 147, 32]
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)  # [N, 147, 147, 64]
    block0 = _max_pool(x, 3, 2)  # [N, 73, 73, 64]
    x = BasicConv2d(80, name='Conv2d_3b_1x1')(block0)  # [N, 73, 73, 80]
    x = BasicConv2d(192, (3, 3), name='Conv2d_4a_3x3')(x)  # [N, 71, 71, 192]
    block1 = _max_pool(x, 3, 2)  # [N, 35, 35, 192]
    x = InceptionA(32, name='Mixed_5b')(block1)  # [N, 35, 35, 256]
    x = InceptionA(64, name='Mixed_5c')(x)  # [N, 35, 35, 288]
    x = InceptionA(64, name='Mixed_5d')(x)  # [N, 35, 35, 288]
    x = InceptionB(name='Mixed_6a')(x)  # [N, 17, 17, 768]
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    mixed_6e = InceptionC(192, name='Mixed_6e')(x)  # [N, 17, 17, 768]
    x = InceptionD(name='Mixed_7a')(mixed_6e)  # [N, 8, 8, 1280]
    x = InceptionE('avg', name='Mixed_7b')(x)  # [N, 8, 8, 2048]
    mixed_7c = InceptionE('max', name='Mixed_7c')(x)  # [N, 8, 8, 2048]
    pool3 = mixed_7c.mean(axis=(1, 2))  # [N, 2048]
    logits = InceptionLogits(no_output_bias=self.no_output_bias, name='fc')(pool3)  # [N, 1008]
    return InceptionOutputs(block0, block1, mixed_6e, mixed_7c, pool3, logits)


# ----------------------------------------------------------------------------------------------
# Weights: pytorch-fid's state_dict (torchvision Inception3 names, NCHW/OIHW) -> params.

def inception_state_dict_shapes() -> dict[str, tuple[int, ...]]:
  """`{torch name: torch shape}` of every float tensor the network needs, in state_dict order.

  Derived from the module itself (`jax.eval_shape`, nothing allocated): a params path
  `Mixed_5b/branch1x1/conv/weight [kh, kw, I, O]` is the torch entry
  `Mixed_5b.branch1x1.conv.weight [O, I, kh, kw]`; `fc/weight [2048, 1008]` is `fc.weight
  [1008, 2048]`.
  """
  tree_shapes = param_shapes(InceptionV3(input_handling='none'),
                             jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))
  shapes = {}
  for path, shape in tree_shapes.items():
    name = path.replace('/', '.')
    if len(shape) == 4:
      shape = (shape[3], shape[2], shape[0], shape[1])  # [kh, kw, I, O] -> [O, I, kh, kw]
    elif len(shape) == 2:
      shape = shape[::-1]  # [I, O] -> [O, I]
    shapes[name] = shape
  return shapes


def inception_params_from_state_dict(state_dict: dict[str, np.ndarray],
                                     source: str = 'state_dict') -> dict:
  """pytorch-fid's FID Inception state_dict (numpy arrays) -> `InceptionV3` params.

  Every float entry must be present with its shape; `<layer>.bn.num_batches_tracked` buffers
  are optional and unused (older torch files lack them).

  Args:
    state_dict: torchvision `Inception3` names -> arrays (conv `[O, I, kh, kw]`, fc `[O, I]`).
    source: file name for error messages.

  Returns:
    Nested dict of float32 numpy arrays, for `InceptionV3().apply({'params': params}, images)`.

  Raises:
    ValueError: one line naming missing, unknown and wrongly shaped entries.
  """
  shapes = inception_state_dict_shapes()
  batch_counters = [name.rsplit('.', 1)[0] + '.num_batches_tracked'
                    for name in shapes if name.endswith('.bn.running_var')]
  check_state_dict(state_dict, shapes, source, "pytorch-fid's FID Inception-v3 weights",
                   optional=batch_counters)
  params: dict = {}
  for name in shapes:
    value = np.asarray(state_dict[name], dtype=np.float32)
    if value.ndim == 4:
      # torch conv weight [O, I, kh, kw] -> HWIO. Both torch conv2d and lax.conv are
      # cross-correlations, so no spatial flip.
      value = value.transpose(2, 3, 1, 0)
    elif value.ndim == 2:
      value = value.T  # torch Linear weight [O, I] -> [I, O] (x @ weight)
    *parents, leaf = name.split('.')
    node = params
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = np.ascontiguousarray(value)
  return params


def load_inception_weights(path: str | Path) -> dict:
  """Reads pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (numpy only) into params.

  Both `torch.save` formats are accepted: the legacy one pytorch-fid's file uses and the zip
  one of torch >= 1.6 (e.g. the same weights re-saved).

  Args:
    path: the `.pth` file, from `INCEPTION_WEIGHTS_URL`.

  Returns:
    `InceptionV3` params (nested dict of float32 numpy arrays).

  Raises:
    FileNotFoundError: the file does not exist (the message says where to get it).
    ValueError: not a torch state_dict, or keys / shapes that do not fit (one line naming them).
  """
  state_dict = read_state_dict(
      path, 'FID Inception weights', f'download {INCEPTION_WEIGHTS_URL} (pytorch-fid\'s FID '
      f'Inception-v3 weights) and pass its path')
  return inception_params_from_state_dict(state_dict, Path(path).name)
