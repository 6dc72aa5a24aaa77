"""ADA augmentation (Karras et al. 2020) in pure JAX: NHWC, per-sample, jit- and grad-friendly.

See REFERENCE.md §7. `augment_images` is what a training step calls; the pieces below it draw
parameters (`sample_geometric`, `sample_color`), build matrices (`geometric_matrix`,
`color_matrix`) and execute them (`apply_geometric`, `apply_color`).
"""

from sg2jax.augment.color import apply_color
from sg2jax.augment.geometric import apply_geometric, official_margin
from sg2jax.augment.params import (ColorParams, GeometricParams, color_matrix, geometric_matrix,
                                   rotation_probability, sample_color, sample_geometric)
from sg2jax.augment.pipeline import augment_images
from sg2jax.augment.spec import PRESETS, AugmentSpec
