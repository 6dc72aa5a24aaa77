"""sg2jax networks -> a TF StyleGAN2 network pickle, the format the official tools convert.

The file is what NVlabs/stylegan2 (TensorFlow) saved: the tuple `(G, D, Gs)` of
`dnnlib.tflib.network.Network` states holding TF variable names, TF layouts and the build
functions' static kwargs, numpy arrays only and no code. stylegan2-ada-pytorch's
`legacy.load_network_pkl` converts it to its `G`, `D` and `G_ema` (so its generate.py,
projector.py, calc_metrics.py and `train.py --resume` open it; stylegan3's legacy.py reads the
same fields, REFERENCE.md §8.7, not run here), and sg2jax reads it back with
`formats/official.py`. This module is the inverse of that reader: sg2jax paths -> TF names, with
these layout changes (REFERENCE.md §8.5):

| sg2jax | TF | change |
|---|---|---|
| conv `weight [kh, kw, I, O]` | `weight` | none: both correlate (1) |
| dense `weight [I, O]` | `weight` | none |
| `affine/weight`, `affine/bias` | `mod_weight`, `mod_bias` | `bias - 1` (2) |
| D `b4/fc/weight [16C, O]` | `4x4/Dense0/weight` | rows (h, w, c) -> (c, h, w) (3) |
| `synthesis/b4/const [4, 4, C]` | `4x4/Const/const` | `[1, C, 4, 4]` |
| `noise_const [H, W]` (`buffers`) | `synthesis/noise{j}` | `[1, 1, H, W]` (4) |
| `mapping/w_avg` (`stats`) | G `dlatent_avg` | none |

(1) sg2jax keeps kernels as TF does (REFERENCE.md §8.1); ADA's up=2 kernels are the flipped ones.
(2) TF adds the 1 at run time; sg2jax stores it. (3) TF flattens NCHW activations, sg2jax NHWC.
(4) j numbers the conv layers from 4x4: 0 at 4x4, then `2 log2(r) - 5` (conv0), `- 4` (conv1).

What the format cannot hold is refused with the reason (`exportable_config`): the progressive
networks of configs A-D (legacy.py converts configs E/F only), bfloat16 compute, a discriminator
the official code cannot run or runs differently. Conditional networks, `conv_clamp`,
`use_noise=False` and a non-default `w_avg_beta` are written under the keys legacy.py reads;
sg2jax's own TF reader takes the plain unconditional networks only (it ignores `conv_clamp` and
refuses the other three), so those files are for the official tools.
"""

import contextlib
import importlib
import io
import os
import pickle
import re
import secrets
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sg2jax import storage
from sg2jax.formats.official import _TF_MOD_LEAVES, NETWORK_KEYS
from sg2jax.networks.layers import channels_at
from sg2jax.networks.synthesis import num_ws_for
from sg2jax.networks.weights import (NetworkWeights, build_network, flatten_variables,
                                     network_config)

PICKLE_PROTOCOL = 4  # what TF StyleGAN2 wrote (HIGHEST_PROTOCOL of Python 3.6/3.7); >= 2 needed
NETWORK_VERSION = 4  # TF `Network` state version; legacy.py refuses < 4
TF_NAMES = {'G': 'G', 'D': 'D', 'G_ema': 'Gs'}  # sg2jax name -> the TF tuple entry's name
# The build functions of NVlabs/stylegan2 (training/networks_stylegan2.py) that made these
# networks; sg2jax's reader dispatches on them.
BUILD_FUNCS = {'G': 'G_main', 'mapping': 'G_mapping', 'synthesis': 'G_synthesis_stylegan2',
               'D': 'D_stylegan2'}
# TF stored the source of the build module here and executed it on loading; sg2jax writes a
# comment instead (legacy.py and sg2jax's reader never read it).
BUILD_MODULE_SRC = ('# Weights written by sg2jax.export, without code. The networks are those\n'
                    '# of the build functions G_main, G_mapping, G_synthesis_stylegan2 and\n'
                    '# D_stylegan2 of NVlabs/stylegan2 (training/networks_stylegan2.py).\n')
DEFAULT_W_AVG_BETA = 0.995  # legacy.py's default; sg2jax's reader knows no key for other values

# sg2jax leaf `affine/weight` -> TF `mod_weight` (the reader's table, read the other way).
_MOD_LEAVES = {ada.replace('.', '/'): tf for tf, ada in _TF_MOD_LEAVES.items()}
_PROGRESSIVE_CLASSES = ('StyleGenerator', 'ProgressiveGenerator', 'BasicDiscriminator',
                        'ProgressiveDiscriminator')


# ----------------------------------------------------------------------------------------------
# What can be exported, and the static kwargs that rebuild it (REFERENCE.md §8.4, §8.6).

def exportable_config(name: str, config: dict) -> dict:
  """The full config (every field, defaults included) of network `name` (G, D or G_ema), or a
  one-line ValueError saying why the official code could not rebuild the same function from the
  TF format."""
  expected = 'Discriminator' if name == 'D' else 'Generator'
  cls = config.get('class')
  if cls in _PROGRESSIVE_CLASSES:
    raise ValueError(f'{name} is a {cls} (configs A-D, progressive growing); the official '
                     f'legacy.py converts StyleGAN2 configs E/F only, so it cannot be exported')
  if cls != expected:
    raise ValueError(f'{name} is a {cls}, not a {expected}; only StyleGAN2 networks (configs E/F) '
                     f'can be exported')
  config = network_config(build_network(config))  # a stored config may omit default fields
  if config.get('dtype', 'float32') != 'float32':
    raise ValueError(f'{name} computes in {config["dtype"]}; the TF format has no such setting '
                     f'and the official code would run it in float32, so it cannot be exported '
                     f'faithfully')
  if int(config['channel_base']) % 2:
    raise ValueError(f'{name}: channel_base {config["channel_base"]} is odd; the TF format stores '
                     f'fmap_base = channel_base / 2')
  if name == 'D' and int(config['img_resolution']) == 4:
    raise ValueError('D: the official discriminator cannot run at resolution 4 (its epilogue '
                     'has no input without a block above it), so it cannot be exported')
  if name == 'D' and config['architecture'] == 'skip' and config.get('conv_clamp') is not None:
    raise ValueError(f'D: architecture skip with conv_clamp {config["conv_clamp"]}: sg2jax clamps '
                     f'the 4x4 FromRGB layer, the official epilogue does not, so the official D '
                     f'would compute a different function; it cannot be exported')
  return config


def _taps(resample_filter) -> list:
  return [int(t) if float(t).is_integer() else float(t) for t in resample_filter]


def _common_kwargs(config: dict) -> dict:
  kwargs = {
      'num_channels': int(config['img_channels']),
      'resolution': int(config['img_resolution']),
      'label_size': int(config['c_dim']),
      'fmap_base': int(config['channel_base']) // 2,  # ADA channel_base = 2 * TF fmap_base
      'fmap_max': int(config['channel_max']),
      'architecture': str(config['architecture']),
      'resample_kernel': _taps(config['resample_filter']),
  }
  if config.get('conv_clamp') is not None:
    kwargs['conv_clamp'] = float(config['conv_clamp'])
  return kwargs


def generator_kwargs(config: dict) -> dict:
  """The static kwargs of a sg2jax `Generator` config, under the names legacy.py reads.

  `mapping_fmaps` is always written: TF's default is 512 hidden features, ADA's is `w_dim`.
  `label_fmaps`, `use_noise` and `w_avg_beta` are written only when they matter (conditional,
  no noise, a beta other than 0.995), since sg2jax's TF reader refuses those keys.
  """
  w_dim = int(config['w_dim'])
  kwargs = {
      'latent_size': int(config['z_dim']),
      'dlatent_size': w_dim,
      **_common_kwargs(config),
      'mapping_layers': int(config['mapping_layers']),
      'mapping_fmaps': int(config.get('layer_features') or w_dim),
      'mapping_lrmul': float(config['mapping_lr_multiplier']),
  }
  if int(config['c_dim']) > 0:
    kwargs['label_fmaps'] = int(config.get('embed_features') or w_dim)
  if not config.get('use_noise', True):
    kwargs['use_noise'] = False
  if float(config['w_avg_beta']) != DEFAULT_W_AVG_BETA:
    kwargs['w_avg_beta'] = float(config['w_avg_beta'])
  return kwargs


def discriminator_kwargs(config: dict) -> dict:
  """The static kwargs of a sg2jax `Discriminator` config, under the names legacy.py reads.

  `mbstd_group_size` is always written: when it is absent, legacy.py groups the whole minibatch,
  TF groups 4 (REFERENCE.md §8.4). The label mapping's keys are written for conditional
  networks only (sg2jax's TF reader refuses them).
  """
  group = config.get('mbstd_group_size')
  kwargs = {
      **_common_kwargs(config),
      'mbstd_group_size': None if group is None else int(group),
      'mbstd_num_features': int(config['mbstd_num_channels']),
  }
  if int(config['c_dim']) > 0:
    cmap_dim = config.get('cmap_dim')
    channels = channels_at(4, int(config['channel_base']), int(config['channel_max']))
    kwargs['mapping_layers'] = int(config['mapping_layers'])
    # legacy.py reads mapping_fmaps as cmap_dim and as the label mapping's widths, which in
    # sg2jax (and ADA) are cmap_dim too.
    kwargs['mapping_fmaps'] = int(channels if cmap_dim is None else cmap_dim)
    kwargs['mapping_lrmul'] = float(config['mapping_lr_multiplier'])
  return kwargs


# ----------------------------------------------------------------------------------------------
# Variables: sg2jax paths -> TF names and layouts.

# (sg2jax path pattern, TF name template); first match wins, `\1` from the pattern.
_G_RULES = [
    (r'stats/mapping/w_avg', 'dlatent_avg'),
    (r'params/mapping/fc(\d+)/(weight|bias)', r'mapping/Dense\1/\2'),
    (r'params/mapping/embed/(weight|bias)', r'mapping/LabelEmbed/\1'),
    (r'params/synthesis/b4/const', 'synthesis/4x4/Const/const'),
    (r'params/synthesis/b4/conv1/(.*)', r'synthesis/4x4/Conv/\1'),
    (r'params/synthesis/b(\d+)/conv0/(.*)', r'synthesis/\1x\1/Conv0_up/\2'),
    (r'params/synthesis/b(\d+)/conv1/(.*)', r'synthesis/\1x\1/Conv1/\2'),
    (r'params/synthesis/b(\d+)/torgb/(.*)', r'synthesis/\1x\1/ToRGB/\2'),
    (r'params/synthesis/b(\d+)/skip/weight', r'synthesis/\1x\1/Skip/weight'),
]
_D_RULES = [
    (r'params/b(\d+)/fromrgb/(weight|bias)', r'\1x\1/FromRGB/\2'),
    (r'params/b4/conv/(weight|bias)', r'4x4/Conv/\1'),
    (r'params/b4/fc/(weight|bias)', r'4x4/Dense0/\1'),
    (r'params/b4/out/(weight|bias)', r'Output/\1'),
    (r'params/b(\d+)/conv0/(weight|bias)', r'\1x\1/Conv0/\2'),
    (r'params/b(\d+)/conv1/(weight|bias)', r'\1x\1/Conv1_down/\2'),
    (r'params/b(\d+)/skip/weight', r'\1x\1/Skip/weight'),
    (r'params/mapping/embed/(weight|bias)', r'LabelEmbed/\1'),
    (r'params/mapping/fc(\d+)/(weight|bias)', r'Mapping\1/\2'),
]


def _noise_index(resolution: int, layer: str) -> int:
  """TF numbers the noise inputs by conv layer: 4x4 conv 0, then conv0 / conv1 of each block
  (ADA legacy.py: `noise{2 log2(r) - 5}` and `noise{2 log2(r) - 4}`)."""
  k = resolution.bit_length() - 1  # log2
  return 0 if resolution == 4 else 2 * k - 5 + (layer == 'conv1')


def _tf_name(path: str, rules: list) -> str:
  for pattern, template in rules:
    if re.fullmatch(pattern, path):
      name = re.sub(pattern, template, path)
      for leaf, tf_leaf in _MOD_LEAVES.items():
        if name.endswith('/' + leaf):
          name = name[:-len(leaf)] + tf_leaf
      return name
  raise ValueError(f'variable {path} has no TF StyleGAN2 name; this network cannot be exported')


def _float32(value: Any) -> np.ndarray:
  """A C-contiguous float32 ndarray (0-d stays 0-d: TF scalars are 0-d arrays, not numpy
  scalar objects)."""
  return np.array(value, dtype=np.float32, order='C')


def tf_variables(name: str, variables: dict) -> dict[str, np.ndarray]:
  """One network's sg2jax variables -> `{TF name: array}` in TF layouts (the table above).

  Args:
    name: 'G' or 'G_ema' (a `Generator`) or 'D' (a `Discriminator`).
    variables: its `{'params': ..., 'stats': ..., 'buffers': ...}` tree.

  Returns:
    G: names relative to the G network (`dlatent_avg`, `mapping/Dense0/weight`,
    `synthesis/noise0`, `synthesis/8x8/Conv0_up/mod_bias`, ...); D: relative to D
    (`32x32/FromRGB/weight`, `4x4/Dense0/weight`, `Output/bias`, ...).
  """
  generator = name != 'D'
  out = {}
  for path, value in flatten_variables(variables).items():
    value = _float32(value)
    noise = re.fullmatch(r'buffers/synthesis/b(\d+)/(conv[01])/noise_const', path)
    if generator and noise:
      j = _noise_index(int(noise.group(1)), noise.group(2))
      out[f'synthesis/noise{j}'] = value[None, None]  # [H, W] -> [1, 1, H, W]
      continue
    tf_name = _tf_name(path, _G_RULES if generator else _D_RULES)
    if tf_name.endswith('/mod_bias'):
      value = value - np.float32(1)  # sg2jax stores the affine bias with TF's run-time + 1
    elif tf_name.endswith('/Const/const'):
      value = value.transpose(2, 0, 1)[None]  # [4, 4, C] -> [1, C, 4, 4]
    elif tf_name == '4x4/Dense0/weight':
      c = value.shape[0] // 16
      # Rows (h, w, c) -> (c, h, w): TF flattens NCHW activations.
      value = value.reshape(4, 4, c, -1).transpose(2, 0, 1, 3).reshape(16 * c, -1)
    out[tf_name] = _float32(value)
  return out


def _in_tf_order(variables: dict[str, np.ndarray], descending: bool = False) -> list:
  """`(name, array)` pairs in TF's order: noise inputs, then the blocks by resolution (D:
  highest first), then the rest (the mapping layers by index, D's Output)."""
  def key(name: str) -> tuple:
    noise = re.fullmatch(r'noise(\d+)', name)
    if noise:
      return (0, int(noise.group(1)), '')
    block = re.match(r'(\d+)x\1/', name)
    if block:
      return (1, -int(block.group(1)) if descending else int(block.group(1)), name)
    number = re.search(r'(\d+)/', name)
    return (2, int(number.group(1)) if number else -1, name)
  return sorted(variables.items(), key=lambda item: key(item[0]))


# ----------------------------------------------------------------------------------------------
# TF `Network` states and the pickle.

class Network:
  """What TF's `dnnlib.tflib.network.Network` pickles as: the class's global name and a state
  dict (`Network.__getstate__`, TF2 dnnlib/tflib/network.py). The official loader maps that name
  to a dict-like stub and reads the state as its attributes."""
  __module__ = 'dnnlib.tflib.network'

  def __init__(self, state: dict):
    self.state = state

  def __getstate__(self) -> dict:
    return self.state


def _network(name: str, build_func: str, static_kwargs: dict, variables: list,
             components: dict) -> Network:
  return Network({
      'version': NETWORK_VERSION,
      'name': name,
      'static_kwargs': static_kwargs,
      'components': components,
      'build_module_src': BUILD_MODULE_SRC,
      'build_func_name': build_func,
      'variables': variables,
  })


def tf_generator(tf_name: str, config: dict, variables: dict) -> Network:
  """A sg2jax Generator as TF's `G` / `Gs`: G_main with the components `mapping` and `synthesis`."""
  kwargs = generator_kwargs(config)
  parts: dict[str, dict] = {'': {}, 'mapping': {}, 'synthesis': {}}
  for name, value in tf_variables('G', variables).items():
    component, _, rest = name.partition('/')
    if component in ('mapping', 'synthesis'):
      parts[component][rest] = value
    else:
      parts[''][name] = value
  mapping = _network('G_mapping', BUILD_FUNCS['mapping'],
                     dict(kwargs, dlatent_broadcast=num_ws_for(int(config['img_resolution']))),
                     _in_tf_order(parts['mapping']), {})
  synthesis = _network('G_synthesis', BUILD_FUNCS['synthesis'], dict(kwargs),
                       _in_tf_order(parts['synthesis']), {})
  # TF's G keeps the level of detail of progressive growing; always 0 for configs E/F.
  own = [('lod', _float32(0.0))] + _in_tf_order(parts[''])
  return _network(tf_name, BUILD_FUNCS['G'], kwargs, own,
                  {'mapping': mapping, 'synthesis': synthesis})


def tf_discriminator(config: dict, variables: dict) -> Network:
  """A sg2jax Discriminator as TF's `D` (D_stylegan2, no components)."""
  return _network('D', BUILD_FUNCS['D'], discriminator_kwargs(config),
                  _in_tf_order(tf_variables('D', variables), descending=True), {})


def tf_networks(networks: dict[str, NetworkWeights]) -> tuple[Network, Network, Network]:
  """`{'G', 'D', 'G_ema'}` -> the TF tuple `(G, D, Gs)`, after `exportable_config` on each."""
  missing = [name for name in NETWORK_KEYS if name not in networks]
  if missing:
    raise ValueError(f'the TF format holds G, D and G_ema together; this source has no '
                     f'{", ".join(missing)} (found {", ".join(sorted(networks)) or "nothing"})')
  configs = {name: exportable_config(name, networks[name].config) for name in NETWORK_KEYS}
  return (tf_generator(TF_NAMES['G'], configs['G'], networks['G'].variables),
          tf_discriminator(configs['D'], networks['D'].variables),
          tf_generator(TF_NAMES['G_ema'], configs['G_ema'], networks['G_ema'].variables))


@contextlib.contextmanager
def _pickling_names() -> Iterator[None]:
  """While it is open, pickle writes the globals the official loader's environment resolves.

  - `dnnlib.tflib.network.Network`: pickle looks a class up by its module name before naming it,
    so stub modules `dnnlib`, `dnnlib.tflib`, `dnnlib.tflib.network` stand in sys.modules
    (REFERENCE.md §8.6); whatever was there before comes back afterwards.
  - numpy >= 2 names its array constructor `numpy._core.multiarray._reconstruct`, which numpy <
    1.26.1 (the stylegan2-ada era) cannot import (github.com/numpy/numpy/issues/28340); the same
    function is still `numpy.core.multiarray._reconstruct` in numpy 2, the name numpy 1.x writes,
    so it carries that name while pickling (REFERENCE.md §8.6).
  Both change process-wide state for the duration: do not pickle in other threads meanwhile.
  """
  stub = types.ModuleType('dnnlib.tflib.network')
  stub.Network = Network
  modules = {'dnnlib': types.ModuleType('dnnlib'), 'dnnlib.tflib': types.ModuleType('dnnlib.tflib'),
             'dnnlib.tflib.network': stub}
  saved = {name: sys.modules.get(name) for name in modules}
  reconstruct = np.ndarray.__reduce__(np.zeros(1, np.float32))[0]
  module = reconstruct.__module__
  try:  # how pickle looks the name up (`from numpy.core import ...` would warn on numpy 2)
    legacy_multiarray = importlib.import_module('numpy.core.multiarray')
    rename = getattr(legacy_multiarray, '_reconstruct', None) is reconstruct
  except ImportError:  # a numpy without the old name: keep the current one
    rename = False
  sys.modules.update(modules)
  if rename:
    reconstruct.__module__ = 'numpy.core.multiarray'
  try:
    yield
  finally:
    if rename:
      reconstruct.__module__ = module
    for name, previous in saved.items():
      if previous is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = previous


def check_output(path: str | Path, overwrite: bool = False) -> Path:
  """`path` (absolute) if a pickle may be written there; else FileExistsError (it exists and not
  `overwrite`) or ValueError (it is a folder)."""
  path = storage.absolute(path)
  if path.is_dir():
    raise ValueError(f'--out {path} is a folder; pass a file name such as {path / "network.pkl"}')
  if path.exists() and not overwrite:
    raise FileExistsError(f'{path} already exists; choose a new file name or pass --overwrite')
  return path


def write_tf_pickle(networks: dict[str, NetworkWeights], path: str | Path,
                    overwrite: bool = False) -> Path:
  """Writes G, D and G_ema as a TF StyleGAN2 network pickle `(G, D, Gs)` at `path`.

  The file is written under a temporary name in the same folder and renamed when complete, so
  an interrupted export never leaves a partial file under `path`.

  Args:
    networks: `{'G': ..., 'D': ..., 'G_ema': ...}` of `NetworkWeights` (`checkpoint.load_networks`).
    path: the `.pkl` to write; its folder is created.
    overwrite: replace an existing file at `path`.

  Returns:
    `path`, absolute.

  Raises:
    FileExistsError: `path` exists and `overwrite` is False.
    ValueError: a network the format cannot express (`exportable_config`), a missing network, or
      `path` is a folder (`check_output`).
  """
  path = check_output(path, overwrite)
  data = tf_networks(networks)
  if storage.is_remote(path):  # one upload: the object appears only when complete
    buffer = io.BytesIO()
    with _pickling_names():
      pickle.dump(data, buffer, protocol=PICKLE_PROTOCOL)
    storage.write_bytes(path, buffer.getvalue())
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  # A new file (permissions as any file the user creates), renamed over `path` when complete.
  temporary = path.parent / f'.{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp'
  try:
    with open(temporary, 'xb') as f:
      with _pickling_names():
        pickle.dump(data, f, protocol=PICKLE_PROTOCOL)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    temporary.unlink(missing_ok=True)
    raise
  return path
