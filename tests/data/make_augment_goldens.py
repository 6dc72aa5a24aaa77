"""Makes `tests/data/augment_*.npz` by running the official ADA `AugmentPipe` (REFERENCE.md §7).

Run with a Python that has torch, pointing at an extracted copy of NVlabs/stylegan2-ada-pytorch:

    /path/to/torch/python tests/data/make_augment_goldens.py --peer /path/to/stylegan2-ada-pytorch

The official code is imported at run time only; nothing of it is copied or stored. Its
intermediate values are captured by instrumentation, without editing it:
- a `torch.overrides.TorchFunctionMode` sees every torch call of `AugmentPipe.forward`:
  * each `torch.where` is one gate (A.1), in the official order; its output is the gated
    per-sample parameter (`param_<name>`);
  * the one matmul with a `[3, 4]` right operand is `G_inv @ corners`: its left operand is the
    per-sample `G_inv` before padding (`g_inv`, A.2);
  * `F.pad(mode='reflect')` gives the batch-wide margin (`margin` = `[mx0, mx1, my0, my1]`, A.3.2);
  * `F.affine_grid` gives the final sampling matrix (`theta`, A.3.4);
  * the last `[B, 4, 4]` matmul result is the colour matrix `C` (`c`, A.4);
- `upfirdn2d.downsample2d` is wrapped to capture the geometric output (`geom`, A.3.5).

Arrays are stored NHWC (the official pipe runs NCHW); `out` is the pipe's output.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

GEOMETRIC_GATES = ('xflip', 'rotate90', 'xint', 'scale', 'rotate_pre', 'aniso', 'rotate_post',
                   'xfrac')
COLOR_GATES_RGB = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')
COLOR_GATES_GRAY = ('brightness', 'contrast', 'lumaflip')
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1,
           contrast=1, lumaflip=1, hue=1, saturation=1)


def run_official(augment, torch, images_nchw, p, seed, overrides=None):
  """Runs the official bgc pipe once and returns what the instrumentation captured (NCHW)."""
  from torch.overrides import TorchFunctionMode
  import torch.nn.functional as F

  overrides = overrides or {}
  captured = dict(wheres=[], c=None)
  batch = images_nchw.shape[0]

  class Recorder(TorchFunctionMode):

    def __torch_function__(self, func, types, args=(), kwargs=None):
      kwargs = kwargs or {}
      out = func(*args, **kwargs)
      if func is torch.where:
        index = len(captured['wheres'])
        if index in overrides:
          out = torch.full_like(out, overrides[index])
        captured['wheres'].append(out.detach().clone())
      elif func in (torch.Tensor.matmul, torch.matmul, torch.Tensor.__matmul__):
        if tuple(args[1].shape) == (3, 4):
          captured['g_inv'] = args[0].detach().clone()
        if tuple(out.shape) == (batch, 4, 4):
          captured['c'] = out.detach().clone()
      elif func is F.pad:
        named = dict(zip(('input', 'pad', 'mode'), args), **kwargs)
        if named.get('mode') == 'reflect':
          captured['margin'] = [int(v) for v in named['pad']]
      elif func is F.affine_grid:
        named = dict(zip(('theta', 'size'), args), **kwargs)
        captured['theta'] = named['theta'].detach().clone()
      return out

  down = augment.upfirdn2d.downsample2d

  def wrapped_down(*args, **kwargs):
    out = down(*args, **kwargs)
    captured['geom'] = out.detach().clone()
    return out

  pipe = augment.AugmentPipe(**BGC)
  pipe.p.copy_(torch.as_tensor(p))
  torch.manual_seed(seed)
  augment.upfirdn2d.downsample2d = wrapped_down
  try:
    with Recorder():
      out = pipe(torch.as_tensor(images_nchw))
  finally:
    augment.upfirdn2d.downsample2d = down
  captured['out'] = out.detach()
  return captured


def to_nhwc(x):
  return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1)).astype(np.float32)


def save_case(path, augment, torch, images_nchw, p, seed, overrides=None, note=''):
  cap = run_official(augment, torch, images_nchw, p, seed, overrides)
  channels = images_nchw.shape[1]
  names = GEOMETRIC_GATES + (COLOR_GATES_RGB if channels == 3 else COLOR_GATES_GRAY)
  if len(cap['wheres']) != len(names):
    raise RuntimeError(f'expected {len(names)} gates, captured {len(cap["wheres"])}')
  arrays = dict(
      images=to_nhwc(images_nchw),
      p=np.float32(p),
      g_inv=cap['g_inv'].numpy().astype(np.float32),
      margin=np.asarray(cap['margin'], np.int32),
      theta=cap['theta'].numpy().astype(np.float32),
      geom=to_nhwc(cap['geom'].numpy()),
      c=cap['c'].numpy().astype(np.float32),
      out=to_nhwc(cap['out'].numpy()),
      meta=np.asarray(f'official AugmentPipe bgc, torch {torch.__version__}, seed {seed}, '
                      f'p {p}. {note}'),
  )
  for name, value in zip(names, cap['wheres']):
    value = value.numpy().astype(np.float32)
    arrays['param_' + name] = value.reshape(value.shape[0], -1).squeeze(-1) if value.ndim != 2 \
        else value
  np.savez_compressed(path, **arrays)
  print(f'wrote {path}: margin {arrays["margin"].tolist()}, '
        f'{sum(v.nbytes for v in arrays.values())} bytes')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--peer', required=True, help='root of stylegan2-ada-pytorch')
  parser.add_argument('--out', default=str(Path(__file__).parent), help='output folder')
  args = parser.parse_args()
  sys.path.insert(0, args.peer)
  import torch
  from training import augment

  torch.set_default_dtype(torch.float32)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(2020)
  rgb = rng.uniform(-1, 1, size=(4, 3, 16, 24)).astype(np.float32)
  gray = rng.uniform(-1, 1, size=(4, 1, 16, 16)).astype(np.float32)
  save_case(out / 'augment_rgb_p06.npz', augment, torch, rgb, 0.6, seed=1)
  save_case(out / 'augment_rgb_p1.npz', augment, torch, rgb, 1.0, seed=2,
            note='p = 1: every gate fires.')
  save_case(out / 'augment_gray_p1.npz', augment, torch, gray, 1.0, seed=3,
            note='1 channel: no hue or saturation gate.')
  # Forced parameters (gate outputs replaced, in the official order of GEOMETRIC_GATES then
  # COLOR_GATES_RGB), identity colour. Both keep the batch-wide margin below the clamp, where the
  # official padding differs from sg2jax's fixed maximum (REFERENCE.md §7.3 note):
  # a pure 30 degree pre-rotation, and a 2x zoom-out (isotropic scale s = 0.5), whose output
  # grid reaches the official zero border.
  identity = {0: 0.0, 1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0, 5: 1.0, 6: 0.0, 7: 0.0,
              8: 0.0, 9: 1.0, 10: 0.0, 11: 0.0, 12: 1.0}
  save_case(out / 'augment_rotate30.npz', augment, torch, rgb, 1.0, seed=4,
            overrides={**identity, 4: np.pi / 6},
            note='Forced: only a 30 degree pre-rotation, identity colour.')
  save_case(out / 'augment_zoomout.npz', augment, torch, rgb, 1.0, seed=5,
            overrides={**identity, 3: 0.5},
            note='Forced: only an isotropic scale s = 0.5 (2x zoom-out), identity colour.')

if __name__ == '__main__':
  main()
