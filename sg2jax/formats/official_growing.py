"""TF pickles of configs A-D (progressive growing) -> sg2jax networks.

The paper released `stylegan2-{ffhq,car}-config-{a..d}.pkl`: config A is the original StyleGAN
(`G_style` + `D_basic`), B-D `G_main` with `G_synthesis_stylegan_revised` + `D_stylegan`. ADA's
converter does not read them; these rules map their TF variable names straight to sg2jax trees
(`networks/stylegan1.py`, `networks/progressive.py`). TF layouts are already HWIO / `[in, out]`;
what changes: the constant `[1, C, 4, 4] -> [4, 4, C]`, noise `[1, 1, H, W] -> [H, W]`, the rows
of D's first dense layer (NCHW flatten -> NHWC), and StyleGAN2's `mod_bias + 1`. TF's fused
up-convs of StyleGAN (outputs >= 128) keep their stored kernel; the layer flips it (see
`StyleLayer`).
"""

import re

import numpy as np

# (TF name pattern, sg2jax path template), first match wins. Noise, `dlatent_avg` and the
# `ToRGB_lod{l}` / `FromRGB_lod{l}` levels (resolution `R >> l`) are resolved in the function.
_BD_G_RULES = [
    (r'mapping/Dense(\d+)/(weight|bias)', r'mapping/fc\1/\2'),
    (r'synthesis/4x4/Const/const', 'synthesis/b4/const'),
    (r'synthesis/4x4/Conv/(.*)', r'synthesis/b4/conv1/\1'),
    (r'synthesis/(\d+)x\1/Conv0_up/(.*)', r'synthesis/b\1/conv0/\2'),
    (r'synthesis/(\d+)x\1/Conv1/(.*)', r'synthesis/b\1/conv1/\2'),
]
# Config A also has an epilogue on the constant (`Const/const` itself matches the rule above).
_A_G_RULES = _BD_G_RULES + [(r'synthesis/4x4/Const/(.*)', r'synthesis/b4/conv0/\1')]
_D_RULES = [
    (r'(\d+)x\1/Conv0/(weight|bias)', r'b\1/conv0/\2'),
    (r'(\d+)x\1/Conv1_down/(weight|bias)', r'b\1/conv1/\2'),
    (r'4x4/Conv/(weight|bias)', r'b4/conv/\1'),
    (r'4x4/Dense0/(weight|bias)', r'b4/fc/\1'),
    (r'4x4/Dense1/(weight|bias)', r'b4/out/\1'),
    (r'Output/(weight|bias)', r'b4/out/\1'),
]
_LEAVES = {'Noise/weight': 'noise_weight', 'StyleMod/weight': 'style/weight',
           'StyleMod/bias': 'style/bias', 'mod_weight': 'affine/weight',
           'mod_bias': 'affine/bias'}


def _normalize_name(name: str) -> str:
  """Component scopes as `Network.vars` names them (`G_mapping/`) or as pickles do (`mapping/`)."""
  return re.sub(r'^G_(mapping|synthesis)/', r'\1/', name)


def _set(tree: dict, path: str, value: np.ndarray) -> None:
  parts = path.split('/')
  for part in parts[:-1]:
    tree = tree.setdefault(part, {})
  tree[parts[-1]] = np.array(value, dtype=np.float32, order='C')


def tf_growing_to_variables(tf_vars: dict[str, np.ndarray], kind: str,
                            img_resolution: int) -> dict:
  """TF variables of a config A-D network -> sg2jax variables.

  Args:
    tf_vars: name -> value (`G_mapping/Dense0/weight` or `mapping/Dense0/weight` style).
    kind: 'G_style', 'D_basic' (config A), 'G_revised', 'D_stylegan' (configs B-D).
    img_resolution: R (resolves `ToRGB_lod{l}` / `FromRGB_lod{l}` to resolution `R >> l`).

  Returns:
    `{'params': ..., 'stats': ..., 'buffers': ...}` (what the network has).

  Raises:
    ValueError: names that are not variables of that network.
  """
  is_g = kind in ('G_style', 'G_revised')
  rules = {'G_style': _A_G_RULES, 'G_revised': _BD_G_RULES}.get(kind, _D_RULES)
  out: dict = {}
  unknown = []
  for raw_name, value in tf_vars.items():
    name = _normalize_name(raw_name)
    value = np.asarray(value, np.float32)
    if name in ('lod', 'synthesis/lod'):
      continue  # progressive-growing state, set by the training schedule
    if is_g and name == 'dlatent_avg':
      _set(out.setdefault('stats', {}), 'mapping/w_avg', value)
      continue
    match = re.fullmatch(r'synthesis/noise(\d+)', name) if is_g else None
    if match:
      i = int(match.group(1))
      if kind == 'G_style':  # two layers per level, from 4x4: layer i at 2^(i//2 + 2)
        res, layer = 2 ** (i // 2 + 2), f'conv{i % 2}'
      else:  # one layer at 4x4, then two: layer i at 2^((i+5)//2)
        res = 2 ** ((i + 5) // 2)
        layer = 'conv1' if i == 0 or i % 2 == 0 else 'conv0'
      _set(out.setdefault('buffers', {}), f'synthesis/b{res}/{layer}/noise_const',
           value.reshape(value.shape[-2:]))
      continue
    match = re.fullmatch(r'(synthesis/)?(ToRGB|FromRGB)_lod(\d+)/(.*)', name)
    if match:
      res = img_resolution >> int(match.group(3))
      prefix = 'synthesis/' if is_g else ''
      path = f'{prefix}b{res}/{match.group(2).lower()}/{match.group(4)}'
    else:
      for pattern, template in rules:
        if re.fullmatch(pattern, name):
          path = re.sub(pattern, template, name)
          break
      else:
        unknown.append(raw_name)
        continue
    for tf_leaf, leaf in _LEAVES.items():
      if path.endswith('/' + tf_leaf):
        path = path[:-len(tf_leaf)] + leaf
    if path.endswith('affine/bias'):
      value = value + 1  # TF adds the 1 at run time; sg2jax stores it (as ADA)
    if path.endswith('const'):
      value = value[0].transpose(1, 2, 0)  # [1, C, 4, 4] -> [4, 4, C]
    if path == 'b4/fc/weight':
      c = value.shape[0] // 16  # rows in NCHW flatten order (c, h, w) -> (h, w, c)
      value = value.reshape(c, 4, 4, -1).transpose(1, 2, 0, 3).reshape(16 * c, -1)
    _set(out.setdefault('params', {}), path, value)
  if unknown:
    raise ValueError(f'TF {kind} variables not recognized: {", ".join(sorted(unknown))}')
  return out


_COMMON = {'num_channels', 'resolution', 'label_size', 'fmap_base', 'fmap_max', 'fmap_min',
           'fmap_decay', 'nonlinearity', 'dtype', 'structure', 'is_template_graph',
           'use_wscale', 'fused_scale', 'is_training', 'is_validation', 'components',
           'truncation_psi', 'truncation_cutoff', 'truncation_psi_val', 'truncation_cutoff_val',
           'style_mixing_prob', 'randomize_noise', 'return_dlatents', 'mapping_func',
           'synthesis_func', 'dlatent_broadcast', 'fused_modconv', 'num_fp16_res', 'conv_clamp'}
# Switches of the TF code whose non-default values these networks do not implement.
_REQUIRED_DEFAULTS = {'use_styles': True, 'const_input_layer': True, 'use_pixel_norm': False,
                      'use_instance_norm': True, 'normalize_latents': True, 'use_wscale': True,
                      'nonlinearity': 'lrelu', 'mapping_nonlinearity': 'lrelu',
                      'fmap_decay': 1.0, 'label_size': 0}


def tf_growing_config(kwargs: dict, kind: str) -> dict:
  """TF static kwargs of a config A-D network -> sg2jax network config."""
  allowed = _COMMON | set(_REQUIRED_DEFAULTS) | {
      'latent_size', 'dlatent_size', 'mapping_layers', 'mapping_fmaps', 'mapping_lrmul',
      'dlatent_avg_beta', 'use_noise', 'blur_filter', 'resample_kernel', 'mbstd_group_size',
      'mbstd_num_features', 'architecture'}
  unknown = sorted(set(kwargs) - allowed)
  if unknown:
    raise ValueError(f'TF {kind}: unsupported option(s) {", ".join(unknown)}')
  for key, default in _REQUIRED_DEFAULTS.items():
    if key in kwargs and kwargs[key] != default and not (
        isinstance(default, float) and float(kwargs[key]) == default):
      raise ValueError(f'TF {kind}: {key}={kwargs[key]!r} is not supported (only {default!r})')
  if int(kwargs.get('fmap_min', 1)) > 1:
    raise ValueError(f'TF {kind}: fmap_min > 1 is not supported')
  common = {
      'img_resolution': int(kwargs.get('resolution', 1024)),
      'img_channels': int(kwargs.get('num_channels', 3)),
      'channel_base': 2 * int(kwargs.get('fmap_base', 8 << 10)),
      'channel_max': int(kwargs.get('fmap_max', 512)),
  }
  mapping = {
      'z_dim': int(kwargs.get('latent_size', 512)), 'w_dim': int(kwargs.get('dlatent_size', 512)),
      'mapping_layers': int(kwargs.get('mapping_layers', 8)),
      'mapping_lr_multiplier': float(kwargs.get('mapping_lrmul', 0.01)),
      'layer_features': int(kwargs.get('mapping_fmaps', 512)),
      'w_avg_beta': float(kwargs.get('dlatent_avg_beta', 0.995))}
  config_a = {'fused_scale': kwargs.get('fused_scale', 'auto'),
              'blur_filter': [float(t) for t in kwargs.get('blur_filter', [1, 2, 1])]}
  resample = {'resample_filter': [float(t) for t in kwargs.get('resample_kernel', [1, 3, 3, 1])]}
  if kind == 'G_style':
    return {'class': 'StyleGenerator', **mapping, **common, **config_a,
            'use_noise': bool(kwargs.get('use_noise', True))}
  if kind == 'G_revised':
    return {'class': 'ProgressiveGenerator', **mapping, **common, **resample}
  mbstd = {'mbstd_group_size': kwargs.get('mbstd_group_size', 4),
           'mbstd_num_channels': int(kwargs.get('mbstd_num_features', 1))}
  if kind == 'D_basic':
    return {'class': 'BasicDiscriminator', **common, **mbstd, **config_a}
  return {'class': 'ProgressiveDiscriminator', **common, **mbstd, **resample}
