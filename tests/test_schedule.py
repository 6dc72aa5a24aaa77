"""The progressive-growing schedule of configs A-D (REFERENCE.md §3.3)."""

import pytest

from sg2jax.train.schedule import FixedSchedule, GrowingSchedule, optimizer_reset_due

PAPER = dict(batch_sizes={8: 256, 16: 128, 32: 64, 64: 32},
             batch_gpus={8: 32, 16: 16, 32: 8, 64: 4},
             lrs={128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003})


@pytest.mark.parametrize('kimg,lod,resolution', [
    (0, 7.0, 8), (599, 7.0, 8), (600, 7.0, 8), (900, 6.5, 16), (1200, 6.0, 16), (1800, 6.0, 16),
    (2100, 5.5, 32), (8400, 0.0, 1024), (8000, 2 / 3, 1024), (25000, 0.0, 1024)])
def test_lod_and_resolution_at_1024(kimg, lod, resolution):
  stage = GrowingSchedule(1024, **PAPER).at(int(kimg * 1000))
  assert stage.lod == pytest.approx(lod)
  assert stage.resolution == resolution


def test_tables_by_resolution_and_lazy_factors():
  schedule = GrowingSchedule(1024, g_lr_factor=0.8, d_lr_factor=16 / 17, **PAPER)
  at_8, at_16, at_128 = schedule.at(0), schedule.at(900_000), schedule.at(5_100_000)
  assert (at_8.batch_size, at_8.batch_gpu, at_8.g_lr) == (256, 32, pytest.approx(0.0008))
  assert (at_16.batch_size, at_16.batch_gpu) == (128, 16)
  assert at_128.resolution == 128 and at_128.batch_size == 32 and at_128.batch_gpu == 4
  assert at_128.g_lr == pytest.approx(0.0015 * 0.8) and at_128.d_lr == pytest.approx(0.0015 * 16 / 17)


def test_optimizer_reset_rule():
  """Adam is reset when floor(lod) or ceil(lod) changes: at the start and end of every fade."""
  assert optimizer_reset_due(None, 7.0)
  assert not optimizer_reset_due(7.0, 7.0)
  assert optimizer_reset_due(7.0, 6.9)  # fade starts: floor 7 -> 6
  assert not optimizer_reset_due(6.9, 6.5)
  assert optimizer_reset_due(6.1, 6.0)  # fade ends: ceil 7 -> 6
  assert not optimizer_reset_due(6.0, 6.0)


def test_fixed_schedule():
  stage = FixedSchedule(256, 32, 4, 0.0016, 0.002).at(10 ** 8)
  assert (stage.lod, stage.resolution, stage.batch_size, stage.batch_gpu) == (0.0, 256, 32, 4)
