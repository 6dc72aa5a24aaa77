"""Official StyleGAN2 weights -> sg2jax networks: the only place with NCHW/OIHW layouts.

Two official formats are read with numpy only (no torch, TensorFlow or official code):
- stylegan2-ada-pytorch snapshots (`network-snapshot-*.pkl`: a dict with G, D, G_ema), whose
  modules are `torch_utils.persistence` objects and tensors torch storages;
- original TF StyleGAN2 pickles (`stylegan2-*-config-*.pkl`: a tuple G, D, Gs of
  `dnnlib.tflib.network.Network` states holding TF variables).
Both go through ADA's `state_dict` names (TF names are renamed first, as ADA's legacy.py does),
then one function changes the layouts to sg2jax's:

| ADA entry | sg2jax | change |
|---|---|---|
| conv `weight [O, I, kh, kw]` | `weight [kh, kw, I, O]` | transpose (2, 3, 1, 0) |
| G `conv0` / `skip` weight (up=2) | same | also flipped spatially: ADA runs these as true convolutions, sg2jax correlates everywhere (REFERENCE.md §8.1) |
| dense `weight [O, I]` | `weight [I, O]` | transpose |
| D `b4.fc.weight` | `weight [16C, O]` | rows permuted from (c, h, w) to (h, w, c) order (NHWC flatten) |
| `synthesis.b4.const [C, 4, 4]` | `const [4, 4, C]` | transpose |
| `mapping.w_avg`, `*.noise_const` | `stats`, `buffers` collections | none |
| `*.resample_filter` | not stored | checked against the configured filter |
"""

import pickle
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from sg2jax import storage
from sg2jax.formats.official_growing import tf_growing_config, tf_growing_to_variables
from sg2jax.formats.torch_pickle import TorchReader, UnsafePickleError
from sg2jax.networks.weights import (NetworkWeights, abstract_variables, build_network,
                                     check_variables)
from sg2jax.ops.upfirdn import setup_filter

NETWORK_KEYS = ('G', 'D', 'G_ema')


# ----------------------------------------------------------------------------------------------
# ADA state_dict <-> sg2jax variables.

def _collection(leaf: str) -> str:
  return {'w_avg': 'stats', 'noise_const': 'buffers'}.get(leaf, 'params')


def ada_to_variables(state_dict: dict[str, np.ndarray], network: str,
                     resample_filter=(1, 3, 3, 1)) -> dict:
  """Turns an ADA `state_dict` (names -> raw arrays) into a sg2jax variables tree.

  Args:
    state_dict: ADA names (`mapping.fc0.weight`, `synthesis.b8.conv0.weight`, `b4.fc.weight`)
      to numpy arrays, raw as stored (no equalized-lr scaling applied).
    network: 'G' (Generator, incl. G_ema) or 'D' (Discriminator).
    resample_filter: the network's FIR taps; stored `resample_filter` buffers must equal it.

  Returns:
    `{'params': ..., 'stats': ..., 'buffers': ...}` nested dicts of float32 numpy arrays (the
    collections that the network has).
  """
  if network not in ('G', 'D'):
    raise ValueError(f"network must be 'G' or 'D', got {network!r}")
  expected_filter = setup_filter(resample_filter)
  variables: dict[str, dict] = {}
  for name, value in state_dict.items():
    value = np.asarray(value, dtype=np.float32)
    parts = name.split('.')
    leaf = parts[-1]
    if leaf == 'resample_filter':
      if value.shape != expected_filter.shape or not np.allclose(value, expected_filter):
        raise ValueError(f'{name} is not the FIR filter {list(resample_filter)}; set '
                         f'resample_filter to the taps this network was trained with')
      continue
    parent = parts[-2] if len(parts) > 1 else ''
    if leaf == 'weight' and value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
      if network == 'G' and parent in ('conv0', 'skip'):
        value = value[::-1, ::-1]  # ADA up=2 layers convolve; sg2jax correlates
    elif leaf == 'weight' and value.ndim == 2:
      value = value.T  # [O, I] -> [I, O]
      if network == 'D' and name == 'b4.fc.weight':
        cout = value.shape[1]
        c = value.shape[0] // 16
        value = value.reshape(c, 4, 4, cout).transpose(1, 2, 0, 3).reshape(16 * c, cout)
    elif leaf == 'const' and value.ndim == 3:
      value = value.transpose(1, 2, 0)  # [C, 4, 4] -> [4, 4, C]
    node = variables.setdefault(_collection(leaf), {})
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[leaf] = np.array(value, dtype=np.float32, order="C")
  return variables


# ----------------------------------------------------------------------------------------------
# Constructor arguments: ADA kwargs -> sg2jax config.

_IGNORED_ADA_KWARGS = {
    # Precision and memory layout: sg2jax runs float32 (as ADA with force_fp32=True) or its own
    # dtype policy; neither changes the weights.
    'num_fp16_res', 'fp16_channels_last', 'channels_last', 'use_fp16',
    # Training-only switches without effect on the forward pass.
    'freeze_layers',
}


def _take(kwargs: dict, where: str, allowed: set[str]) -> dict:
  unknown = sorted(set(kwargs) - allowed - _IGNORED_ADA_KWARGS)
  if unknown:
    raise ValueError(f'{where}: unsupported option(s) {", ".join(unknown)} in this pickle; '
                     f'sg2jax implements the StyleGAN2 networks of stylegan2-ada-pytorch')
  return {k: v for k, v in kwargs.items() if k not in _IGNORED_ADA_KWARGS}


def _check_activation(kwargs: dict, where: str) -> None:
  activation = kwargs.get('activation', 'lrelu')
  if activation != 'lrelu':
    raise ValueError(f'{where}: activation {activation!r} is not supported (only lrelu)')


def ada_generator_config(kwargs: dict) -> dict:
  """ADA `Generator(**kwargs)` arguments -> sg2jax `Generator` config."""
  kwargs = _take(dict(kwargs), 'Generator', {
      'z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'mapping_kwargs',
      'synthesis_kwargs'})
  mapping = _take(dict(kwargs.get('mapping_kwargs') or {}), 'Generator mapping_kwargs', {
      'num_layers', 'embed_features', 'layer_features', 'activation', 'lr_multiplier',
      'w_avg_beta'})
  synthesis = _take(dict(kwargs.get('synthesis_kwargs') or {}), 'Generator synthesis_kwargs', {
      'channel_base', 'channel_max', 'conv_clamp', 'architecture', 'resample_filter',
      'use_noise', 'activation', 'kernel_size'})
  _check_activation(mapping, 'Generator mapping_kwargs')
  _check_activation(synthesis, 'Generator synthesis_kwargs')
  if synthesis.get('kernel_size', 3) != 3:
    raise ValueError('Generator synthesis_kwargs: only kernel_size 3 is supported')
  if mapping.get('w_avg_beta', 0.995) is None:
    raise ValueError('Generator mapping_kwargs: w_avg_beta=None is not supported')
  config = {
      'class': 'Generator',
      'z_dim': int(kwargs['z_dim']),
      'c_dim': int(kwargs.get('c_dim', 0)),
      'w_dim': int(kwargs['w_dim']),
      'img_resolution': int(kwargs['img_resolution']),
      'img_channels': int(kwargs.get('img_channels', 3)),
      'mapping_layers': int(mapping.get('num_layers', 8)),
      'mapping_lr_multiplier': float(mapping.get('lr_multiplier', 0.01)),
      'embed_features': mapping.get('embed_features'),
      'layer_features': mapping.get('layer_features'),
      'w_avg_beta': float(mapping.get('w_avg_beta', 0.995)),
      'architecture': synthesis.get('architecture', 'skip'),
      'channel_base': int(synthesis.get('channel_base', 32768)),
      'channel_max': int(synthesis.get('channel_max', 512)),
      'conv_clamp': synthesis.get('conv_clamp'),
      'resample_filter': [float(t) for t in synthesis.get('resample_filter', [1, 3, 3, 1])],
      'use_noise': bool(synthesis.get('use_noise', True)),
  }
  return config


def ada_discriminator_config(kwargs: dict) -> dict:
  """ADA `Discriminator(**kwargs)` arguments -> sg2jax `Discriminator` config."""
  kwargs = _take(dict(kwargs), 'Discriminator', {
      'c_dim', 'img_resolution', 'img_channels', 'architecture', 'channel_base', 'channel_max',
      'conv_clamp', 'cmap_dim', 'block_kwargs', 'mapping_kwargs', 'epilogue_kwargs'})
  block = _take(dict(kwargs.get('block_kwargs') or {}), 'Discriminator block_kwargs', {
      'activation', 'resample_filter'})
  mapping = _take(dict(kwargs.get('mapping_kwargs') or {}), 'Discriminator mapping_kwargs', {
      'num_layers', 'embed_features', 'layer_features', 'activation', 'lr_multiplier'})
  epilogue = _take(dict(kwargs.get('epilogue_kwargs') or {}), 'Discriminator epilogue_kwargs', {
      'mbstd_group_size', 'mbstd_num_channels', 'activation'})
  for part, where in ((block, 'block_kwargs'), (mapping, 'mapping_kwargs'),
                      (epilogue, 'epilogue_kwargs')):
    _check_activation(part, f'Discriminator {where}')
  for key in ('embed_features', 'layer_features'):
    if mapping.get(key) is not None:
      raise ValueError(f'Discriminator mapping_kwargs: {key} is not supported')
  return {
      'class': 'Discriminator',
      'c_dim': int(kwargs.get('c_dim', 0)),
      'img_resolution': int(kwargs['img_resolution']),
      'img_channels': int(kwargs.get('img_channels', 3)),
      'architecture': kwargs.get('architecture', 'resnet'),
      'channel_base': int(kwargs.get('channel_base', 32768)),
      'channel_max': int(kwargs.get('channel_max', 512)),
      'conv_clamp': kwargs.get('conv_clamp'),
      'resample_filter': [float(t) for t in block.get('resample_filter', [1, 3, 3, 1])],
      'mbstd_group_size': epilogue.get('mbstd_group_size', 4),
      'mbstd_num_channels': int(epilogue.get('mbstd_num_channels', 1)),
      'cmap_dim': kwargs.get('cmap_dim'),
      'mapping_layers': int(mapping.get('num_layers', 8)),
      'mapping_lr_multiplier': float(mapping.get('lr_multiplier', 0.01)),
  }


# ----------------------------------------------------------------------------------------------
# TF StyleGAN2 variables -> ADA names (as ADA's legacy.py renames them).

_TF_G_RULES = [
    (r'mapping/Dense(\d+)/(weight|bias)', r'mapping.fc\1.\2'),
    (r'synthesis/4x4/Const/const', r'synthesis.b4.const'),
    (r'synthesis/4x4/Conv/(.*)', r'synthesis.b4.conv1.\1'),
    (r'synthesis/(\d+)x\1/Conv0_up/(.*)', r'synthesis.b\1.conv0.\2'),
    (r'synthesis/(\d+)x\1/Conv1/(.*)', r'synthesis.b\1.conv1.\2'),
    (r'synthesis/(\d+)x\1/ToRGB/(.*)', r'synthesis.b\1.torgb.\2'),
    (r'synthesis/(\d+)x\1/Skip/weight', r'synthesis.b\1.skip.weight'),
]
_TF_D_RULES = [
    (r'(\d+)x\1/FromRGB/(weight|bias)', r'b\1.fromrgb.\2'),
    (r'(\d+)x\1/Conv0/(weight|bias)', r'b\1.conv0.\2'),
    (r'(\d+)x\1/Conv1_down/(weight|bias)', r'b\1.conv1.\2'),
    (r'(\d+)x\1/Skip/weight', r'b\1.skip.weight'),
    (r'4x4/Conv/(weight|bias)', r'b4.conv.\1'),
    (r'4x4/Dense0/(weight|bias)', r'b4.fc.\1'),
    (r'Output/(weight|bias)', r'b4.out.\1'),
]
_TF_MOD_LEAVES = {'mod_weight': 'affine.weight', 'mod_bias': 'affine.bias'}


def tf_to_ada_state_dict(tf_vars: dict[str, np.ndarray], network: str) -> dict[str, np.ndarray]:
  """Renames TF StyleGAN2 variables (component-prefixed, `synthesis/8x8/Conv0_up/weight` or
  `G_synthesis/...`)
  to ADA `state_dict` entries, with ADA layouts (REFERENCE.md §8.1):
  conv HWIO -> OIHW, flipped for `Conv0_up` / G `Skip`; dense `[in, out]` -> `[out, in]`;
  `mod_bias + 1`; `noise{i}` -> the i-th layer's `noise_const`; `dlatent_avg` -> `w_avg`.
  Unknown variable names are an error that names them.
  """
  rules = _TF_G_RULES if network == 'G' else _TF_D_RULES
  out: dict[str, np.ndarray] = {}
  unknown = []
  for name, value in tf_vars.items():
    value = np.asarray(value, dtype=np.float32)
    name = re.sub(r'^G_(mapping|synthesis)/', r'\1/', name)  # Network.vars-style scope names
    if network == 'G' and name in ('lod', 'synthesis/lod'):
      continue  # progressive-growing level of detail; always 0 for configs E/F
    if network == 'G' and name == 'dlatent_avg':
      out['mapping.w_avg'] = value
      continue
    match = re.fullmatch(r'synthesis/noise(\d+)', name) if network == 'G' else None
    if match:
      i = int(match.group(1))
      res = 2 ** ((i + 5) // 2)
      layer = 'conv1' if i == 0 or i % 2 == 0 else 'conv0'
      out[f'synthesis.b{res}.{layer}.noise_const'] = value.reshape(value.shape[-2:])
      continue
    for pattern, replacement in rules:
      if re.fullmatch(pattern, name):
        ada = re.sub(pattern, replacement, name)
        break
    else:
      unknown.append(name)
      continue
    prefix, leaf = ada.rsplit('.', 1)
    ada = f'{prefix}.{_TF_MOD_LEAVES.get(leaf, leaf)}'
    if leaf == 'mod_bias':
      value = value + 1  # TF adds the 1 at run time; ADA stores it
    if ada.endswith('const'):
      value = value[0]  # [1, C, 4, 4] -> [C, 4, 4]
    elif value.ndim == 4:
      if network == 'G' and ('/Conv0_up/' in name or '/Skip/' in name):
        value = value[::-1, ::-1]  # TF correlates, ADA convolves for up=2 layers
      value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    elif value.ndim == 2:
      value = value.T  # [in, out] -> [out, in]
    out[ada] = np.array(value, dtype=np.float32, order="C")
  if unknown:
    raise ValueError(f'TF {network} variables not recognized as StyleGAN2 (configs E/F): '
                     f'{", ".join(sorted(unknown))}')
  return out


_TF_IGNORED_KWARGS = {
    'truncation_psi', 'truncation_cutoff', 'truncation_psi_val', 'truncation_cutoff_val',
    'style_mixing_prob', 'randomize_noise', 'is_template_graph', 'is_training', 'is_validation',
    'return_dlatents', 'components', 'mapping_func', 'synthesis_func', 'dlatent_broadcast',
    'structure', 'fused_modconv', 'dtype', 'num_fp16_res', 'conv_clamp',
}


def _tf_config(kwargs: dict, network: str) -> dict:
  kwargs = dict(kwargs)
  allowed = {'num_channels', 'resolution', 'label_size', 'fmap_base', 'fmap_max', 'fmap_min',
             'fmap_decay', 'architecture', 'nonlinearity', 'resample_kernel'}
  if network == 'G':
    allowed |= {'latent_size', 'dlatent_size', 'mapping_layers', 'mapping_fmaps',
                'mapping_lrmul', 'mapping_nonlinearity', 'normalize_latents',
                'dlatent_avg_beta'}
  else:
    allowed |= {'mbstd_group_size', 'mbstd_num_features'}
  unknown = sorted(set(kwargs) - allowed - _TF_IGNORED_KWARGS)
  if unknown:
    raise ValueError(f'TF {network}: unsupported option(s) {", ".join(unknown)}')
  if int(kwargs.get('label_size', 0)) != 0:
    raise ValueError('conditional TF StyleGAN2 pickles are not supported (their label '
                     'embedding differs from ADA\'s); convert with stylegan2-ada first')
  if float(kwargs.get('fmap_decay', 1.0)) != 1.0 or int(kwargs.get('fmap_min', 1)) > 1:
    raise ValueError(f'TF {network}: fmap_decay != 1 or fmap_min > 1 is not supported')
  for key in ('nonlinearity', 'mapping_nonlinearity'):
    if kwargs.get(key, 'lrelu') != 'lrelu':
      raise ValueError(f'TF {network}: {key}={kwargs[key]!r} is not supported (only lrelu)')
  if not kwargs.get('normalize_latents', True):
    raise ValueError('TF G: normalize_latents=False is not supported')
  common = {
      'img_resolution': int(kwargs.get('resolution', 1024)),
      'img_channels': int(kwargs.get('num_channels', 3)),
      'channel_base': 2 * int(kwargs.get('fmap_base', 16 << 10)),  # ADA channel_base = 2 fmap_base
      'channel_max': int(kwargs.get('fmap_max', 512)),
      'resample_filter': [float(t) for t in kwargs.get('resample_kernel', [1, 3, 3, 1])],
  }
  if network == 'G':
    w_dim = int(kwargs.get('dlatent_size', 512))
    return {
        'class': 'Generator', 'z_dim': int(kwargs.get('latent_size', 512)), 'c_dim': 0,
        'w_dim': w_dim, 'mapping_layers': int(kwargs.get('mapping_layers', 8)),
        'mapping_lr_multiplier': float(kwargs.get('mapping_lrmul', 0.01)),
        # TF's mapping default is 512 hidden features whatever dlatent_size is.
        'layer_features': int(kwargs.get('mapping_fmaps', 512)),
        'w_avg_beta': float(kwargs.get('dlatent_avg_beta', 0.995)),
        'architecture': kwargs.get('architecture', 'skip'), **common}
  return {
      'class': 'Discriminator', 'c_dim': 0, 'architecture': kwargs.get('architecture', 'resnet'),
      # TF's D default is 4 (ADA's legacy.py assumes None = the whole minibatch).
      'mbstd_group_size': kwargs.get('mbstd_group_size', 4),
      'mbstd_num_channels': int(kwargs.get('mbstd_num_features', 1)), **common}


# ----------------------------------------------------------------------------------------------
# The pickles.

class EasyDict(dict):
  """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access)."""

  def __getattr__(self, name: str) -> Any:
    try:
      return self[name]
    except KeyError:
      raise AttributeError(name) from None


class PersistentObject:
  """Stand-in for an ADA `torch_utils.persistence` object: its class name and `__dict__` state.

  The pickled `module_src` (the network's Python source) is kept as text and never executed.
  """

  def __init__(self, meta: Any):
    if not isinstance(meta, dict) or meta.get('type') != 'class' or 'state' not in meta:
      raise pickle.UnpicklingError('malformed persistent object')
    self.class_name = str(meta.get('class_name'))
    self.state = meta['state'] if isinstance(meta['state'], dict) else {}
    source = meta.get('module_src')
    self.module_src = source if isinstance(source, str) else ''


class TFNetworkState:
  """Stand-in for `dnnlib.tflib.network.Network`: keeps the pickled state dict."""

  def __setstate__(self, state: Any) -> None:
    if not isinstance(state, dict):
      raise pickle.UnpicklingError('malformed TF network state')
    self.state = state


_NETWORK_GLOBALS = {
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): PersistentObject,
    ('dnnlib.util', 'EasyDict'): EasyDict,
    ('dnnlib', 'EasyDict'): EasyDict,
    ('dnnlib.tflib.network', 'Network'): TFNetworkState,
}

# ADA's persistence records the bare class name (its module is the embedded source).
ADA_CLASSES = {'Generator': 'G', 'Discriminator': 'D'}


def _module_state_dict(obj: PersistentObject, prefix: str = '') -> dict[str, np.ndarray]:
  """torch `Module.state_dict()` order: own parameters, persistent buffers, then children."""
  state = obj.state
  out: dict[str, np.ndarray] = {}
  for name, value in (state.get('_parameters') or {}).items():
    if value is not None:
      out[prefix + name] = value
  skip = set(state.get('_non_persistent_buffers_set') or ())
  for name, value in (state.get('_buffers') or {}).items():
    if value is not None and name not in skip:
      out[prefix + name] = value
  for name, child in (state.get('_modules') or {}).items():
    if child is None:
      continue
    if not isinstance(child, PersistentObject):
      raise ValueError(f'submodule {prefix + name} is not a StyleGAN2 network module')
    out.update(_module_state_dict(child, f'{prefix}{name}.'))
  return out


def _check_config(config: dict, variables: dict, source: str) -> dict:
  network = build_network(config)
  check_variables(network, variables, source, abstract_variables(network))
  return config


def _is_stylegan3(obj: PersistentObject) -> bool:
  """StyleGAN3 generators have a `SynthesisInput` and layers named `L0_36_512`, not `b4`."""
  synthesis = (obj.state.get('_modules') or {}).get('synthesis')
  names = set((synthesis.state.get('_modules') or {}) if isinstance(synthesis, PersistentObject)
              else ())
  return ('input' in names or any(re.match(r'L\d+_', n) for n in names)
          or 'class SynthesisInput' in obj.module_src)


def ada_network_weights(obj: Any, key: str, source: str) -> NetworkWeights:
  """One ADA network object (as the restricted unpickler returns it) -> sg2jax config + variables."""
  if not isinstance(obj, PersistentObject):
    raise ValueError(f'{source}: {key} is not a network object')
  if _is_stylegan3(obj):
    raise ValueError(f'{source}: {key} is a StyleGAN3 network; sg2jax implements StyleGAN2 only '
                     f'(stylegan2-ada-pytorch snapshots or the TF StyleGAN2 release)')
  kind = ADA_CLASSES.get(obj.class_name)
  if kind is None:
    raise ValueError(f'{source}: {key} is a {obj.class_name}, not a StyleGAN2 Generator or '
                     f'Discriminator of stylegan2-ada-pytorch')
  if obj.state.get('_init_args'):
    raise ValueError(f'{source}: {key} was built with positional arguments; expected keywords')
  kwargs = dict(obj.state.get('_init_kwargs') or {})
  config = ada_generator_config(kwargs) if kind == 'G' else ada_discriminator_config(kwargs)
  variables = ada_to_variables(_module_state_dict(obj), kind, config['resample_filter'])
  return NetworkWeights(_check_config(config, variables, f'{source} [{key}]'), variables)


def _tf_variables(net: TFNetworkState, prefix: str = '') -> dict[str, np.ndarray]:
  out = {prefix + name: value for name, value in net.state.get('variables', [])}
  for name, component in (net.state.get('components') or {}).items():
    out.update(_tf_variables(component, f'{prefix}{name}/'))
  return out


def _tf_kind(func: str, synthesis_func: str) -> str:
  """TF build functions -> 'G' / 'D' (configs E/F, through ADA names) or a config A-D kind."""
  if func == 'G_main' and synthesis_func == 'G_synthesis_stylegan2':
    return 'G'
  if func == 'G_main' and synthesis_func == 'G_synthesis_stylegan_revised':
    return 'G_revised'
  if func == 'G_style' and synthesis_func == 'G_synthesis':
    return 'G_style'
  return {'D_stylegan2': 'D', 'D_stylegan': 'D_stylegan', 'D_basic': 'D_basic'}.get(func, '')


def tf_network_weights(net: Any, key: str, source: str) -> NetworkWeights:
  """One TF network state (G/D/Gs of a TF pickle) -> sg2jax config + variables."""
  if not isinstance(net, TFNetworkState):
    raise ValueError(f'{source}: {key} is not a TF network')
  func = net.state.get('build_func_name')
  components = net.state.get('components') or {}
  synthesis = components.get('synthesis')
  synthesis_func = synthesis.state.get('build_func_name') if synthesis is not None else None
  kind = _tf_kind(func, synthesis_func)
  if not kind:
    raise ValueError(f'{source}: {key} is built by {func}/{synthesis_func}, which is not a '
                     f'StyleGAN2 paper network (configs A-F: G_style, G_main with '
                     f'G_synthesis_stylegan2 or G_synthesis_stylegan_revised, D_basic, '
                     f'D_stylegan, D_stylegan2)')
  if int(net.state.get('version', 0)) < 4:
    raise ValueError(f'{source}: TF network pickle version {net.state.get("version")} is too '
                     f'old (StyleGAN2 writes version 4)')
  kwargs = dict(net.state.get('static_kwargs') or {})
  for component in components.values():
    for name, value in (component.state.get('static_kwargs') or {}).items():
      kwargs.setdefault(name, value)
  if kind in ('G', 'D'):
    config = _tf_config(kwargs, kind)
    state_dict = tf_to_ada_state_dict(_tf_variables(net), kind)
    variables = ada_to_variables(state_dict, kind, config['resample_filter'])
  else:
    config = tf_growing_config(kwargs, kind)
    variables = tf_growing_to_variables(_tf_variables(net), kind, config['img_resolution'])
  return NetworkWeights(_check_config(config, variables, f'{source} [{key}]'), variables)


def read_network_pickle(path: str | Path) -> Any:
  """Unpickles an official network file with the restricted unpickler (nothing is executed).

  ADA modules come back as `PersistentObject`, TF networks as `TFNetworkState`, tensors as numpy.
  """
  path = storage.as_path(path)
  source = path.name
  if not path.is_file():
    raise FileNotFoundError(f'network file {path} not found')
  with storage.open_read(path) as f:
    if f.read(2) == b'PK':
      raise ValueError(f'{source} is a zip file (e.g. a torch.save checkpoint), not a StyleGAN2 '
                       f'network pickle')
    f.seek(0)
    try:
      return TorchReader(_NETWORK_GLOBALS).unpickler(f, None, source).load()
    except UnsafePickleError:
      raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error) as e:
      raise ValueError(f'{source} is not a readable StyleGAN2 network pickle '
                       f'({type(e).__name__}: {e})') from None
    except MemoryError:
      raise ValueError(f'{source}: reading it ran out of memory; it is not a StyleGAN2 network '
                       f'pickle this machine can hold') from None


def load_official_pickle(path: str | Path) -> dict[str, NetworkWeights]:
  """Reads an official StyleGAN2 network pickle (ADA snapshot or TF release) with numpy only.

  Args:
    path: `network-snapshot-*.pkl` (stylegan2-ada-pytorch) or `stylegan2-*.pkl` (TF).

  Returns:
    `{'G': ..., 'D': ..., 'G_ema': ...}` (those present) of `NetworkWeights(config, variables)`.
    TF's `Gs` is returned as `G_ema`.

  Raises:
    UnsafePickleError: the pickle names a global outside the allow-list.
    ValueError: not a StyleGAN2 network pickle (with the reason), or keys/shapes do not fit.
  """
  source = storage.as_path(path).name
  data = read_network_pickle(path)
  if isinstance(data, dict) and any(k in data for k in NETWORK_KEYS):
    return {k: ada_network_weights(data[k], k, source)
            for k in NETWORK_KEYS if data.get(k) is not None}
  if isinstance(data, tuple) and len(data) == 3 and all(
      isinstance(n, TFNetworkState) for n in data):
    return {k: tf_network_weights(n, k, source) for k, n in zip(NETWORK_KEYS, data)}
  raise ValueError(f'{source} is not a StyleGAN2 network pickle: expected a stylegan2-ada-pytorch '
                   f'snapshot (dict with G, D, G_ema) or a TF StyleGAN2 tuple (G, D, Gs), got '
                   f'{type(data).__name__}')
