"""The training phases of one minibatch: pure functions `(models, cfg, state, batch, lod) ->
(state, metrics)`, a table of when each runs, and `TrainStep`, which jits them over a mesh.

Order and intervals as the official phase list (REFERENCE.md §2.5, `PHASES`): G main, G reg (every
`g_reg_interval` minibatches), D main, D reg (every `d_reg_interval`), then the G EMA update,
which also advances the step and the image count. Each phase is its own Adam update; a phase's
keys are `fold_in(fold_in(base, step), phase)`, so a resumed run draws exactly what an
uninterrupted one would. With an interval of None the regularizer is added to the main loss of
every minibatch instead (configs A/B). For progressive networks (configs A-D) the working
resolution is static (one compiled program per resolution) and `lod` a traced scalar, so a
fade-in does not recompile; every network takes `lod` and `resolution` (fixed ones ignore them).

With ADA (`StepConfig.augment`, REFERENCE.md §7.6-§7.7) every D evaluation sees augmented
images: G main's fakes, D main's fakes and reals, D reg's reals, with independent draws from
`fold_in(phase key, AUGMENT_STREAM)`; R1 is the gradient w.r.t. the reals before augmentation.
`p` is in the state (traced); the D phases count the signs of D's real logits, and the `ada`
phase, after every minibatch, turns them into `r_t` every `ada_interval` minibatches and, with
an adaptive p, adjusts p.
"""

import dataclasses
import functools
import time
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from absl import logging
from jax.sharding import Mesh

from sg2jax import losses
from sg2jax.augment import AugmentSpec, augment_images
from sg2jax.networks.generator import mix_styles, sample_mixing_cutoff
from sg2jax.ops.pyramid import lower_resolution_copy, process_reals
from sg2jax.sharding import batch_sharded, replicated
from sg2jax.train.optimizers import all_finite
from sg2jax.train.state import AugmentState, GANState

PHASE_NAMES = ('g_main', 'g_reg', 'd_main', 'd_reg', 'ema', 'ada')
# Rematerialization of G's synthesis network and of D in the phases' backward passes:
# - 'none': XLA keeps what it chooses (every intermediate the derivatives need, as a rule);
# - 'blocks': every synthesis and discriminator block runs under a checkpoint
#   (`networks.layers.call_block`): the backward pass keeps the blocks' inputs and computes a
#   block's intermediates again when it takes that block's gradient. The values are those of
#   'none' (the same operations run again); a block's intermediates are in memory one block at a
#   time, for about one more forward pass of arithmetic;
# - 'blocks_ordered': as 'blocks', and in G's loss each synthesis block's backward pass hands the
#   gradient on to the block before it only together with its parameters' gradients, so the
#   compiler cannot postpone the reductions that give them (and the maps they read) to the end
#   of the backward pass. The same values again. Compiled for one v5e chip, where the compiler
#   postpones them, it takes config F's G main at 1024 from 9.55 to 7.46 GiB; on a v5e-8, where
#   it does not, G main needs 1 GiB more (docs/TPU.md). Not ordered: the path-length term (it
#   differentiates a gradient of G, and there the order cost G reg memory and arithmetic) and
#   D's blocks (G main leaves D's parameters alone; the order would compute their gradients).
REMAT_MODES = ('none', 'blocks', 'blocks_ordered')
AUGMENT_STREAM = 0xADA  # a phase's augmentation key: fold_in(phase key, AUGMENT_STREAM)


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """ADA in the phases (REFERENCE.md §7.1, §7.7; made by `train/build.py`).

  Attributes:
    spec: the transforms (a preset such as 'bgc').
    initial_p: p at the start of a run (the fixed p when `ada_target` is None).
    ada_target: the target of `r_t = E[sign(D(augmented real))]`; None keeps p fixed.
    ada_interval: minibatches between adjustments of p.
    ada_kimg: thousands of images for p to change by 1.
  """
  spec: AugmentSpec
  initial_p: float
  ada_target: Optional[float]
  ada_interval: int
  ada_kimg: float

  @property
  def adaptive(self) -> bool:
    return self.ada_target is not None


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What the phases need besides the networks and optimizers (made by `train/build.py`)."""
  batch_size: int
  pl_batch_shrink: int
  batch_gpu: Optional[int]  # the official per-GPU batch: minibatch-stddev groups form within it
  style_mixing_prob: float
  r1_gamma: float
  pl_weight: float
  pl_decay: float
  g_reg_interval: Optional[int]
  d_reg_interval: Optional[int]
  ema_kimg: float
  ema_rampup: Optional[float]
  resolution: Optional[int] = None  # working resolution of progressive networks (None: R)
  level: int = 0  # floor(lod) at that resolution: log2(R / resolution)
  augment: Optional[AugmentSettings] = None  # None: D sees the images as they are
  remat: str = 'none'  # REMAT_MODES: what G's synthesis and D keep for their backward pass
  num_devices: int = 1  # devices the batch is split over

  @property
  def pl_batch_size(self) -> int:
    """The path-length batch (`path_length_batch`)."""
    return path_length_batch(self.batch_size, self.pl_batch_shrink, self.num_devices)


def path_length_batch(batch_size: int, pl_batch_shrink: int, num_devices: int) -> int:
  """The path-length regularizer's batch: `pl_batch_shrink` times smaller than the minibatch on
  every device, as the official code shrinks each GPU's part (`batch_gpu // pl_batch_shrink`,
  REFERENCE.md §2.3), so `batch_size / pl_batch_shrink` whenever the shrink divides the
  per-device batch. Unlike the
  official code, whose regularizer gets an empty batch when a GPU has fewer images than the
  shrink, every device keeps at least one image."""
  per_device = batch_size // num_devices
  return num_devices * max(1, per_device // pl_batch_shrink)


class Models(NamedTuple):
  """The networks and optimizers the phases close over, and how a batch lies on the devices.

  `rows` is the batch's sharding (rows split over the mesh's 'data' axis). The latents a phase
  draws itself (z, the path-length batch and its image-space noise) are laid out that way too:
  nothing else ties G's computation to the batch's devices, and XLA would otherwise compute
  every fake image of the minibatch on every device. With `jax_threefry_partitionable` the
  values drawn do not depend on the layout. None: one device, nothing to lay out.
  """
  generator: object
  discriminator: object
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  rows: Optional[jax.sharding.Sharding] = None


def split_rows(models: Models, x: jnp.ndarray) -> jnp.ndarray:
  """`x` (leading axis: samples) split over the devices as the batch is (`Models.rows`)."""
  return x if models.rows is None else jax.lax.with_sharding_constraint(x, models.rows)


def ema_beta(batch_size: int, ema_kimg: float, nimg=None, rampup: Optional[float] = None):
  """G_ema's decay per minibatch, `0.5^(batch / ema_nimg)` (REFERENCE.md §2.7), `ema_nimg =
  ema_kimg * 1000`, limited to `nimg * rampup` with ADA's ramp-up."""
  ema_nimg = ema_kimg * 1000.0
  if rampup is not None:
    ema_nimg = jnp.minimum(ema_nimg, jnp.asarray(nimg, jnp.float32) * rampup)
  return 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))


def _phase_key(state: GANState, phase: str) -> jax.Array:
  key = jax.random.fold_in(jax.random.wrap_key_data(state.base_key), state.step)
  return jax.random.fold_in(key, PHASE_NAMES.index(phase))


def _augment_key(phase_key: jax.Array) -> jax.Array:
  """The augmentation's key of a phase: a stream of its own, so the phase's other draws stay
  those of a run without augmentation."""
  return jax.random.fold_in(phase_key, AUGMENT_STREAM)


def real_images(batch: dict, cfg: StepConfig, lod) -> jnp.ndarray:
  """uint8 `[0, 255]` -> float32 `[-1, 1]` (`x / 127.5 - 1`, REFERENCE.md §2.1); when growing, the
  dataset's lower-resolution copy faded by `lod` (TF `process_reals`, REFERENCE.md §3.3)."""
  if cfg.resolution is None:
    return batch['image'].astype(jnp.float32) / 127.5 - 1
  images = lower_resolution_copy(batch['image'], cfg.level)
  return process_reals(images, lod, batch['image'].shape[1])


def labels(batch: dict) -> Optional[jnp.ndarray]:
  """Labels `[N, c_dim]`, or None for unconditional data; fakes use the reals' labels."""
  label = batch.get('label')
  return None if label is None or label.shape[-1] == 0 else label.astype(jnp.float32)


def _update(tx: optax.GradientTransformation, params, opt_state, grads):
  """One optimizer step; the metric says whether the gradients were finite (`tx` decides what a
  non-finite step does: `train/optimizers.py`)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  finite = all_finite(grads).astype(jnp.float32)
  return optax.apply_updates(params, updates), opt_state, finite


# ----------------------------------------------------------------------------------------------
# G and D as the phases run them.

def run_generator(models: Models, cfg: StepConfig, g_vars: dict, z, c, key):
  """G's mapping as in training: w_avg update, style mixing over the levels in use (TF mixes
  `num_ws - 2 floor(lod)` layers). Returns (ws after mixing, new stats, noise key)."""
  generator = models.generator
  key_mix, key_z2, key_noise = jax.random.split(key, 3)
  ws, mutated = generator.apply(g_vars, z, c, update_w_avg=True, mutable=['stats'],
                                method='map')
  if cfg.style_mixing_prob > 0:
    cutoff = sample_mixing_cutoff(key_mix, generator.num_ws - 2 * cfg.level,
                                  cfg.style_mixing_prob)
    z2 = split_rows(models, jax.random.normal(key_z2, z.shape))
    ws2 = generator.apply(g_vars, z2, c, method='map')
    ws = mix_styles(ws, ws2, cutoff)
  return ws, mutated['stats'], key_noise


def synthesize(models: Models, cfg: StepConfig, g_vars: dict, ws, key_noise, lod,
               remat: Optional[str] = None):
  """G's synthesis of `ws` under `remat` (default `cfg.remat`)."""
  return models.generator.apply(g_vars, ws, 'random', rngs={'noise': key_noise},
                                method='synthesize', lod=lod, resolution=cfg.resolution,
                                remat=cfg.remat if remat is None else remat)


def discriminate(models: Models, cfg: StepConfig, d_vars: dict, img, c, lod):
  return models.discriminator.apply(d_vars, img, c, cfg.batch_gpu, lod=lod,
                                    resolution=cfg.resolution, remat=cfg.remat)


def augment(cfg: StepConfig, state: GANState, key, img):
  """`img` through ADA's pipeline with the state's p (REFERENCE.md §7.6), differentiable
  w.r.t. `img`; `img` itself when the run does not augment."""
  if cfg.augment is None:
    return img
  return augment_images(key, img, state.augment.p, cfg.augment.spec)


def count_signs(cfg: StepConfig, state: GANState, real_logits) -> GANState:
  """Adds `sum(sign(real_logits))` and their number to ADA's accumulators."""
  if cfg.augment is None:
    return state
  signs = jnp.sum(jnp.nan_to_num(jnp.sign(real_logits)).astype(jnp.int32))  # NaN counts as 0
  return state.replace(augment=state.augment.replace(
      signs=state.augment.signs + signs, count=state.augment.count + real_logits.size))


def path_length_terms(models: Models, cfg: StepConfig, g_vars: dict, pl_mean, c, key, lod):
  """(penalty per sample, new pl_mean, new stats, lengths) on a fresh `pl_batch_size` batch."""
  generator = models.generator
  key_z, key_g, key_y = jax.random.split(key, 3)
  z = split_rows(models, jax.random.normal(key_z, (cfg.pl_batch_size, generator.z_dim)))
  c = None if c is None else c[:cfg.pl_batch_size]
  ws, stats, key_noise = run_generator(models, cfg, g_vars, z, c, key_g)
  r = generator.img_resolution
  y = split_rows(models, jax.random.normal(key_y, (cfg.pl_batch_size, r, r,
                                                  generator.img_channels)))
  # The path-length term differentiates a gradient of G: ordering its blocks' gradients there
  # costs more memory and arithmetic than it saves (docs/TPU.md), so they run as 'blocks'.
  remat = 'blocks' if cfg.remat == 'blocks_ordered' else cfg.remat
  lengths, _ = losses.path_lengths(
      lambda w: synthesize(models, cfg, g_vars, w, key_noise, lod, remat), ws, y)
  penalty, pl_mean = losses.path_length_penalty(lengths, pl_mean, cfg.pl_decay)
  return penalty, pl_mean, stats, lengths


def r1_term(cfg: StepConfig, discriminate_real: Callable, real):
  """(`gamma / 2 * penalty`, penalty) per sample; `discriminate_real(x)` is D on the reals `x`
  (through the augmentation with ADA: the gradient is w.r.t. the un-augmented reals)."""
  penalty, _ = losses.r1_penalty(discriminate_real, real)
  return penalty * (cfg.r1_gamma / 2), penalty


# ----------------------------------------------------------------------------------------------
# The phases.

def g_main(models: Models, cfg: StepConfig, state: GANState, batch: dict, lod):
  """Non-saturating G loss on D's scores of fakes (+ the path-length penalty without lazy
  regularization)."""
  key = _phase_key(state, 'g_main')
  key_z, key_g, key_pl = jax.random.split(key, 3)
  key_augment = _augment_key(key)
  c = labels(batch)
  z = split_rows(models, jax.random.normal(key_z, (cfg.batch_size, models.generator.z_dim)))
  with_pl = cfg.g_reg_interval is None and cfg.pl_weight > 0

  def loss_fn(params):
    g_vars = {**state.g, 'params': params}
    ws, stats, key_noise = run_generator(models, cfg, g_vars, z, c, key_g)
    fake = synthesize(models, cfg, g_vars, ws, key_noise, lod)
    logits = discriminate(models, cfg, state.d, augment(cfg, state, key_augment, fake), c,
                          lod)
    loss = losses.g_nonsaturating_loss(logits).mean()
    aux = {'stats': stats, 'pl_mean': state.pl_mean,
           'metrics': {'Loss/G/loss': loss, 'Loss/scores/fake': logits.mean()}}
    if with_pl:
      g_vars = {**g_vars, 'stats': stats}  # the PL forward updates w_avg once more
      penalty, pl_mean, stats, lengths = path_length_terms(models, cfg, g_vars, state.pl_mean,
                                                           c, key_pl, lod)
      loss = loss + (penalty * cfg.pl_weight).mean()
      aux['pl_mean'], aux['stats'] = pl_mean, stats
      aux['metrics'].update({'Loss/pl_penalty': penalty.mean(), 'Loss/pl_length': lengths.mean()})
    return loss, aux

  (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g['params'])
  params, g_opt, finite = _update(models.g_tx, state.g['params'], state.g_opt, grads)
  metrics = {**aux['metrics'], 'Grad/G/norm': optax.tree.norm(grads), 'Grad/G/finite': finite,
             'Loss/pl_mean': aux['pl_mean']}
  g = {**state.g, 'params': params, 'stats': aux['stats']}
  return state.replace(g=g, g_opt=g_opt, pl_mean=aux['pl_mean']), metrics


def g_reg(models: Models, cfg: StepConfig, state: GANState, batch: dict, lod):
  """Lazy path-length regularization: `pl_weight * penalty * g_reg_interval`."""
  key = _phase_key(state, 'g_reg')
  c = labels(batch)

  def loss_fn(params):
    g_vars = {**state.g, 'params': params}
    penalty, pl_mean, stats, lengths = path_length_terms(models, cfg, g_vars, state.pl_mean, c,
                                                         key, lod)
    loss = (penalty * cfg.pl_weight).mean() * cfg.g_reg_interval
    return loss, (stats, pl_mean, penalty.mean(), lengths.mean())

  (_, (stats, pl_mean, penalty, length)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.g['params'])
  params, g_opt, finite = _update(models.g_tx, state.g['params'], state.g_opt, grads)
  metrics = {'Loss/pl_penalty': penalty, 'Loss/pl_length': length, 'Loss/pl_mean': pl_mean,
             'Grad/G_reg/norm': optax.tree.norm(grads), 'Grad/G_reg/finite': finite}
  g = {**state.g, 'params': params, 'stats': stats}
  return state.replace(g=g, g_opt=g_opt, pl_mean=pl_mean), metrics


def d_main_losses(models: Models, cfg: StepConfig, state: GANState, batch: dict, lod):
  """D main's two terms as functions of D's params, with what they are computed on:
  `(fake_loss(params), real_loss(params, real), real, G's new stats)`. `fake_loss` is the
  logistic loss on fakes; `real_loss` gives (loss on reals + R1 without lazy regularization,
  (loss on reals, metrics, real logits))."""
  key = _phase_key(state, 'd_main')
  key_z, key_g = jax.random.split(key)
  key_augment_fake, key_augment_real = jax.random.split(_augment_key(key))
  c = labels(batch)
  real = real_images(batch, cfg, lod)
  z = split_rows(models, jax.random.normal(key_z, (cfg.batch_size, models.generator.z_dim)))
  ws, stats, key_noise = run_generator(models, cfg, state.g, z, c, key_g)
  fake = jax.lax.stop_gradient(synthesize(models, cfg, state.g, ws, key_noise, lod))
  with_r1 = cfg.d_reg_interval is None and cfg.r1_gamma > 0

  def fake_loss(params):
    d_vars = {**state.d, 'params': params}
    fake_logits = discriminate(
        models, cfg, d_vars, augment(cfg, state, key_augment_fake, fake), c, lod)
    return losses.d_fake_loss(fake_logits).mean()

  def real_loss(params, real):
    d_vars = {**state.d, 'params': params}
    discriminate_real = lambda x: discriminate(
        models, cfg, d_vars, augment(cfg, state, key_augment_real, x), c, lod)
    real_logits = discriminate_real(real)
    loss = losses.d_real_loss(real_logits).mean()
    metrics = {'Loss/scores/real': real_logits.mean(),
               'Loss/signs/real': jnp.sign(real_logits).mean()}
    if with_r1:
      r1_loss, penalty = r1_term(cfg, discriminate_real, real)
      metrics['Loss/r1_penalty'] = penalty.mean()
      return loss + r1_loss.mean(), (loss, metrics, real_logits)
    return loss, (loss, metrics, real_logits)

  return fake_loss, real_loss, real, stats


def d_main_gradient(fake_loss: Callable, real_loss: Callable, params, real):
  """`(metrics, real logits), gradient` of D main's loss, the sum of its two terms.

  The fakes' gradient is taken first, and the reals' pass starts only when it is done
  (`optimization_barrier` makes the reals wait for it), as the official code runs two backward
  passes: with one gradient of the sum the compiler may keep both passes' activations alive at
  once (D main at 1024 on a TPU needed 10.5 GiB per chip instead of 7.3, docs/TPU.md)."""
  loss_fake, fake_grads = jax.value_and_grad(fake_loss)(params)
  fake_grads, real = jax.lax.optimization_barrier((fake_grads, real))
  (_, (loss_real, metrics, real_logits)), real_grads = jax.value_and_grad(
      real_loss, has_aux=True)(params, real)
  metrics = {**metrics, 'Loss/D/loss': loss_fake + loss_real}
  return (metrics, real_logits), jax.tree.map(jnp.add, fake_grads, real_grads)


def d_main(models: Models, cfg: StepConfig, state: GANState, batch: dict, lod):
  """Logistic D loss on reals and fakes (+ R1 without lazy regularization)."""
  fake_loss, real_loss, real, stats = d_main_losses(models, cfg, state, batch, lod)
  (metrics, real_logits), grads = d_main_gradient(fake_loss, real_loss, state.d['params'], real)
  params, d_opt, finite = _update(models.d_tx, state.d['params'], state.d_opt, grads)
  metrics.update({'Grad/D/norm': optax.tree.norm(grads), 'Grad/D/finite': finite})
  if cfg.augment is not None:
    metrics['Augment/p'] = state.augment.p
  new_state = state.replace(d={**state.d, 'params': params}, d_opt=d_opt,
                            g={**state.g, 'stats': stats})
  return count_signs(cfg, new_state, real_logits), metrics


def d_reg(models: Models, cfg: StepConfig, state: GANState, batch: dict, lod):
  """Lazy R1: `gamma / 2 * penalty * d_reg_interval` on the reals (the gradient w.r.t. the reals
  before augmentation, REFERENCE.md §7.6)."""
  c = labels(batch)
  real = real_images(batch, cfg, lod)
  key_augment = _augment_key(_phase_key(state, 'd_reg'))

  def discriminate_real(d_vars, x):
    return discriminate(models, cfg, d_vars, augment(cfg, state, key_augment, x), c, lod)

  def loss_fn(params):
    d_vars = {**state.d, 'params': params}
    r1_loss, penalty = r1_term(cfg, functools.partial(discriminate_real, d_vars), real)
    return r1_loss.mean() * cfg.d_reg_interval, penalty.mean()

  (_, penalty), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d['params'])
  params, d_opt, finite = _update(models.d_tx, state.d['params'], state.d_opt, grads)
  metrics = {'Loss/r1_penalty': penalty, 'Grad/D_reg/norm': optax.tree.norm(grads),
             'Grad/D_reg/finite': finite}
  new_state = state.replace(d={**state.d, 'params': params}, d_opt=d_opt)
  if cfg.augment is not None:
    # ADA counts the signs of this phase's real logits too (the same forward pass, before the
    # update; XLA shares it with the one inside the R1 gradient: +4k flops of 2.2G at 32x32).
    new_state = count_signs(cfg, new_state, discriminate_real(state.d, real))
  return new_state, metrics


def ema(models: Models, cfg: StepConfig, state: GANState, batch: dict, lod):
  """G_ema <- G + beta (G_ema - G) (REFERENCE.md §2.7); buffers and w_avg are copied. Advances the
  step and the image count."""
  del models, batch, lod
  beta = ema_beta(cfg.batch_size, cfg.ema_kimg, state.nimg, cfg.ema_rampup)
  params = optax.incremental_update(state.g['params'], state.g_ema['params'], 1.0 - beta)
  g_ema = {**state.g, 'params': params}
  return state.replace(g_ema=g_ema, step=state.step + 1,
                       nimg=state.nimg + cfg.batch_size), {'Progress/ema_beta': beta}


def ada(models: Models, cfg: StepConfig, state: GANState, batch: dict, lod):
  """ADA's adjustment of p (REFERENCE.md §7.7), after every minibatch (the step advanced).

  When the step is a multiple of `ada_interval` (the official `batch_idx % ada_interval == 0`
  after `batch_idx += 1`) and signs were counted:
  1. `r_t = signs / count`, the mean sign of D's real logits since the last adjustment.
  2. Adaptive p only: `p <- max(0, p + sign(r_t - ada_target) * batch_size * ada_interval /
     (ada_kimg * 1000))` (no upper clamp, as officially). A fixed p stays as it is.
  3. The accumulators restart at 0.
  Reports `Augment/rt`, the `r_t` of the signs counted so far in the current interval.
  """
  del models, batch, lod
  settings, current = cfg.augment, state.augment
  rt = current.signs.astype(jnp.float32) / jnp.maximum(current.count, 1).astype(jnp.float32)
  due = (state.step % settings.ada_interval == 0) & (current.count > 0)
  p = current.p
  if settings.adaptive:
    adjust = jnp.sign(rt - settings.ada_target) * (
        cfg.batch_size * settings.ada_interval / (settings.ada_kimg * 1000))
    p = jnp.where(due, jnp.maximum(p + adjust, 0.0), p).astype(jnp.float32)
  zero = jnp.zeros((), jnp.int32)
  augment_state = AugmentState(p=p, signs=jnp.where(due, zero, current.signs),
                               count=jnp.where(due, zero, current.count))
  return state.replace(augment=augment_state), {'Augment/rt': rt}


def phase_table(cfg: StepConfig) -> tuple[tuple[str, Callable, Optional[int]], ...]:
  """`(name, phase, interval)` in the official order; a phase runs at minibatch `step` when
  `step % interval == 0`, never when its interval is None (a regularizer that is off, or folded
  into its main phase). With ADA, `ada` runs last in every minibatch (it acts every
  `ada_interval` minibatches itself, on the step `ema` advanced)."""
  g_reg_interval = cfg.g_reg_interval if cfg.pl_weight > 0 else None
  d_reg_interval = cfg.d_reg_interval if cfg.r1_gamma > 0 else None
  table = (('g_main', g_main, 1), ('g_reg', g_reg, g_reg_interval), ('d_main', d_main, 1),
           ('d_reg', d_reg, d_reg_interval), ('ema', ema, 1))
  if cfg.augment is not None:
    table += (('ada', ada, 1),)
  return table


def due(table, step: int) -> list[str]:
  """The names of the table's phases that run at minibatch `step`."""
  return [name for name, _, interval in table if interval and step % interval == 0]


CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


class TrainStep:
  """The phases jitted over a mesh: the state replicated (and donated), the batch split over
  'data'. Each phase is compiled on its first call, with a log line before and one with the
  time it took (or that it came from the persistent compilation cache). `__call__(state, batch,
  step, lod)` runs the phases due at `step` and returns the new state and their metrics."""

  def __init__(self, models: Models, cfg: StepConfig, mesh: Mesh, state_sharding=None):
    self.cfg = cfg
    self.mesh = mesh
    self.table = phase_table(cfg)
    self.compile_seconds: dict[str, float] = {}
    self._executables: dict[str, Callable] = {}
    state_sharding = replicated(mesh) if state_sharding is None else state_sharding
    self.phases = {
        name: jax.jit(functools.partial(phase, models, cfg),
                      in_shardings=(state_sharding, batch_sharded(mesh), replicated(mesh)),
                      out_shardings=(state_sharding, replicated(mesh)), donate_argnums=0)
        for name, phase, _ in self.table}

  def lower(self, name: str, state: GANState, batch: dict, lod) -> jax.stages.Lowered:
    """Phase `name` lowered for these arguments (or their `jax.ShapeDtypeStruct`s), traced under
    the mesh: the ops see how many devices split the batch (`ops.conv2d.batch_devices`)."""
    with jax.set_mesh(self.mesh):
      return self.phases[name].lower(state, batch, lod)

  def executable(self, name: str, state: GANState, batch: dict, lod) -> Callable:
    """Phase `name` compiled for these arguments' shapes (once; logged with its time)."""
    if name not in self._executables:
      logging.info('compiling %s ...', name)
      hits = []
      listener = lambda event, **kwargs: hits.append(event) if event == CACHE_HIT_EVENT else None
      jax.monitoring.register_event_listener(listener)
      start = time.perf_counter()
      try:
        self._executables[name] = self.lower(name, state, batch, lod).compile()
      finally:
        jax.monitoring.unregister_event_listener(listener)
      self.compile_seconds[name] = time.perf_counter() - start
      if hits:
        logging.info('loaded %s from the persistent compilation cache in %.1f s', name,
                     self.compile_seconds[name])
      else:
        logging.info('compiled %s in %.1f s', name, self.compile_seconds[name])
    return self._executables[name]

  def __call__(self, state: GANState, batch: dict, step: int,
               lod: float = 0.0) -> tuple[GANState, dict]:
    metrics = {}
    lod = jnp.float32(lod)
    for name in due(self.table, step):
      state, phase_metrics = self.executable(name, state, batch, lod)(state, batch, lod)
      metrics.update(phase_metrics)
    return state, metrics
