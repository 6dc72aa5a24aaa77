"""Linear separability (Karras et al. 2019, StyleGAN paper), the official TF protocol (REFERENCE.md
§5.7; NVlabs/stylegan `metrics/linear_separability.py`).

Sampling (one jitted, sharded program per batch; REFERENCE.md §5.7):
1. `z ~ N(0, I)`; `w = mapping(z)` without truncation; images = `synthesis(w)` with random
   noise, float32, raw ([-1, 1], no quantization, no clipping); grey images repeated to RGB.
2. Larger than 256: box-averaged over `f x f` blocks, `f = H // 256` (official `:127-131`).
3. The 40 CelebA-HQ attribute classifiers give one logit `l` each; kept per sample: `z`, the last
   row of `w` (`dlatents[:, -1]`) and the logits.

Per attribute, on the host (REFERENCE.md §5.7):
4. `p = softmax([l, -l])` (float32); confidence `max(p)`; keep the `num_keep` most confident
   samples (stable sort by descending confidence: ties keep sample order; `num_keep =
   num_samples // 2`, the official 100,000 of 200,000); label `y = argmax(p)` (0 when `l >= 0`).
5. For X in {z, w}: `sklearn.svm.LinearSVC` fit on the kept raw vectors and labels, predictions
   `x` on the same vectors; when the kept samples are all of one class (LinearSVC refuses to fit)
   predictions = labels, the official code's assumption of a perfect prediction (exact then:
   `H(Y) = 0`, so `H(Y|X) = 0` whatever the predictions).
6. `P[x][y]`, the 2x2 table of joint frequencies (rows: SVM prediction, columns: label);
   `H(Y|X) = H(Y) - I(X; Y)` in bits, zero-probability terms skipped, clamped at >= 0.

Score (REFERENCE.md §5.7): `ls_X = 2 ** (sum over the attributes of H(Y|X))`, reported as `ls_z`
and `ls_w`. The paper writes `exp(sum H)`, but the official code computes the entropies in bits
and raises 2 to their sum (`:173`); sg2jax follows the code, so its numbers compare with the
published ones.

Differs from official:
- LinearSVC gets its settings of the official era explicitly (`C=1.0`, `loss='squared_hinge'`,
  `penalty='l2'`, `dual=True`, `tol=1e-4`, `max_iter=1000`, `fit_intercept=True`; scikit-learn
  1.5 changed the `dual` default to 'auto') and a fixed `random_state` (the run's seed) where the
  official code used numpy's global RNG (liblinear's coordinate order), so runs repeat exactly.
  Its convergence warnings (frequent at 1000 iterations) are silenced.
- The entropies sum float32-normalized tables in float64 (official: float32 terms).
- Conditional generators draw labels from the dataset (as TF StyleGAN2's version does).
- Non-finite latents, images or logits are an error naming the network (`check_finite`), and
  LinearSVC's errors propagate. The official bare `except:` took any SVM error for a perfect
  prediction: a generator of NaN images (NaN logits give every sample the same label, NaN
  latents make the SVM raise) scored as perfectly separable, ls = 1.
"""

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from sg2jax.feature_nets.attribute_classifier import (CLASSIFIER_FILES, CLASSIFIER_URL,
                                                      AttributeClassifier, classifier_config,
                                                      load_attribute_classifiers)
from sg2jax.ops.pyramid import downsample_box
from sg2jax.sharding import batch_sharded, replicate, replicated

CLASSIFIER_RESOLUTION = 256
NUM_SAMPLES = 200_000
SPACES = ('z', 'w')
# `MetricContext.weights` key of the classifiers' folder (eval `--classifiers DIR`, training
# `config.metrics_classifiers`).
WEIGHTS_KEY = 'attribute_classifiers'
_BANK_MEMO = ('ls', 'classifiers')  # `MetricContext.memo` key of the context's bank
# LinearSVC as the official code ran it: scikit-learn's defaults of 2018-2020, spelled out.
SVM_SETTINGS = dict(penalty='l2', loss='squared_hinge', dual=True, tol=1e-4, C=1.0,
                    multi_class='ovr', fit_intercept=True, intercept_scaling=1, max_iter=1000)


# ----------------------------------------------------------------------------------------------
# Classifiers as one function.

@dataclasses.dataclass(frozen=True)
class ClassifierBank:
  """Attribute classifiers run as one function.

  Attributes:
    forward: pure `(params, images) -> logits [N, A]`, images `[N, R, R, 3]` in `[-1, 1]`.
    params: the classifiers' weights (stacked along a leading axis of size A for the real ones).
    resolution: R, the input size the classifiers take.
    num_attributes: A.
  """
  forward: Callable[[Any, jnp.ndarray], jnp.ndarray]
  params: Any
  resolution: int
  num_attributes: int


def stack_classifiers(classifiers: Sequence[tuple[AttributeClassifier, dict]]) -> ClassifierBank:
  """`[(module, variables)]` of one architecture -> a bank that runs them one after the other in
  one program (`lax.map` over the stacked weights: compiled once, one classifier's activations
  in memory at a time).

  Raises:
    ValueError: no classifiers, or two of different architectures.
  """
  if not classifiers:
    raise ValueError('no attribute classifiers given')
  module = classifiers[0][0]
  config = classifier_config(module)
  for i, (other, _) in enumerate(classifiers[1:], 1):
    if classifier_config(other) != config:
      raise ValueError(f'attribute classifier {i} ({classifier_config(other)}) differs from '
                       f'classifier 0 ({config}); the bank runs one architecture')
  params = jax.tree.map(lambda *xs: np.stack(xs), *[v['params'] for _, v in classifiers])

  def forward(stacked_params, images):
    logits = jax.lax.map(lambda p: module.apply({'params': p}, images)[:, 0], stacked_params)
    return logits.T  # [A, N] -> [N, A]

  return ClassifierBank(forward, params, module.resolution, len(classifiers))


def load_classifier_bank(directory: Optional[str | Path]) -> ClassifierBank:
  """The 40 official classifiers from `directory` as a bank (params on the host).

  Raises:
    FileNotFoundError: no directory given, or files missing (with where to get them).
    ValueError: a file is not a classifier.
  """
  if directory is None:
    raise FileNotFoundError(f'ls needs NVIDIA\'s {len(CLASSIFIER_FILES)} CelebA-HQ attribute '
                            f'classifiers: download celebahq-classifier-*.pkl from '
                            f'{CLASSIFIER_URL} into a folder and pass --classifiers DIR '
                            f'(training: config.metrics_classifiers)')
  return stack_classifiers(load_attribute_classifiers(directory))


def classifier_bank(ctx) -> ClassifierBank:
  """The context's bank (`ctx.weights['attribute_classifiers']`), loaded once and replicated."""
  def load():
    bank = load_classifier_bank(ctx.weights.get(WEIGHTS_KEY))
    return dataclasses.replace(bank, params=replicate(bank.params, ctx.mesh))
  return ctx.memo(_BANK_MEMO, load)


def use_classifier_bank(ctx, bank: ClassifierBank) -> ClassifierBank:
  """Makes `bank` (e.g. loaded before training started) the context's classifiers, replicated
  on its mesh; later `classifier_bank(ctx)` calls return it. Call before the first one."""
  return ctx.memo(_BANK_MEMO, lambda: dataclasses.replace(
      bank, params=replicate(bank.params, ctx.mesh)))


def check_classifier_input(bank: ClassifierBank, img_resolution: int, metric: str = 'ls') -> None:
  """Raises ValueError unless a generator of `img_resolution` gives the bank's input size."""
  size = classifier_input_size(img_resolution, bank.resolution)
  if size != bank.resolution:
    raise ValueError(f'{metric} classifies {bank.resolution}x{bank.resolution} images; the '
                     f'generator\'s {img_resolution}x{img_resolution} output gives {size}x{size} '
                     f'(linear separability needs a face generator of at least '
                     f'{bank.resolution}x{bank.resolution})')


def kept_samples(num_samples: int, num_keep: Optional[int] = None, metric: str = 'ls') -> int:
  """Samples kept per attribute: `num_keep`, or the most confident half of `num_samples`.

  Raises:
    ValueError: fewer than 2 samples (no half to keep), or `num_keep` outside `1..num_samples`.
  """
  if num_keep is None:
    if num_samples < 2:
      raise ValueError(f'{metric} keeps the most confident half of its samples: it needs at least '
                       f'2, got --num-samples {num_samples}')
    return num_samples // 2
  if not 0 < num_keep <= num_samples:
    raise ValueError(f'{metric}: num_keep {num_keep} must be within 1..{num_samples} (the '
                     f'number of samples)')
  return num_keep


def check_requirements(ctx, num_samples: int, metric: str = 'ls') -> None:
  """Loads the context's classifiers and checks the generator's resolution and the sample count,
  so a missing folder or file, a wrong pickle or a too small generator fails before any work.

  Raises:
    FileNotFoundError: the classifiers are not given or incomplete.
    ValueError: a file is not a classifier, the generator's images are too small, or fewer than
      2 samples.
  """
  kept_samples(num_samples, None, metric)
  check_classifier_input(classifier_bank(ctx), ctx.generator.img_resolution, metric)


# ----------------------------------------------------------------------------------------------
# Device side: generate and classify.

def downsample_to(images: jnp.ndarray, size: int = CLASSIFIER_RESOLUTION) -> jnp.ndarray:
  """`[N, H, W, C]` box-averaged over `f x f` blocks, `f = H // size`, when `H > size`."""
  factor = images.shape[1] // size
  return downsample_box(images, factor) if images.shape[1] > size else images


def classifier_input_size(img_resolution: int, size: int = CLASSIFIER_RESOLUTION) -> int:
  """Height of `downsample_to` of a square `img_resolution` output."""
  return img_resolution // (img_resolution // size) if img_resolution > size else img_resolution


def make_ls_step(generator: nn.Module, mesh: Mesh, batch_size: int,
                 classify: Callable[[Any, jnp.ndarray], jnp.ndarray],
                 classifier_resolution: int = CLASSIFIER_RESOLUTION) -> Callable:
  """A jitted `(g_variables, classifier_params, key_data, labels) -> dict` for one batch.

  Args:
    generator: a module with `map(z, c)` -> ws `[N, num_ws, w_dim]` (not truncated) and
      `synthesize(ws, noise_mode)` -> images `[N, H, W, C]` (random noise from the `'noise'`
      rng stream); run in float32.
    mesh: samples are split over its 'data' axis (`batch_size` must divide over the devices).
    batch_size: samples per call.
    classify: `(classifier_params, images [N, R, R, 3]) -> logits [N, A]` (`ClassifierBank`).
    classifier_resolution: R; larger images are box-downsampled to it.

  Returns:
    `step(g_variables, classifier_params, key_data, labels)`: `key_data` is
    `jax.random.key_data` of the batch's key (replicated), `labels [L, c_dim]` the dataset's
    labels for conditional generators (None otherwise). Returns replicated
    `{'z': [B, z_dim], 'w': [B, w_dim] (the last row of ws), 'logits': [B, A], 'finite': [B]
    (whether every value of the sample's image is finite)}`.
  """
  rows = batch_sharded(mesh)

  def step(g_variables, classifier_params, key_data, labels):
    key_z, key_c, key_noise = jax.random.split(jax.random.wrap_key_data(key_data), 3)
    z = jax.lax.with_sharding_constraint(
        jax.random.normal(key_z, (batch_size, generator.z_dim)), rows)  # [B, z_dim]
    c = None
    if labels is not None:
      c = labels[jax.random.randint(key_c, (batch_size,), 0, labels.shape[0])]  # [B, c_dim]
    ws = generator.apply(g_variables, z, c, method='map')  # [B, num_ws, w_dim]
    images = generator.apply(g_variables, ws, 'random', method='synthesize',
                             rngs={'noise': key_noise}).astype(jnp.float32)
    if images.shape[-1] == 1:
      images = jnp.repeat(images, 3, axis=-1)  # grey -> RGB (TF StyleGAN2)
    logits = classify(classifier_params, downsample_to(images, classifier_resolution))
    # The images themselves stay on the devices: one flag per sample says whether they are finite.
    finite = jnp.all(jnp.isfinite(images), axis=(1, 2, 3))
    return {'z': z, 'w': ws[:, -1], 'logits': logits.astype(jnp.float32), 'finite': finite}

  return jax.jit(step, out_shardings=replicated(mesh))


# ----------------------------------------------------------------------------------------------
# Host side: the protocol.

def attribute_probabilities(logits: np.ndarray) -> np.ndarray:
  """Logits `[N, A]` -> `softmax([l, -l])` `[N, A, 2]` in float32 (index 0: `sigmoid(2 l)`)."""
  pair = np.asarray(logits, np.float32)[..., None] * np.array([1, -1], np.float32)  # [N, A, 2]
  e = np.exp(pair - pair.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def most_confident(probabilities: np.ndarray, num_keep: int) -> np.ndarray:
  """Indices of the `num_keep` samples with the largest `max(p)` (`probabilities [N, 2]`), in
  descending confidence; ties keep sample order (the official stable `sorted`)."""
  confidence = np.asarray(probabilities).max(axis=1)
  return np.argsort(-confidence, kind='stable')[:num_keep]


def fit_and_predict(inputs: np.ndarray, targets: np.ndarray, max_iter: int = 1000,
                    random_state: int = 0) -> np.ndarray:
  """LinearSVC (official settings, `SVM_SETTINGS`) fit on `inputs [N, D]`, `targets [N]`;
  its predictions on the same inputs. Targets of one class only return the targets (the
  official perfect prediction; LinearSVC refuses one class).

  Raises:
    ValueError: `inputs` hold NaN or infinity (LinearSVC's own errors propagate too).
  """
  import sklearn.exceptions  # scikit-learn is imported only when LS runs
  import sklearn.svm
  if not np.all(np.isfinite(inputs)):  # checked before the one-class case, which reads no input
    raise ValueError('linear separability: the latents hold NaN or infinity; a generator whose '
                     'outputs are not finite cannot be scored')
  if np.unique(targets).size < 2:
    return np.array(targets, copy=True)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', sklearn.exceptions.ConvergenceWarning)
    svm = sklearn.svm.LinearSVC(**{**SVM_SETTINGS, 'max_iter': max_iter},
                                random_state=random_state)
    svm.fit(inputs, targets)
    return svm.predict(inputs)


def joint_table(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """`P[x][y]`: fraction of samples with prediction x and target y, x, y in {0, 1} `[2, 2]`."""
  predictions, targets = np.asarray(predictions), np.asarray(targets)
  return np.array([[np.mean((predictions == x) & (targets == y)) for y in (0, 1)]
                   for x in (0, 1)])


def conditional_entropy(table: np.ndarray) -> float:
  """`H(Y|X) = H(Y) - I(X; Y)` in bits of a joint table (rows X, columns Y), >= 0.

  1. `p = table / sum(table)` in float32 (the official `prob_normalize`); marginals `p_x`, `p_y`.
  2. `I = sum p_xy log2(p_xy / (p_x p_y))`, `H(Y) = -sum p_y log2 p_y`, both over the nonzero
     terms, accumulated in float64.
  3. `max(0, H(Y) - I)` (rounding can put it just below 0).
  """
  p = np.asarray(table, np.float32)
  p = p / np.sum(p)
  px, py = p.sum(axis=1).astype(np.float64), p.sum(axis=0).astype(np.float64)
  p = p.astype(np.float64)
  mutual = sum(p[x, y] * np.log2(p[x, y] / (px[x] * py[y]))
               for x in range(p.shape[0]) for y in range(p.shape[1]) if p[x, y] > 0)
  entropy_y = -sum(q * np.log2(q) for q in py if q > 0)
  return max(0.0, float(entropy_y - mutual))


def separability_score(entropies: Sequence[float]) -> float:
  """`2 ** sum(H)`: the official score from per-attribute conditional entropies in bits."""
  return float(2.0 ** np.sum(np.asarray(entropies, np.float64)))


def attribute_entropies(latents: dict[str, np.ndarray], probabilities: np.ndarray,
                        num_keep: int, max_iter: int = 1000,
                        random_state: int = 0) -> dict[str, np.ndarray]:
  """Steps 4-6 of the module docstring for every attribute.

  Args:
    latents: space name -> `[N, D]` (e.g. `{'z': z, 'w': w}`).
    probabilities: `[N, A, 2]` from `attribute_probabilities`.
    num_keep: samples kept per attribute.
    max_iter: LinearSVC iterations.
    random_state: LinearSVC's seed.

  Returns:
    space name -> `H(Y|X)` per attribute `[A]` (bits).

  Raises:
    ValueError: the probabilities or latents hold NaN or infinity.
  """
  if not np.all(np.isfinite(probabilities)):  # NaN would label every sample alike: "perfect"
    raise ValueError('linear separability: the attribute probabilities hold NaN or infinity; '
                     'a generator whose outputs are not finite cannot be scored')
  out = {space: [] for space in latents}
  for a in range(probabilities.shape[1]):
    keep = most_confident(probabilities[:, a], num_keep)
    targets = np.argmax(probabilities[keep, a], axis=1)
    for space, values in latents.items():
      predictions = fit_and_predict(values[keep], targets, max_iter, random_state)
      out[space].append(conditional_entropy(joint_table(predictions, targets)))
  return {space: np.asarray(h) for space, h in out.items()}


def check_finite(outputs: dict[str, np.ndarray], network: str, metric: str = 'ls') -> None:
  """Raises a one-line ValueError naming `network` when samples of `make_ls_step`'s outputs hold
  NaN or infinity (the protocol has no score for them), saying which outputs and what to do."""
  num = len(outputs['logits'])
  bad_rows = lambda x: int(np.sum(~np.isfinite(np.asarray(x)).reshape(num, -1).all(axis=1)))
  count = lambda bad: f'all {num}' if bad == num else f'{bad} of {num}'
  generator = {'z latents': bad_rows(outputs['z']), 'w latents': bad_rows(outputs['w']),
               'images': int(np.sum(~np.asarray(outputs['finite'], bool)))}
  for what, bad in generator.items():
    if bad:
      raise ValueError(f'{metric}: {network} gives non-finite {what} (NaN or infinity) for '
                       f'{count(bad)} samples, so it cannot be scored; its weights are broken '
                       f'(diverged training or a damaged file): evaluate an earlier snapshot')
  bad = bad_rows(outputs['logits'])
  if bad:  # finite images: the classifiers' fault
    raise ValueError(f'{metric}: the attribute classifiers give non-finite logits (NaN or '
                     f'infinity) for {count(bad)} images of {network}, so it cannot be scored; '
                     f'check the classifier files (--classifiers)')


def compute_ls(ctx, num_samples: int, seed: int, *, metric: str = 'ls',
               num_keep: Optional[int] = None, bank: Optional[ClassifierBank] = None,
               max_iter: int = 1000) -> dict[str, float]:
  """Linear separability of the context's generator (see the module docstring).

  Args:
    ctx: a `MetricContext` (generator, mesh, batch size, labels; `weights['attribute_classifiers']`
      names the directory of the 40 classifier pickles).
    num_samples: generated samples (official 200,000).
    seed: the run's seed (latents, noise, labels; LinearSVC's `random_state`).
    metric: results are `{metric}_z`, `{metric}_w`.
    num_keep: samples kept per attribute (None: `num_samples // 2`).
    bank: the classifiers (None: the context's official ones); tests pass their own.
    max_iter: LinearSVC iterations.

  Returns:
    `{f'{metric}_z': score, f'{metric}_w': score}`.

  Raises:
    FileNotFoundError: the classifiers are not given or incomplete.
    ValueError: the generated images are smaller than the classifiers' input, `num_keep` is not
      within `1..num_samples`, or latents, images or logits are not finite (naming
      `ctx.network`).
  """
  if bank is None:
    bank = classifier_bank(ctx)
  else:
    bank = dataclasses.replace(bank, params=replicate(bank.params, ctx.mesh))
  check_classifier_input(bank, ctx.generator.img_resolution, metric)
  num_keep = kept_samples(num_samples, num_keep, metric)
  step = ctx.memo(('ls', bank.forward, bank.resolution), lambda: make_ls_step(
      ctx.generator, ctx.mesh, ctx.batch_size, bank.forward, bank.resolution))
  outputs = ctx.run_batches(
      lambda key_data: step(ctx.g_variables, bank.params, key_data, ctx.labels),
      num_samples, seed, f'{metric} samples')
  check_finite(outputs, ctx.network, metric)
  entropies = attribute_entropies({'z': outputs['z'], 'w': outputs['w']},
                                  attribute_probabilities(outputs['logits']), num_keep,
                                  max_iter, random_state=seed)
  return {f'{metric}_{space}': separability_score(entropies[space]) for space in SPACES}
