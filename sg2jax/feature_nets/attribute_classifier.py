"""The 40 CelebA-HQ attribute classifiers of linear separability (StyleGAN, REFERENCE.md §5.8).

NVIDIA released them as TF network pickles `celebahq-classifier-NN-NAME.pkl` (`CLASSIFIER_FILES`,
at `CLASSIFIER_URL`); they are read here with the restricted numpy-only unpickler
(`sg2jax.formats.official.read_network_pickle`), nothing of TF or of the pickle is executed.

What the pickles hold, as far as public sources show (no official source states it; the
pickles' `build_func_name` and `build_module_src` would settle it):
- a D-style network with two inputs (images, labels): the metric calls
  `classifier.get_output_for(images, None)` and TF's `Network` asserts the input count
  (NVlabs/stylegan `metrics/linear_separability.py:137`, `dnnlib/tflib/network.py:202`), one logit
  per image `[N, 1]`;
- StyleGAN's `D_basic` layers at 256x256 (NVlabs/stylegan `training/networks_stylegan.py:564-659`)
  with the minibatch-stddev layer disabled and `fmap_base` 8192: a third-party port that read the
  released pickles' weights names `FromRGB_lod0` [1,1,3,64], `256x256/Conv0`, `256x256/Conv1_down`
  ... `8x8/Conv1_down`, `4x4/Conv` [3,3,512,512] (512 inputs: no stddev channel),
  `4x4/Dense0` [8192,512], `4x4/Dense1` [512,1]; genforce's PyTorch port describes them as the
  StyleGAN discriminator (blur before the down-convolutions) without progressive growing and
  without minibatch stddev, at a fixed 256x256.

So the network is `D_basic` at lod 0, computed by sg2jax's config-A layers (`BasicDBlock`,
`BasicDHead`, tested against TF there). With `R = resolution`, `k = log2 R` and
`nf(s) = min(int(fmap_base / 2^(s fmap_decay)), fmap_max)`; equalized-lr weights, lrelu(0.2),
gain sqrt(2) in the weight scale (1 for the last layer):
1. `FromRGB_lod0`: 1x1 conv to `nf(k - 1)`, bias, lrelu.
2. For `r = R .. 8`: `{r}x{r}/Conv0` 3x3 conv to `nf(log2 r - 1)`; `{r}x{r}/Conv1_down` blur
   `[1,2,1]`, 3x3 conv, 2x2 mean (TF's fused stride-2 form from 128 up is the same
   computation) to `nf(log2 r - 2)`; each + bias, lrelu.
3. 4x4: [minibatch stddev, if the pickle has it], `Conv` 3x3 to `nf(1)`, `Dense0` to `nf(0)`
   (lrelu), `Dense1` to 1 logit.

Layouts: TF kernels are already HWIO / `[in, out]`; only `4x4/Dense0`'s rows change from NCHW
flatten order (c, h, w) to sg2jax's NHWC (h, w, c). `FromRGB_lod{l}` of the lower levels
(present when the network was built for progressive growing) are checked and dropped: at
`lod = 0` TF fades them in with weight 0.
"""

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.formats.official import TFNetworkState, read_network_pickle
from sg2jax.networks.layers import check_resolution
from sg2jax.networks.stylegan1 import BasicDBlock, BasicDHead

ATTRIBUTE_NAMES = (
    'male', 'smiling', 'attractive', 'wavy-hair', 'young', '5-o-clock-shadow', 'arched-eyebrows',
    'bags-under-eyes', 'bald', 'bangs', 'big-lips', 'big-nose', 'black-hair', 'blond-hair',
    'blurry', 'brown-hair', 'bushy-eyebrows', 'chubby', 'double-chin', 'eyeglasses', 'goatee',
    'gray-hair', 'heavy-makeup', 'high-cheekbones', 'mouth-slightly-open', 'mustache',
    'narrow-eyes', 'no-beard', 'oval-face', 'pale-skin', 'pointy-nose', 'receding-hairline',
    'rosy-cheeks', 'sideburns', 'straight-hair', 'wearing-earrings', 'wearing-hat',
    'wearing-lipstick', 'wearing-necklace', 'wearing-necktie')
CLASSIFIER_FILES = tuple(f'celebahq-classifier-{i:02d}-{name}.pkl'
                         for i, name in enumerate(ATTRIBUTE_NAMES))
# NVlabs/stylegan2 metrics/linear_separability.py:21-60 (stylegan2-ada has the same files under
# https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada/pretrained/metrics/).
CLASSIFIER_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/metrics/'

# Static kwargs of TF's D_basic that the classifier reads, and those without effect on its
# forward pass at lod 0 in float32 (`fused_scale` computes the same; `structure` only changes
# how the growing levels are wired; `dtype` is TF's activation dtype: sg2jax runs float32).
_READ_KWARGS = {'resolution', 'num_channels', 'label_size', 'fmap_base', 'fmap_decay',
                'fmap_max', 'nonlinearity', 'use_wscale', 'mbstd_group_size',
                'mbstd_num_features', 'blur_filter'}
_IGNORED_KWARGS = {'fused_scale', 'structure', 'dtype', 'is_template_graph', 'is_training',
                   'is_validation'}
# Build functions whose pickles are networks of another kind.
_OTHER_NETWORKS = {
    'D_stylegan2': 'a StyleGAN2 discriminator', 'D_stylegan': 'a StyleGAN2 config B-D '
    'discriminator', 'G_main': 'a generator', 'G_style': 'a generator', 'G_paper': 'a generator',
    'G_mapping': 'a mapping network', 'G_synthesis': 'a synthesis network',
    'G_synthesis_stylegan2': 'a synthesis network',
    'G_synthesis_stylegan_revised': 'a synthesis network'}
_PICKLE_VERSIONS = (2, 3, 4)  # what TF StyleGAN (2, 3) and StyleGAN2 (2, 3, 4) load


def feature_maps(stage: int, fmap_base: int, fmap_decay: float, fmap_max: int) -> int:
  """TF's `nf(stage) = min(int(fmap_base / 2^(stage * fmap_decay)), fmap_max)`."""
  return min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max)


class AttributeClassifier(nn.Module):
  """One CelebA-HQ attribute classifier: images `[N, R, R, C]` in `[-1, 1]` -> logits `[N, 1]`.

  TF `D_basic` at lod 0 without labels (module docstring). Params: `b{R}/fromrgb`,
  `b{r}/conv0`, `b{r}/conv1` (r = R .. 8), `b4/conv`, `b4/fc`, `b4/out`, each `weight`, `bias`.
  A minibatch-stddev layer (none in the released classifiers) groups the samples of the whole
  batch it is given, as `minibatch_stddev` without `batch_gpu`.
  """
  resolution: int = 256
  num_channels: int = 3
  fmap_base: int = 8192
  fmap_decay: float = 1.0
  fmap_max: int = 512
  mbstd_group_size: int = 0  # TF: a stddev layer only when > 1
  mbstd_num_features: int = 1
  blur_filter: Sequence[float] = (1, 2, 1)

  def nf(self, stage: int) -> int:
    return feature_maps(stage, self.fmap_base, self.fmap_decay, self.fmap_max)

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    r_max = self.resolution
    k = check_resolution(r_max, 'resolution')
    if images.ndim != 4 or images.shape[1:] != (r_max, r_max, self.num_channels):
      raise ValueError(f'attribute classifier expects images [N, {r_max}, {r_max}, '
                       f'{self.num_channels}] (NHWC), got {images.shape}')
    blocks = [BasicDBlock(self.nf(s - 1), self.nf(s - 2), tuple(self.blur_filter),
                          name=f'b{2 ** s}') for s in range(k, 2, -1)]
    mbstd = self.mbstd_num_features if self.mbstd_group_size > 1 else 0
    head = BasicDHead(self.nf(1), self.nf(0), self.mbstd_group_size, mbstd, name='b4')
    x = (blocks[0] if blocks else head).from_rgb(images.astype(jnp.float32))
    for block in blocks:
      x = block(x)
    return head(x)  # [N, 1]


# ----------------------------------------------------------------------------------------------
# Pickle -> module + variables.

def _config_from_kwargs(kwargs: dict, tf_vars: dict[str, np.ndarray], source: str) -> dict:
  """The module's fields from the pickle's static kwargs (TF D_basic defaults where absent);
  resolution, channels and the stddev layer are read from the variables when kwargs lack them."""
  unknown = sorted(set(kwargs) - _READ_KWARGS - _IGNORED_KWARGS)
  if unknown:
    raise ValueError(f'{source}: unsupported D option(s) {", ".join(unknown)}; sg2jax reads '
                     f'classifiers built like TF StyleGAN D_basic')
  if int(kwargs.get('label_size', 0)):
    raise ValueError(f'{source}: a conditional network (label_size {kwargs["label_size"]}), not '
                     f'an attribute classifier (one logit per image)')
  if kwargs.get('nonlinearity', 'lrelu') != 'lrelu' or not kwargs.get('use_wscale', True):
    raise ValueError(f'{source}: nonlinearity={kwargs.get("nonlinearity")!r}, use_wscale='
                     f'{kwargs.get("use_wscale")!r} is not supported (only lrelu, use_wscale)')
  levels = [int(m.group(1)) for m in map(re.compile(r'(\d+)x\1/').match, tf_vars) if m]
  rgb = tf_vars.get('FromRGB_lod0/weight')
  if not levels or rgb is None or np.ndim(rgb) != 4:
    raise ValueError(f'{source}: not an attribute classifier (no FromRGB_lod0/weight and '
                     f'{{r}}x{{r}}/ layers of a TF StyleGAN D_basic)')
  blur = kwargs.get('blur_filter', [1, 2, 1])
  config = {
      'resolution': int(kwargs.get('resolution', max(levels))),
      'num_channels': int(kwargs.get('num_channels', np.shape(rgb)[2])),
      'fmap_base': int(kwargs.get('fmap_base', 8192)),
      'fmap_decay': float(kwargs.get('fmap_decay', 1.0)),
      'fmap_max': int(kwargs.get('fmap_max', 512)),
      'blur_filter': tuple(float(t) for t in blur) if blur else (1.0,),
  }
  check_resolution(config['resolution'], f'{source}: resolution')
  nf1 = feature_maps(1, config['fmap_base'], config['fmap_decay'], config['fmap_max'])
  if 'mbstd_group_size' in kwargs:
    config['mbstd_group_size'] = int(kwargs['mbstd_group_size'] or 0)
    config['mbstd_num_features'] = int(kwargs.get('mbstd_num_features', 1))
  else:  # TF's default is 4; the released classifiers have no stddev channel (module docstring)
    conv = tf_vars.get('4x4/Conv/weight')
    extra = np.shape(conv)[2] - nf1 if conv is not None and np.ndim(conv) == 4 else 0
    config['mbstd_group_size'] = 4 if extra > 0 else 0
    config['mbstd_num_features'] = extra if extra > 0 else 1
  return config


def _tf_name(path: str) -> str:
  """sg2jax param path -> TF variable name (`b256/conv1/weight` -> `256x256/Conv1_down/weight`)."""
  block, layer, leaf = path.split('/')
  r = int(block[1:])
  if layer == 'fromrgb':
    return f'FromRGB_lod0/{leaf}'
  return f'{r}x{r}/' + {'conv0': 'Conv0', 'conv1': 'Conv1_down', 'conv': 'Conv', 'fc': 'Dense0',
                        'out': 'Dense1'}[layer] + f'/{leaf}'


def classifier_variables(tf_vars: dict[str, Any], module: AttributeClassifier,
                         source: str = 'classifier') -> dict:
  """TF variables of a classifier pickle -> `{'params': ...}` of `module`, every name and shape
  checked (one-line errors naming the unknown, missing and mis-shaped variables).

  Raises:
    ValueError: unknown, missing or mis-shaped variables, or `lod` != 0.
  """
  abstract = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(
      (1, module.resolution, module.resolution, module.num_channels), jnp.float32))['params']
  expected = {_tf_name('/'.join(k.key for k in path)): (path, tuple(leaf.shape))
              for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  k = check_resolution(module.resolution, 'resolution')
  for lod in range(1, k - 1):  # FromRGB of the lower levels: checked, then dropped
    c = module.nf(k - lod - 1)
    expected[f'FromRGB_lod{lod}/weight'] = (None, (1, 1, module.num_channels, c))
    expected[f'FromRGB_lod{lod}/bias'] = (None, (c,))
  params: dict = {}
  unknown, wrong = [], []
  for name, value in tf_vars.items():
    value = np.asarray(value, np.float32)
    if name == 'lod':
      if value.size != 1 or float(value.reshape(())) != 0.0:
        raise ValueError(f'{source}: lod = {value.reshape(-1).tolist()}: a snapshot taken '
                         f'while growing, not a full-resolution classifier')
      continue
    if name not in expected:
      unknown.append(name)
      continue
    path, shape = expected[name]
    if value.shape != shape:
      wrong.append(f'{name} {value.shape} (expected {shape})')
      continue
    if path is None:
      continue
    if name == '4x4/Dense0/weight':
      c = value.shape[0] // 16  # rows in NCHW flatten order (c, h, w) -> NHWC (h, w, c)
      value = value.reshape(c, 4, 4, -1).transpose(1, 2, 0, 3).reshape(16 * c, -1)
    node = params
    for key in path[:-1]:
      node = node.setdefault(key.key, {})
    node[path[-1].key] = np.array(value, np.float32, order='C')
  missing = sorted(n for n, (path, _) in expected.items() if path is not None and not _has(
      params, path))
  problems = []
  if unknown:
    problems.append(f'unknown variable(s) {", ".join(sorted(unknown))}')
  if missing:
    problems.append(f'missing variable(s) {", ".join(missing)}')
  if wrong:
    problems.append(f'wrong shape(s) {", ".join(wrong)}')
  if problems:
    raise ValueError(f'{source}: not a TF D_basic attribute classifier with '
                     f'{_describe(module)}: ' + '; '.join(problems))
  return {'params': params}


def _has(tree: dict, path) -> bool:
  for key in path:
    if not isinstance(tree, dict) or key.key not in tree:
      return False
    tree = tree[key.key]
  return True


def _describe(module: AttributeClassifier) -> str:
  mbstd = (f'minibatch stddev (group {module.mbstd_group_size})' if module.mbstd_group_size > 1
           else 'no minibatch stddev')
  return (f'resolution={module.resolution}, num_channels={module.num_channels}, fmap_base='
          f'{module.fmap_base}, fmap_decay={module.fmap_decay}, fmap_max={module.fmap_max}, '
          f'{mbstd}')


def classifier_config(module: AttributeClassifier) -> dict:
  """The module's architecture fields (what two classifiers must share to be stacked)."""
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ('parent', 'name')}


def load_attribute_classifier(path: str | Path) -> tuple[AttributeClassifier, dict]:
  """Reads one `celebahq-classifier-*.pkl` (TF network pickle) with numpy only.

  Args:
    path: the pickle.

  Returns:
    `(module, variables)`: an `AttributeClassifier` built from the pickle's static kwargs and
    `{'params': ...}` of float32 numpy arrays.

  Raises:
    FileNotFoundError: no such file.
    UnsafePickleError: the pickle names a global outside the allow-list.
    ValueError: not a classifier pickle (a G/D/Gs tuple, an ADA snapshot, a generator, a
      StyleGAN2 D, a conditional D), or variables that are unknown, missing or mis-shaped.
  """
  source = Path(path).name
  data = read_network_pickle(path)
  if isinstance(data, tuple) and data and all(isinstance(n, TFNetworkState) for n in data):
    raise ValueError(f'{source} holds {len(data)} TF networks (a G, D, Gs training pickle), not '
                     f'an attribute classifier (one network)')
  if not isinstance(data, TFNetworkState):
    raise ValueError(f'{source} is not a TF network pickle (got {type(data).__name__}); '
                     f'attribute classifiers are the celebahq-classifier-*.pkl files of '
                     f'{CLASSIFIER_URL}')
  state = data.state
  func = str(state.get('build_func_name'))
  if func in _OTHER_NETWORKS or func.startswith('G_'):
    raise ValueError(f'{source} is {_OTHER_NETWORKS.get(func, "a generator")} ({func}), not an '
                     f'attribute classifier')
  if state.get('version') not in _PICKLE_VERSIONS:
    raise ValueError(f'{source}: TF network pickle version {state.get("version")!r} is not one '
                     f'of {_PICKLE_VERSIONS}')
  if state.get('components'):
    raise ValueError(f'{source} has sub-networks ({", ".join(state["components"])}): not an '
                     f'attribute classifier')
  tf_vars = {str(name): value for name, value in state.get('variables') or []}
  config = _config_from_kwargs(dict(state.get('static_kwargs') or {}), tf_vars, source)
  module = AttributeClassifier(**config)
  return module, classifier_variables(tf_vars, module, source)


def load_attribute_classifiers(directory: str | Path,
                               files: Sequence[str] = CLASSIFIER_FILES,
                               ) -> list[tuple[AttributeClassifier, dict]]:
  """The 40 classifiers (`CLASSIFIER_FILES`, in the official attribute order) from a directory.

  Raises:
    FileNotFoundError: no such directory, or files missing (named, with where to get them).
    ValueError: a file is not a classifier (see `load_attribute_classifier`).
  """
  directory = Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f'attribute classifier directory {directory} not found; download '
                            f'the {len(files)} celebahq-classifier-*.pkl files from '
                            f'{CLASSIFIER_URL} into it')
  missing = [f for f in files if not (directory / f).is_file()]
  if missing:
    shown = ', '.join(missing[:3]) + (f' and {len(missing) - 3} more' if len(missing) > 3 else '')
    raise FileNotFoundError(f'{len(missing)} of {len(files)} attribute classifiers missing in '
                            f'{directory}: {shown}; download them from {CLASSIFIER_URL}<file>')
  return [load_attribute_classifier(directory / f) for f in files]
