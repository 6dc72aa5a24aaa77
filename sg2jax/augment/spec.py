"""Which ADA transforms run, how often, and their constants (REFERENCE.md §7.1).

`AugmentSpec` is a frozen (hashable) dataclass, so it can be a static argument of `jax.jit`.
The overall probability `p` is *not* part of it: it is a traced array, so an adaptive `p` never
recompiles.
"""

import dataclasses

BLIT = ('xflip', 'rotate90', 'xint')
GEOM = ('scale', 'rotate', 'aniso', 'xfrac')
COLOR = ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation')
GEOMETRIC_MULTIPLIERS = BLIT + GEOM
COLOR_MULTIPLIERS = COLOR

# The official `--augpipe` presets that sg2jax implements (ADA `train.py:263-287`).
PRESETS = {
    'blit': BLIT,
    'geom': GEOM,
    'color': COLOR,
    'bg': BLIT + GEOM,
    'bgc': BLIT + GEOM + COLOR,
}


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """Per-transform probability multipliers (0 = off) and the official constants.

  Every transform fires per sample with probability `multiplier * p`, except the two arbitrary
  rotations, which fire with `p_rot = 1 - sqrt(clip(1 - rotate * p, 0, 1))` each, so that one of
  them fires with probability `rotate * p` (REFERENCE.md §7.1-§7.2). Defaults are the official
  `AugmentPipe` defaults (ADA `augment.py:118-124`).

  Attributes:
    xflip: multiplier of the x-flip.
    rotate90: multiplier of the rotation by a multiple of 90 degrees.
    xint: multiplier of the integer translation.
    scale: multiplier of the isotropic scaling.
    rotate: multiplier of the arbitrary rotation.
    aniso: multiplier of the anisotropic scaling.
    xfrac: multiplier of the fractional translation.
    brightness: multiplier of the brightness offset.
    contrast: multiplier of the contrast scaling.
    lumaflip: multiplier of the luma flip.
    hue: multiplier of the hue rotation.
    saturation: multiplier of the saturation scaling.
    xint_max: range of the integer translation, relative to the image size.
    scale_std: log2 standard deviation of the isotropic scaling.
    rotate_max: range of the rotation, 1 = full circle.
    aniso_std: log2 standard deviation of the anisotropic scaling.
    xfrac_std: standard deviation of the fractional translation, relative to the image size.
    brightness_std: standard deviation of the brightness offset.
    contrast_std: log2 standard deviation of the contrast.
    hue_max: range of the hue rotation, 1 = full circle.
    saturation_std: log2 standard deviation of the saturation.
  """
  xflip: float = 0.0
  rotate90: float = 0.0
  xint: float = 0.0
  scale: float = 0.0
  rotate: float = 0.0
  aniso: float = 0.0
  xfrac: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  lumaflip: float = 0.0
  hue: float = 0.0
  saturation: float = 0.0
  xint_max: float = 0.125
  scale_std: float = 0.2
  rotate_max: float = 1.0
  aniso_std: float = 0.2
  xfrac_std: float = 0.125
  brightness_std: float = 0.2
  contrast_std: float = 0.5
  hue_max: float = 1.0
  saturation_std: float = 1.0

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not value >= 0:
        raise ValueError(f'AugmentSpec.{field.name} = {value} is negative; use a value >= 0')

  @classmethod
  def from_preset(cls, name: str) -> 'AugmentSpec':
    """The spec of an official `--augpipe` preset: its transforms' multipliers set to 1.

    Raises:
      ValueError: for a preset sg2jax does not implement (those with imgfilter, noise, cutout).
    """
    if name not in PRESETS:
      raise ValueError(f'augpipe {name!r} is not implemented; use one of {sorted(PRESETS)} '
                       '(imgfilter, noise and cutout are not implemented)')
    return cls(**{transform: 1.0 for transform in PRESETS[name]})

  @classmethod
  def blit(cls) -> 'AugmentSpec':
    """x-flip, rotate 90, integer translation."""
    return cls.from_preset('blit')

  @classmethod
  def geom(cls) -> 'AugmentSpec':
    """Isotropic scale, rotation, anisotropic scale, fractional translation."""
    return cls.from_preset('geom')

  @classmethod
  def color(cls) -> 'AugmentSpec':
    """Brightness, contrast, luma flip, hue, saturation."""
    return cls.from_preset('color')

  @classmethod
  def bg(cls) -> 'AugmentSpec':
    """blit + geom."""
    return cls.from_preset('bg')

  @classmethod
  def bgc(cls) -> 'AugmentSpec':
    """blit + geom + color: the official default (ADA `train.py:264-265`)."""
    return cls.from_preset('bgc')

  @property
  def geometric_enabled(self) -> bool:
    """Whether the geometric stage runs (any of its multipliers > 0, whatever `p`)."""
    return any(getattr(self, name) > 0 for name in GEOMETRIC_MULTIPLIERS)

  def color_enabled(self, num_channels: int) -> bool:
    """Whether the colour stage runs; hue and saturation count only for RGB (REFERENCE.md §7.4)."""
    names = COLOR_MULTIPLIERS if num_channels > 1 else ('brightness', 'contrast', 'lumaflip')
    return any(getattr(self, name) > 0 for name in names)
