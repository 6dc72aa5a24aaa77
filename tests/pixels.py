"""Comparing images that two programs computed (a CLI in a subprocess and the test itself).

XLA compiles float code per CPU (AVX2 or AVX-512 kernels, other summation orders), so a value
that lies next to a rounding boundary may become a different grey level in another program; the
project promises the official images up to one grey level (README). `assert_same_image` allows
exactly that and records the worst difference, which the test session reports at its end.
"""

import numpy as np

MAX_GREY_LEVELS = 1
MAX_DIFFERING_FRACTION = 0.01  # boundary values are rare; a shifted image differs everywhere

# (what, max difference, values that differ, values compared), for the session's summary.
RECORDS: list[tuple[str, int, int, int]] = []


def assert_same_image(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
  """uint8 images equal within one grey level, in at most 1% of their values."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
  diff = np.abs(actual.astype(np.int32) - expected.astype(np.int32))
  worst, differing = int(diff.max(initial=0)), int(np.count_nonzero(diff))
  RECORDS.append((what, worst, differing, diff.size))
  assert worst <= MAX_GREY_LEVELS, f'{what}: {worst} grey levels apart (at most 1 allowed)'
  assert differing <= MAX_DIFFERING_FRACTION * diff.size, (
      f'{what}: {differing} of {diff.size} values differ')


def summary(records) -> str:
  """One line on the worst image difference among `records`, or '' when there are none."""
  if not records:
    return ''
  what, worst, differing, total = max(records, key=lambda r: (r[1], r[2]))
  compared = sum(r[3] for r in records)
  return (f'images compared across programs: {len(records)} ({compared} values); worst '
          f'difference {worst} grey level(s), in {differing} of {total} values ({what})')
