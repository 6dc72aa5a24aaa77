"""Cloud TPU slices as compile-only devices on any host, and what the TPU compiler says of a program.

With `libtpu` installed (`pip install -e ".[tpu]"`), `jax.experimental.topologies` describes a
TPU slice without one: its devices cannot run anything, but `jax.jit(...).lower(...).compile()`
for them runs XLA's real TPU pipeline, with its memory analysis and its out-of-memory errors
(docs/TPU.md). This module names slices as Cloud TPU does (`v5e-8`, `v4-8`, `v5p-8`, `v6e-256`)
and turns a compiled (or refused) program into a `ProgramReport`.

libtpu must not reach the network and nothing may run on a TPU from here: `prepare_environment`
sets `TPU_SKIP_MDS_QUERY=1` (else libtpu asks the cloud metadata server which TPU it is on) and
keeps JAX's own backend on the CPU; it must run before libtpu loads.
"""

import dataclasses
import math
import os
import re
import time
from typing import Any, Callable, Optional

import jax

GIB = 2 ** 30

# Chip generations by the name Cloud TPU gives their slices. `per_chip` is how many of the
# slice name's count one chip makes: v4 and v5p slices count TensorCores (two per chip, one
# "megacore" JAX device), v5e and v6e count chips. `dims` is the topology's rank.
_GENERATIONS = {
    'v4': dict(topology='v4', per_chip=2, dims=3, megacore=True),
    'v5p': dict(topology='v5', per_chip=2, dims=3, megacore=True),
    'v5e': dict(topology='v5e', per_chip=1, dims=2, megacore=False),
    'v6e': dict(topology='v6e', per_chip=1, dims=2, megacore=False),
}
# The largest slice of each generation (chips); larger names are refused.
_MAX_CHIPS = {'v4': 4096, 'v5p': 8960, 'v5e': 256, 'v6e': 256}


@dataclasses.dataclass(frozen=True)
class Slice:
  """A Cloud TPU slice: `name` as Cloud TPU writes it, and how libtpu describes it.

  Attributes:
    name: e.g. 'v5e-8'.
    generation: 'v4', 'v5p', 'v5e' or 'v6e'.
    chips: chips in the slice (= JAX devices: a v4/v5p chip is one megacore device).
    topology_name: libtpu's name, e.g. 'v5e:2x4', 'v4:2x2x1'.
    chip_config_name: 'megacore' for v4/v5p, else 'default'.
    chips_per_host_bounds: the chips of one host, (2, 2, 1) on every multi-chip host.
  """
  name: str
  generation: str
  chips: int
  topology_name: str
  chip_config_name: str
  chips_per_host_bounds: tuple[int, int, int]

  @property
  def hosts(self) -> int:
    return max(1, self.chips // math.prod(self.chips_per_host_bounds))


def _grid(chips: int, dims: int) -> tuple[int, ...]:
  """The most square power-of-two grid of `chips` (2-D: `x <= y`; 3-D: `x <= y <= z`), as Cloud
  TPU shapes its slices: 8 -> 2x4, 256 -> 16x16, 16 -> 2x2x4 ... (v4-8's 4 chips: 2x2x1)."""
  if dims == 2:
    x = 2 ** (int(math.log2(chips)) // 2)
    return (x, chips // x)
  if chips == 4:
    return (2, 2, 1)
  shape = [1, 1, 1]
  for i in range(int(math.log2(chips))):
    shape[2 - i % 3] *= 2
  shape = sorted(shape)
  return tuple(shape)


def parse_slice(name: str) -> Slice:
  """'v5e-8' -> its `Slice`. v5e and v6e: `v5e-N` is N chips; v4 and v5p: `v4-N` is N
  TensorCores (N / 2 chips), as Cloud TPU names them.

  Raises:
    ValueError: a name that is not `GENERATION-COUNT` of a known generation and size (one line
      listing examples).
  """
  examples = 'v5e-1, v5e-8, v5e-256, v6e-8, v4-8, v5p-8'
  match = re.fullmatch(r'(v4|v5p|v5e|v6e)-(\d+)', name.strip().lower())
  if not match:
    raise ValueError(f'--topology {name!r} is not a Cloud TPU slice name; use e.g. {examples}')
  generation, count = match.group(1), int(match.group(2))
  spec = _GENERATIONS[generation]
  chips = count // spec['per_chip']
  if (count % spec['per_chip'] or chips < 1 or chips & (chips - 1)
      or chips > _MAX_CHIPS[generation] or chips == 2 or (spec['megacore'] and chips < 4)):
    smallest = f'{generation}-8' if spec['megacore'] else f'{generation}-1, then {generation}-4'
    raise ValueError(f'--topology {name}: {generation} slices come in powers of two from '
                     f'{smallest} to {generation}-{_MAX_CHIPS[generation] * spec["per_chip"]}; '
                     f'use e.g. {examples}')
  shape = _grid(chips, spec['dims'])
  host = (1, 1, 1) if chips == 1 else (2, 2, 1)
  return Slice(name=f'{generation}-{count}', generation=generation, chips=chips,
               topology_name=f'{spec["topology"]}:{"x".join(map(str, shape))}',
               chip_config_name='megacore' if spec['megacore'] else 'default',
               chips_per_host_bounds=host)


def prepare_environment() -> None:
  """Keeps libtpu off the network and JAX's backend on the CPU; call before libtpu loads.

  - `TPU_SKIP_MDS_QUERY=1`: libtpu does not ask the cloud metadata server for the TPU type.
  - `TPU_WORKER_HOSTNAMES=localhost`, `TPU_ACCELERATOR_TYPE` unset: no lookup of the slice's
    other hosts (there are none; the programs are the same SPMD program every host runs).
  - `ALLOW_MULTIPLE_LIBTPU_LOAD=1`: several compiling processes on one host (test workers)
    do not refuse each other over libtpu's lock file.
  - JAX's platform `cpu`: everything that runs, runs on the host.
  """
  os.environ['TPU_SKIP_MDS_QUERY'] = '1'
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  os.environ['ALLOW_MULTIPLE_LIBTPU_LOAD'] = '1'
  os.environ['JAX_PLATFORMS'] = 'cpu'
  jax.config.update('jax_platforms', 'cpu')


def libtpu_version() -> Optional[str]:
  """The installed libtpu's version, or None when it is not installed."""
  from importlib import metadata
  for package in ('libtpu', 'libtpu-nightly'):
    try:
      return metadata.version(package)
    except metadata.PackageNotFoundError:
      continue
  return None


def failed_check(log_line: str) -> Optional[str]:
  """The compiler's failed internal check in a line of its log (`F1207 ... file.cc:N] Check
  failed: ...`, printed before libtpu aborts its process), without the log prefix; else None."""
  if 'Check failed' not in log_line:
    return None
  return log_line.split('] ', 1)[-1].strip()


def require_libtpu() -> None:
  """Raises ValueError (one line saying how to install it) when libtpu is not installed."""
  if libtpu_version() is None:
    raise ValueError('compiling for a TPU needs libtpu: pip install -e ".[tpu]" (it pins the '
                     'libtpu that the installed jax was built with)')


def compile_only_devices(slice_: Slice) -> list:
  """The slice's devices, one per chip (v4/v5p: megacore), for compiling only.

  Raises:
    ValueError: libtpu is not installed (one line saying how to install it).
  """
  require_libtpu()
  prepare_environment()
  from jax.experimental import topologies
  description = topologies.get_topology_desc(
      platform='tpu', topology_name=slice_.topology_name,
      chip_config_name=slice_.chip_config_name,
      chips_per_host_bounds=slice_.chips_per_host_bounds, num_slices=1)
  devices = list(description.devices)
  if len(devices) != slice_.chips:
    raise RuntimeError(f'libtpu describes {slice_.topology_name} with {len(devices)} devices, '
                       f'not {slice_.chips}')
  return devices


_HBM_AVAILABLE = re.compile(r'exceeds available HBM \(([\d.]+)([KMGT])\)')
_HBM_REQUIRED = re.compile(r'required for HLO temporaries \(([\d.]+)([KMGT])\)')
_UNITS = {'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


def _bytes_in(pattern: re.Pattern, text: str) -> Optional[float]:
  match = pattern.search(text)
  return None if match is None else float(match.group(1)) * _UNITS[match.group(2)]


def is_out_of_memory(error: BaseException) -> bool:
  """Whether a compile error is the TPU compiler's out-of-memory verdict."""
  text = str(error).lower()
  return 'resource_exhausted' in text or 'ran out of memory' in text


_capacities: dict[str, float] = {}


def hbm_capacity(device) -> float:
  """Bytes of HBM the compiler lets one program of `device`'s chip use (15.75 GiB on v5e).

  Read from the compiler itself: a program that needs 1 TiB is refused with the capacity in
  the message (cached per chip kind).
  """
  kind = device.device_kind
  if kind not in _capacities:
    import jax.numpy as jnp
    from jax.sharding import SingleDeviceSharding
    probe = jax.jit(lambda x: (x * 2).sum(), in_shardings=SingleDeviceSharding(device))
    try:
      probe.lower(jax.ShapeDtypeStruct((2 ** 38,), jnp.float32)).compile()
    except Exception as e:  # noqa: BLE001 (the verdict is the message)
      capacity = _bytes_in(_HBM_AVAILABLE, str(e))
      if capacity is None:
        raise
      _capacities[kind] = capacity
    else:
      raise RuntimeError(f'{kind}: a 1 TiB program compiled; cannot tell the HBM capacity')
  return _capacities[kind]


@dataclasses.dataclass
class ProgramReport:
  """What the compiler said of one program, per device (= per chip).

  `hbm_gib` is what the program needs while it runs: arguments + outputs + temporaries -
  aliased (donated arguments reused as outputs), as MaxText counts it. On an out-of-memory
  refusal only the temporaries the compiler asked for are known (`hbm_gib` then holds them).
  """
  program: str
  ok: bool  # compiled (whether it fits or not)
  fits: bool
  hbm_gib: Optional[float]
  capacity_gib: float
  gflop: Optional[float]  # XLA's cost analysis, one call, per device
  compile_seconds: float
  batch_per_chip: Optional[int] = None
  argument_gib: Optional[float] = None
  output_gib: Optional[float] = None
  temp_gib: Optional[float] = None
  alias_gib: Optional[float] = None
  error: Optional[str] = None
  extra: dict = dataclasses.field(default_factory=dict)

  @property
  def refused(self) -> bool:
    """Refused for lack of memory: `hbm_gib` is then the temporaries the compiler asked for
    (at least that much is needed), or None where it named no figure."""
    return self.ok and not self.fits and self.argument_gib is None

  def as_dict(self) -> dict[str, Any]:
    row = {k: v for k, v in dataclasses.asdict(self).items() if k != 'extra'}
    return {**row, **self.extra}


def _gib(value: Optional[float]) -> Optional[float]:
  return None if value is None else round(value / GIB, 6)


def compile_report(name: str, lower: Callable[[], Any], capacity: float,
                   batch_per_chip: Optional[int] = None) -> ProgramReport:
  """Compiles `lower()` (a `jax.stages.Lowered`) and reports its memory and flops.

  A program the compiler refuses for lack of memory is a report with `ok=True, fits=False`
  (the compiler got that far); any other compile error is `ok=False` with the error's first
  line.
  """
  start = time.perf_counter()
  try:
    compiled = lower().compile()
  except Exception as e:  # noqa: BLE001 (every refusal becomes a report)
    seconds = time.perf_counter() - start
    text = str(e)
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), repr(e))
    if is_out_of_memory(e):
      needed = _bytes_in(_HBM_REQUIRED, text)
      return ProgramReport(name, ok=True, fits=False, hbm_gib=_gib(needed),
                           capacity_gib=_gib(capacity), gflop=None, compile_seconds=seconds,
                           batch_per_chip=batch_per_chip, temp_gib=_gib(needed),
                           error=first_line[:500])
    return ProgramReport(name, ok=False, fits=False, hbm_gib=None, capacity_gib=_gib(capacity),
                         gflop=None, compile_seconds=seconds, batch_per_chip=batch_per_chip,
                         error=first_line[:500])
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  needed = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get('flops')
  return ProgramReport(
      name, ok=True, fits=needed <= capacity, hbm_gib=_gib(needed), capacity_gib=_gib(capacity),
      gflop=None if flops is None else round(float(flops) / 1e9, 3), compile_seconds=seconds,
      batch_per_chip=batch_per_chip, argument_gib=_gib(memory.argument_size_in_bytes),
      output_gib=_gib(memory.output_size_in_bytes), temp_gib=_gib(memory.temp_size_in_bytes),
      alias_gib=_gib(memory.alias_size_in_bytes))


def largest_fitting(measure: Callable[[int], tuple[bool, Optional[float]]], start: int,
                    capacity: Optional[float] = None, limit: int = 4096,
                    step: int = 1) -> Optional[int]:
  """The largest `b` in `[1, limit]` that fits, assuming that fitting is monotone in `b`; None
  if 1 does not fit. `measure(b)` compiles with `b` and returns (fits, HBM GiB needed or None).
  With `step`, only multiples of `step` and batches smaller than `step` are tried (the batches a
  minibatch-stddev group of `step` images accepts).

  Each try is a compile (minutes at full size), so tries are aimed: HBM grows about linearly
  with the batch (parameters and optimizer states are fixed, activations scale), so a line
  through the two measured batches nearest the boundary (one batch: HBM proportional to it)
  says where HBM reaches `capacity`; the next try is there, and when a two-point line's batch
  fits, the batch after it, which the line says does not. The answer is only ever what compiles
  said: a batch fits and the next one does not. A try the line got wrong (HBM grows in steps
  where XLA changes its plan or rounds allocations) is followed by a blind one; after the line's
  second miss, or without HBM figures, the search doubles (or halves) from `start`, then
  bisects: about `2 log2(b / start)` compiles.
  """
  if step > 1:
    steps = largest_fitting(lambda k: measure(k * step), max(1, start // step), capacity,
                            limit // step)
    if steps is not None:
      return steps * step
    return largest_fitting(measure, min(start, step - 1), capacity, step - 1)
  low, high = 0, limit + 1  # low fits (0: none known), high does not
  measured: dict[int, float] = {}
  b = max(1, min(start, limit))
  misses = 0  # tries where the line was wrong
  predicted = None  # whether the line said this try fits (None: a blind try)
  last_by_line = False  # this try is where a two-point line said the last batch that fits is
  while True:
    fits, hbm = measure(b)
    if hbm is not None and hbm > 0:
      measured[b] = hbm
    if fits:
      low = b
    else:
      high = b
    if high - low <= 1:
      return low or None
    misses += predicted is not None and predicted != fits
    line, two_points = _line_estimate(measured, low, high, capacity)
    if last_by_line and fits and misses < 2:
      b, predicted, last_by_line = low + 1, False, False  # so the next one should not fit
    elif line is not None and misses < 2 and predicted in (None, fits):
      b = min(max(int(line), low + 1), high - 1)
      predicted = b <= line
      last_by_line = two_points and predicted
    else:
      predicted, last_by_line = None, False
      if low == 0:
        b = max(1, high // 2)
      elif high > limit:
        b = min(2 * low, limit)
      else:
        b = (low + high) // 2


def _line_estimate(measured: dict[int, float], low: int, high: int,
                   capacity: Optional[float]) -> tuple[Optional[float], bool]:
  """The batch at which a line through the measured HBM figures nearest the boundary between
  `low` (fits) and `high` (does not) reaches `capacity` (None without a usable line), and
  whether the line went through two measured batches (one: HBM taken as proportional to it)."""
  if capacity is None or not measured:
    return None, False
  below = [b for b in measured if b <= low]
  above = [b for b in measured if b >= high]
  if below and above:
    points = [max(below), min(above)]
  else:
    points = sorted(measured, key=lambda b: abs(b - (low if below else high)))[:2]
  if len(points) == 1:
    estimate = points[0] * capacity / measured[points[0]]
  else:
    b0, b1 = sorted(points)
    slope = (measured[b1] - measured[b0]) / (b1 - b0)
    if slope <= 0:
      return None, False
    estimate = b0 + (capacity - measured[b0]) / slope
  return (estimate if math.isfinite(estimate) else None), len(points) == 2
