"""What changes during a run: level of detail, working resolution, minibatch and learning rates.

Configs E/F keep everything fixed. Configs A-D grow progressively (TF `training_schedule`,
REFERENCE.md §3.3): from `lod_initial_resolution`, `lod_training_kimg` stable then
`lod_transition_kimg` fading in per resolution,

  level_index = floor(kimg / (train + transition)),
  lod = max(0, log2 R - log2 r0 - level_index
               - max(kimg - level_index (train + transition) - train, 0) / transition),

working resolution `2^(log2 R - floor(lod))` (the incoming one during its fade-in), and minibatch,
per-GPU minibatch and learning rate looked up by that resolution. As in TF, the schedule is
re-evaluated every `minibatch_repeats` minibatches, and the Adam moments are reset whenever
`floor(lod)` or `ceil(lod)` changes.
"""

import dataclasses
import math
from typing import Mapping, Optional


@dataclasses.dataclass(frozen=True)
class Stage:
  """The training parameters at one point of the schedule (a level of detail when growing)."""
  lod: float
  resolution: int  # working resolution (= R without growing)
  batch_size: int  # global minibatch
  batch_gpu: int  # per-GPU minibatch: minibatch-stddev groups form within it
  g_lr: float  # after the lazy-regularization adjustment
  d_lr: float

  @property
  def level(self) -> int:
    return int(math.floor(self.lod))


def optimizer_reset_due(previous_lod: Optional[float], lod: float) -> bool:
  """TF resets Adam when `floor(lod)` or `ceil(lod)` changes (and at the start of a run)."""
  if previous_lod is None:
    return True
  return (math.floor(previous_lod) != math.floor(lod)
          or math.ceil(previous_lod) != math.ceil(lod))


@dataclasses.dataclass(frozen=True)
class FixedSchedule:
  """Configs E/F: one stage for the whole run."""
  resolution: int
  batch_size: int
  batch_gpu: int
  g_lr: float
  d_lr: float
  progressive = False

  def at(self, nimg: int) -> Stage:
    del nimg
    return Stage(0.0, self.resolution, self.batch_size, self.batch_gpu, self.g_lr, self.d_lr)

  def stages(self) -> list[Stage]:
    """One stage per set of compiled programs: the run's only one."""
    return [self.at(0)]


@dataclasses.dataclass(frozen=True)
class GrowingSchedule:
  """Configs A-D: progressive growing (TF `training_schedule`)."""
  resolution: int  # R
  initial_resolution: int = 8
  training_kimg: float = 600
  transition_kimg: float = 600
  batch_size: int = 32  # defaults when a resolution is not in the tables
  batch_gpu: int = 4
  batch_sizes: Mapping[int, int] = dataclasses.field(default_factory=dict)
  batch_gpus: Mapping[int, int] = dataclasses.field(default_factory=dict)
  lr: float = 0.001
  lrs: Mapping[int, float] = dataclasses.field(default_factory=dict)
  g_lr_factor: float = 1.0  # lazy-regularization c of G and D
  d_lr_factor: float = 1.0
  progressive = True

  def lod_at(self, kimg: float) -> float:
    level_kimg = self.training_kimg + self.transition_kimg
    index = int(math.floor(kimg / level_kimg)) if level_kimg > 0 else 0
    lod = math.log2(self.resolution) - math.log2(self.initial_resolution) - index
    if self.transition_kimg > 0:
      lod -= max(kimg - index * level_kimg - self.training_kimg, 0.0) / self.transition_kimg
    return max(lod, 0.0)

  def at(self, nimg: int) -> Stage:
    lod = self.lod_at(nimg / 1000.0)
    return self._stage(lod, 2 ** (int(math.log2(self.resolution)) - int(math.floor(lod))))

  def _stage(self, lod: float, resolution: int) -> Stage:
    lr = self.lrs.get(resolution, self.lr)
    return Stage(lod, resolution, self.batch_sizes.get(resolution, self.batch_size),
                 self.batch_gpus.get(resolution, self.batch_gpu), lr * self.g_lr_factor,
                 lr * self.d_lr_factor)

  def stages(self) -> list[Stage]:
    """One stage per set of compiled programs: each working resolution, from the initial one
    to R, at its stable level of detail (its fade-in runs the same programs: `lod` is traced)."""
    top = int(math.log2(self.resolution))
    levels = top - int(math.log2(self.initial_resolution))
    return [self._stage(float(level), 2 ** (top - level)) for level in range(levels, -1, -1)]
