"""VGG16 (torchvision layout) to its 4096-d fc2 features for precision/recall (REFERENCE.md §5.5).

The network is torchvision's `vgg16`: 13 3x3 convolutions with ReLU in five blocks, each block
followed by a 2x2 max pool; an adaptive average pool to 7x7 (the identity at 224x224); then
fc1 (25088 -> 4096), ReLU, fc2 (4096 -> 4096), ReLU, fc3 (4096 -> 1000 logits). Dropout is the
identity (eval). The precision/recall features are `fc2` after its ReLU (Kynkäänniemi et al.
2019). `VGG16Features` (the convolutions alone) is shared with LPIPS (`lpips.py`).

Input: `[N, H, W, 3]` fed to the first convolution as it is: like torchvision's module, VGG16 does
no input normalization inside, so the caller scales images the way the weights expect.
`resize_input=True` first resizes to 224x224 by area averaging (torch `interpolate(mode='area')`).
Unverified: how NVIDIA's `vgg16.pt` scales and resizes inside its TorchScript (REFERENCE.md §5.11).

Weights: a torchvision-layout state_dict `.pth` (`features.0.weight` ... `classifier.6.bias`),
e.g. torchvision's ImageNet `vgg16-397923af.pth` (`VGG16_WEIGHTS_URL`), read with numpy only by
`load_vgg16_weights`.
"""

from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sg2jax.formats.state_dict import check_state_dict, param_shapes, read_state_dict
from sg2jax.ops.conv2d import conv2d

VGG16_WEIGHTS_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'
RESOLUTION = 224
# torchvision's ImageNet input normalization of images in [0, 1] (per RGB channel).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (name, output channels) of the convolutions, one tuple per block (a 2x2 max pool after each).
CONV_BLOCKS = (
    (('conv1_1', 64), ('conv1_2', 64)),
    (('conv2_1', 128), ('conv2_2', 128)),
    (('conv3_1', 256), ('conv3_2', 256), ('conv3_3', 256)),
    (('conv4_1', 512), ('conv4_2', 512), ('conv4_3', 512)),
    (('conv5_1', 512), ('conv5_2', 512), ('conv5_3', 512)),
)
# sg2jax params path -> torchvision state_dict prefix (`features.<i>` counts the ReLU and pool
# modules of torchvision's Sequential, hence the gaps).
TORCHVISION_NAMES = {
    'features/conv1_1': 'features.0', 'features/conv1_2': 'features.2',
    'features/conv2_1': 'features.5', 'features/conv2_2': 'features.7',
    'features/conv3_1': 'features.10', 'features/conv3_2': 'features.12',
    'features/conv3_3': 'features.14',
    'features/conv4_1': 'features.17', 'features/conv4_2': 'features.19',
    'features/conv4_3': 'features.21',
    'features/conv5_1': 'features.24', 'features/conv5_2': 'features.26',
    'features/conv5_3': 'features.28',
    'fc1': 'classifier.0', 'fc2': 'classifier.3', 'fc3': 'classifier.6',
}


def adaptive_avg_pool(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """torch `adaptive_avg_pool2d` (= `interpolate(mode='area')`): output pixel `i` averages input
  rows `[floor(i * in / out), ceil((i + 1) * in / out))`, and likewise columns.

  Args:
    x: `[N, H, W, C]`.
    height: output height.
    width: output width.

  Returns:
    `[N, height, width, C]`; `x` itself when the size already matches.
  """
  if x.shape[1:3] == (height, width):
    return x

  def averaging_matrix(in_size: int, out_size: int) -> np.ndarray:
    m = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
      start, end = (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)
      m[i, start:end] = 1.0 / (end - start)
    return m

  rows = averaging_matrix(x.shape[1], height)  # [height, H]
  cols = averaging_matrix(x.shape[2], width)  # [width, W]
  return jnp.einsum('ph,nhwc,qw->npqc', rows, x, cols)  # [N, height, width, C]


def preprocess_imagenet(images: jnp.ndarray) -> jnp.ndarray:
  """uint8-valued `[N, H, W, 3]` in [0, 255] -> `(x / 255 - mean) / std` (torchvision's ImageNet
  normalization, what torchvision's VGG16 weights expect). Used by precision/recall; how NVIDIA's
  `vgg16.pt` scales its input is unverified (REFERENCE.md §5.11)."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


# Maps at most this large (height and width) are convolved as 9 matrix products (`conv3x3_taps`).
SMALL_MAP = 3


def conv3x3_taps(x: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
  """`conv2d(x, weight, padding 1)` for a 3x3 kernel as the sum of 9 shifted matrix products:
  `y[n, i, j] = sum_{a, b} x_pad[n, i + a, j + b] @ weight[a, b]`.

  The same correlation; used for tiny maps (LPIPS of small images reaches 2x2 in VGG16's last
  blocks), where XLA:CPU (jax 0.10.2) runs a 3x3 convolution of a 2x2 map with >= 256 channels
  ~100x slower than these products (0.7 s vs 0.013 s for [40, 2, 2, 512] -> 512).
  """
  _, h, w, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # [N, h+2, w+2, I]
  out = None
  for a in range(3):
    for b in range(3):
      term = jnp.einsum('nhwi,io->nhwo', padded[:, a:a + h, b:b + w], weight[a, b])
      out = term if out is None else out + term
  return out  # [N, h, w, O]


class Conv3x3(nn.Module):
  """3x3 convolution, padding 1, params `weight [3, 3, in, out]` and `bias [out]`."""
  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    weight = self.param('weight', nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    if max(x.shape[1:3]) <= SMALL_MAP:
      return conv3x3_taps(x, weight) + bias
    return conv2d(x, weight, 1, ((1, 1), (1, 1))) + bias


class Dense(nn.Module):
  """Fully connected layer, params `weight [in, out]` and `bias [out]`."""
  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    weight = self.param('weight', nn.initializers.lecun_normal(), (x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return x @ weight + bias


class VGG16Taps(NamedTuple):
  """Outputs of `VGG16Features` at 224x224 input (sizes scale with the input)."""
  relu1_2: jnp.ndarray  # [N, 224, 224, 64]
  relu2_2: jnp.ndarray  # [N, 112, 112, 128]
  relu3_3: jnp.ndarray  # [N, 56, 56, 256]
  relu4_3: jnp.ndarray  # [N, 28, 28, 512]
  relu5_3: jnp.ndarray  # [N, 14, 14, 512]
  pool5: jnp.ndarray    # [N, 7, 7, 512]: torchvision's `features(x)`


class VGG16Features(nn.Module):
  """The 13 convolutions (+ ReLU) of VGG16 in five blocks, a 2x2 max pool after each block."""

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> VGG16Taps:
    taps = []
    for block in CONV_BLOCKS:
      if taps:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))  # [N, H/2, W/2, C]
      for name, features in block:
        x = nn.relu(Conv3x3(features, name=name)(x))
      taps.append(x)
    return VGG16Taps(*taps, nn.max_pool(x, (2, 2), strides=(2, 2)))


class VGG16Outputs(NamedTuple):
  """What `VGG16` computes (under jit, unused fields cost nothing)."""
  features: jnp.ndarray      # [N, 7, 7, 512]: after the last max pool (224x224 input)
  fc1_pre_relu: jnp.ndarray  # [N, 4096]
  fc2_pre_relu: jnp.ndarray  # [N, 4096]
  fc2: jnp.ndarray           # [N, 4096]: relu(fc2), the precision/recall features
  logits: jnp.ndarray        # [N, 1000]


class VGG16(nn.Module):
  """torchvision's VGG16 in NHWC; params `features/conv1_1..conv5_3`, `fc1`, `fc2`, `fc3`.

  Attributes:
    resize_input: resize `[N, H, W, 3]` to 224x224 by area averaging first.
  """
  resize_input: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> VGG16Outputs:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'VGG16 takes RGB images [N, H, W, 3] (NHWC), got shape {tuple(x.shape)}')
    x = x.astype(jnp.float32)
    if self.resize_input:
      x = adaptive_avg_pool(x, RESOLUTION, RESOLUTION)  # [N, 224, 224, 3]
    features = VGG16Features(name='features')(x).pool5  # [N, 7, 7, 512] at 224x224
    pooled = adaptive_avg_pool(features, 7, 7)  # [N, 7, 7, 512]
    # Flattened in (h, w, c) order; the loader permutes fc1's rows from torch's (c, h, w).
    flat = pooled.reshape(pooled.shape[0], -1)  # [N, 25088]
    fc1_pre_relu = Dense(4096, name='fc1')(flat)
    fc2_pre_relu = Dense(4096, name='fc2')(nn.relu(fc1_pre_relu))
    fc2 = nn.relu(fc2_pre_relu)
    logits = Dense(1000, name='fc3')(fc2)
    return VGG16Outputs(features, fc1_pre_relu, fc2_pre_relu, fc2, logits)


# ----------------------------------------------------------------------------------------------
# Weights: torchvision state_dict (OIHW, [O, I]) -> params.

def vgg16_params_from_state_dict(state_dict: dict[str, np.ndarray],
                                 source: str = 'state_dict') -> dict:
  """A torchvision-layout VGG16 state_dict (numpy arrays) -> `VGG16` params.

  Args:
    state_dict: `features.<i>.weight [O, I, 3, 3]`, `features.<i>.bias`,
      `classifier.{0,3,6}.weight [O, I]`, `classifier.{0,3,6}.bias` (32 entries).
    source: file name for error messages.

  Returns:
    Nested dict of float32 numpy arrays, for `VGG16().apply({'params': params}, x)`.

  Raises:
    ValueError: one line naming missing, unknown and wrongly shaped entries.
  """
  tree_shapes = param_shapes(VGG16(), jnp.zeros((1, RESOLUTION, RESOLUTION, 3)))
  torch_shapes = {}
  for path, shape in tree_shapes.items():
    module, leaf = path.rsplit('/', 1)
    if len(shape) == 4:
      shape = (shape[3], shape[2], shape[0], shape[1])  # [kh, kw, I, O] -> [O, I, kh, kw]
    elif len(shape) == 2:
      shape = shape[::-1]  # [I, O] -> [O, I]
    torch_shapes[f'{TORCHVISION_NAMES[module]}.{leaf}'] = shape
  check_state_dict(state_dict, torch_shapes, source, 'torchvision VGG16 weights')
  params: dict = {}
  for path in tree_shapes:
    module, leaf = path.rsplit('/', 1)
    value = np.asarray(state_dict[f'{TORCHVISION_NAMES[module]}.{leaf}'], dtype=np.float32)
    if value.ndim == 4:
      # torch conv weight [O, I, kh, kw] -> HWIO. Both torch conv2d and lax.conv are
      # cross-correlations, so no spatial flip.
      value = value.transpose(2, 3, 1, 0)
    elif module == 'fc1' and leaf == 'weight':
      # torch flattens the [N, 512, 7, 7] map in (c, h, w) order, sg2jax its [N, 7, 7, 512] map
      # in (h, w, c) order: [4096, 512 * 7 * 7] -> [4096, 512, 7, 7] -> [7, 7, 512, 4096]
      # -> [25088, 4096].
      out_features = value.shape[0]
      value = value.reshape(out_features, 512, 7, 7).transpose(2, 3, 1, 0).reshape(-1, out_features)
    elif value.ndim == 2:
      value = value.T  # torch Linear weight [O, I] -> [I, O] (x @ weight)
    node = params
    for key in path.split('/')[:-1]:
      node = node.setdefault(key, {})
    node[leaf] = np.ascontiguousarray(value)
  return params


def load_vgg16_weights(path: str | Path) -> dict:
  """Reads a torchvision-layout VGG16 state_dict `.pth` (numpy only) into `VGG16` params.

  Args:
    path: a `torch.save`d `vgg16().state_dict()` (zip or legacy format), e.g. torchvision's
      ImageNet weights from `VGG16_WEIGHTS_URL`.

  Returns:
    `VGG16` params (nested dict of float32 numpy arrays).

  Raises:
    FileNotFoundError: the file does not exist (the message says where to get one).
    ValueError: not a torch state_dict, or keys / shapes that do not fit (one line naming them).
  """
  state_dict = read_state_dict(
      path, 'VGG16 weights', f'pass a torchvision-layout VGG16 state_dict, e.g. '
      f'{VGG16_WEIGHTS_URL} (torchvision\'s ImageNet VGG16)')
  return vgg16_params_from_state_dict(state_dict, Path(path).name)
