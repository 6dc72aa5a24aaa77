"""The training phases of one minibatch, each a pure jitted `(state, batch, lod) -> (state,
metrics)`.

Order as the official phase list (SPEC.md §3.5): G main, G reg (every `g_reg_interval`
minibatches), D main, D reg (every `d_reg_interval`), then the G EMA update, which also advances
the step and the image count. Each phase is its own Adam update; a phase's keys are
`fold_in(fold_in(base, step), phase)`, so a resumed run draws exactly what an uninterrupted one
would. With an interval of None the regularizer is added to the main loss of every minibatch
instead (configs A/B). For progressive networks (configs A-D) the working resolution is static
(one compiled program per resolution) and `lod` a traced scalar, so a fade-in does not recompile.
"""

import collections
import dataclasses
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from absl import logging
from jax.sharding import Mesh

from sg2jax import losses
from sg2jax.networks.generator import mix_styles, sample_mixing_cutoff
from sg2jax.ops.pyramid import lower_resolution_copy, process_reals
from sg2jax.sharding import batch_sharded, replicated
from sg2jax.train.state import GANState

PHASES = ('g_main', 'g_reg', 'd_main', 'd_reg', 'ema')
NAN_POLICIES = ('skip', 'nan_to_num')


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What the phases need besides the networks and optimizers (derived in `train/build.py`)."""
  batch_size: int
  pl_batch_size: int
  mbstd_shard_size: Optional[int]
  style_mixing_prob: float
  r1_gamma: float
  pl_weight: float
  pl_decay: float
  g_reg_interval: Optional[int]
  d_reg_interval: Optional[int]
  ema_kimg: float
  ema_rampup: Optional[float]
  nan_policy: str = 'skip'
  resolution: Optional[int] = None  # working resolution of progressive networks (None: not)
  level: int = 0  # floor(lod) at that resolution: log2(R / resolution)


def _phase_key(state: GANState, phase: str) -> jax.Array:
  key = jax.random.fold_in(jax.random.wrap_key_data(state.base_key), state.step)
  return jax.random.fold_in(key, PHASES.index(phase))


def real_images(batch: dict, cfg: 'StepConfig', lod) -> jnp.ndarray:
  """uint8 `[0, 255]` -> float32 `[-1, 1]` (`x / 127.5 - 1`, SPEC.md §3.1); when growing, the
  dataset's lower-resolution copy faded by `lod` (TF `process_reals`, SPEC.md §2.1)."""
  if cfg.resolution is None:
    return batch['image'].astype(jnp.float32) / 127.5 - 1
  images = lower_resolution_copy(batch['image'], cfg.level)
  return process_reals(images, lod, batch['image'].shape[1])


def labels(batch: dict) -> Optional[jnp.ndarray]:
  """Labels `[N, c_dim]`, or None for unconditional data; fakes use the reals' labels."""
  label = batch.get('label')
  return None if label is None or label.shape[-1] == 0 else label.astype(jnp.float32)


def _apply_gradients(tx, params, opt_state, grads, nan_policy):
  """One optimizer update. Non-finite gradients: 'skip' leaves params and optimizer state as
  they were (TF); 'nan_to_num' maps NaN -> 0, +-inf -> +-1e5 (ADA)."""
  if nan_policy == 'nan_to_num':
    grads = jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), grads)
  updates, new_opt_state = tx.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  finite = jnp.array(True)
  if nan_policy == 'skip':
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    keep = lambda new, old: jnp.where(finite, new, old)
    new_params = jax.tree.map(keep, new_params, params)
    new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
  return new_params, new_opt_state, finite


def make_phases(generator, discriminator, g_tx: optax.GradientTransformation,
                d_tx: optax.GradientTransformation, cfg: StepConfig) -> dict[str, Callable]:
  """The pure (unjitted) phase functions `(state, batch, lod) -> (state, metrics)`."""
  # TF mixes styles over the layers of the levels in use: num_ws - 2 floor(lod).
  num_ws = generator.num_ws - 2 * cfg.level
  growth = (lambda lod: {}) if cfg.resolution is None else (
      lambda lod: {'lod': lod, 'resolution': cfg.resolution})

  def run_generator(g_vars, z, c, key):
    """G forward as in training: w_avg update, style mixing, random noise.
    Returns (images, ws after mixing, new stats)."""
    key_mix, key_z2, key_noise = jax.random.split(key, 3)
    ws, mutated = generator.apply(g_vars, z, c, update_w_avg=True, mutable=['stats'],
                                  method='map')
    if cfg.style_mixing_prob > 0:
      cutoff = sample_mixing_cutoff(key_mix, num_ws, cfg.style_mixing_prob)
      ws2 = generator.apply(g_vars, jax.random.normal(key_z2, z.shape), c, method='map')
      ws = mix_styles(ws, ws2, cutoff)
    return ws, mutated['stats'], key_noise

  def synthesize(g_vars, ws, key_noise, lod):
    return generator.apply(g_vars, ws, 'random', rngs={'noise': key_noise}, method='synthesize',
                           **growth(lod))

  def discriminate(d_vars, img, c, lod):
    return discriminator.apply(d_vars, img, c, cfg.mbstd_shard_size, **growth(lod))

  def path_length_terms(g_vars, pl_mean, c, key, lod):
    """(penalty per sample, new pl_mean, new stats, lengths) on a fresh half batch."""
    key_z, key_g, key_y = jax.random.split(key, 3)
    z = jax.random.normal(key_z, (cfg.pl_batch_size, generator.z_dim))
    c = None if c is None else c[:cfg.pl_batch_size]
    ws, stats, key_noise = run_generator(g_vars, z, c, key_g)
    r = generator.img_resolution
    y = jax.random.normal(key_y, (cfg.pl_batch_size, r, r, generator.img_channels))
    lengths, _ = losses.path_lengths(lambda w: synthesize(g_vars, w, key_noise, lod), ws, y)
    penalty, pl_mean = losses.path_length_penalty(lengths, pl_mean, cfg.pl_decay)
    return penalty, pl_mean, stats, lengths

  def g_main(state: GANState, batch: dict, lod):
    key_z, key_g, key_pl = jax.random.split(_phase_key(state, 'g_main'), 3)
    c = labels(batch)
    z = jax.random.normal(key_z, (cfg.batch_size, generator.z_dim))
    with_pl = cfg.g_reg_interval is None and cfg.pl_weight > 0

    def loss_fn(params):
      g_vars = {**state.g, 'params': params}
      ws, stats, key_noise = run_generator(g_vars, z, c, key_g)
      logits = discriminate(state.d, synthesize(g_vars, ws, key_noise, lod), c, lod)
      loss = losses.g_nonsaturating_loss(logits).mean()
      aux = {'stats': stats, 'pl_mean': state.pl_mean,
             'metrics': {'Loss/G/loss': loss, 'Loss/scores/fake': logits.mean()}}
      if with_pl:
        g_vars = {**g_vars, 'stats': stats}  # the PL forward updates w_avg once more
        penalty, pl_mean, stats, lengths = path_length_terms(g_vars, state.pl_mean, c, key_pl,
                                                             lod)
        loss = loss + (penalty * cfg.pl_weight).mean()
        aux['pl_mean'], aux['stats'] = pl_mean, stats
        aux['metrics'].update({'Loss/pl_penalty': penalty.mean(), 'Loss/pl_length': lengths.mean()})
      return loss, aux

    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.g['params'])
    params, g_opt, finite = _apply_gradients(g_tx, state.g['params'], state.g_opt, grads,
                                             cfg.nan_policy)
    metrics = {**aux['metrics'], 'Grad/G/norm': optax.tree.norm(grads),
               'Grad/G/finite': finite.astype(jnp.float32), 'Loss/pl_mean': aux['pl_mean']}
    g = {**state.g, 'params': params, 'stats': aux['stats']}
    return state.replace(g=g, g_opt=g_opt, pl_mean=aux['pl_mean']), metrics

  def g_reg(state: GANState, batch: dict, lod):
    key = _phase_key(state, 'g_reg')
    c = labels(batch)

    def loss_fn(params):
      g_vars = {**state.g, 'params': params}
      penalty, pl_mean, stats, lengths = path_length_terms(g_vars, state.pl_mean, c, key, lod)
      loss = (penalty * cfg.pl_weight).mean() * cfg.g_reg_interval
      return loss, (stats, pl_mean, penalty.mean(), lengths.mean())

    (_, (stats, pl_mean, penalty, length)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.g['params'])
    params, g_opt, finite = _apply_gradients(g_tx, state.g['params'], state.g_opt, grads,
                                             cfg.nan_policy)
    metrics = {'Loss/pl_penalty': penalty, 'Loss/pl_length': length, 'Loss/pl_mean': pl_mean,
               'Grad/G_reg/norm': optax.tree.norm(grads),
               'Grad/G_reg/finite': finite.astype(jnp.float32)}
    g = {**state.g, 'params': params, 'stats': stats}
    return state.replace(g=g, g_opt=g_opt, pl_mean=pl_mean), metrics

  def r1_term(d_vars, real, c, lod):
    penalty, _ = losses.r1_penalty(lambda x: discriminate(d_vars, x, c, lod), real)
    return penalty * (cfg.r1_gamma / 2), penalty

  def d_main(state: GANState, batch: dict, lod):
    key_z, key_g = jax.random.split(_phase_key(state, 'd_main'))
    c = labels(batch)
    real = real_images(batch, cfg, lod)
    z = jax.random.normal(key_z, (cfg.batch_size, generator.z_dim))
    ws, stats, key_noise = run_generator(state.g, z, c, key_g)
    fake = jax.lax.stop_gradient(synthesize(state.g, ws, key_noise, lod))
    with_r1 = cfg.d_reg_interval is None and cfg.r1_gamma > 0

    def loss_fn(params):
      d_vars = {**state.d, 'params': params}
      fake_logits = discriminate(d_vars, fake, c, lod)
      real_logits = discriminate(d_vars, real, c, lod)
      loss_real, loss_fake = losses.d_logistic_loss(real_logits, fake_logits)
      loss = loss_fake.mean() + loss_real.mean()
      metrics = {'Loss/D/loss': loss, 'Loss/scores/real': real_logits.mean(),
                 'Loss/signs/real': jnp.sign(real_logits).mean()}
      if with_r1:
        r1_loss, penalty = r1_term(d_vars, real, c, lod)
        loss = loss + r1_loss.mean()
        metrics['Loss/r1_penalty'] = penalty.mean()
      return loss, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d['params'])
    params, d_opt, finite = _apply_gradients(d_tx, state.d['params'], state.d_opt, grads,
                                             cfg.nan_policy)
    metrics.update({'Grad/D/norm': optax.tree.norm(grads),
                    'Grad/D/finite': finite.astype(jnp.float32)})
    return state.replace(d={**state.d, 'params': params}, d_opt=d_opt,
                         g={**state.g, 'stats': stats}), metrics

  def d_reg(state: GANState, batch: dict, lod):
    c = labels(batch)
    real = real_images(batch, cfg, lod)

    def loss_fn(params):
      r1_loss, penalty = r1_term({**state.d, 'params': params}, real, c, lod)
      return r1_loss.mean() * cfg.d_reg_interval, penalty.mean()

    (_, penalty), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d['params'])
    params, d_opt, finite = _apply_gradients(d_tx, state.d['params'], state.d_opt, grads,
                                             cfg.nan_policy)
    metrics = {'Loss/r1_penalty': penalty, 'Grad/D_reg/norm': optax.tree.norm(grads),
               'Grad/D_reg/finite': finite.astype(jnp.float32)}
    return state.replace(d={**state.d, 'params': params}, d_opt=d_opt), metrics

  def ema(state: GANState, batch: dict, lod):
    """G_ema <- G + beta (G_ema - G), beta = 0.5^(batch / ema_nimg) (SPEC.md §3.7); buffers
    and w_avg are copied. Advances the step and the image count."""
    del batch, lod
    ema_nimg = cfg.ema_kimg * 1000.0
    if cfg.ema_rampup is not None:
      ema_nimg = jnp.minimum(ema_nimg, state.nimg.astype(jnp.float32) * cfg.ema_rampup)
    beta = 0.5 ** (cfg.batch_size / jnp.maximum(ema_nimg, 1e-8))
    params = optax.incremental_update(state.g['params'], state.g_ema['params'], 1.0 - beta)
    g_ema = {**state.g, 'params': params}
    return state.replace(g_ema=g_ema, step=state.step + 1,
                         nimg=state.nimg + cfg.batch_size), {'Progress/ema_beta': beta}

  return {'g_main': g_main, 'g_reg': g_reg, 'd_main': d_main, 'd_reg': d_reg, 'ema': ema}


CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


class TrainStep:
  """Jitted phases over a mesh, and the host-side schedule that runs them for one minibatch.

  Every phase is compiled once (`donate` the state; batch split over 'data', the rest
  replicated), on its first call, with a log line before and one with the time it took (or that
  it came from the persistent compilation cache); `__call__(state, batch, step, lod)` runs the
  phases due at `step` and returns the new state and the metrics of every phase that ran.
  `traces` counts how often each phase was traced (a changing lod must not retrace).
  """

  def __init__(self, generator, discriminator, g_tx, d_tx, cfg: StepConfig, mesh: Mesh,
               state_sharding=None):
    self.cfg = cfg
    self.traces = collections.Counter()
    self.compile_seconds: dict[str, float] = {}
    self._executables: dict[str, Callable] = {}
    phases = make_phases(generator, discriminator, g_tx, d_tx, cfg)
    state_sharding = replicated(mesh) if state_sharding is None else state_sharding

    def counted(name, fn):
      def traced(*args):
        self.traces[name] += 1
        return fn(*args)
      return traced

    self.phases = {
        name: jax.jit(counted(name, fn),
                      in_shardings=(state_sharding, batch_sharded(mesh), replicated(mesh)),
                      out_shardings=(state_sharding, replicated(mesh)), donate_argnums=0)
        for name, fn in phases.items()}

  def executable(self, name: str, state: GANState, batch: dict, lod) -> Callable:
    """Phase `name` compiled for these arguments' shapes (once; logged with its time)."""
    if name not in self._executables:
      logging.info('compiling %s ...', name)
      hits = []
      listener = lambda event, **kwargs: hits.append(event) if event == CACHE_HIT_EVENT else None
      jax.monitoring.register_event_listener(listener)
      start = time.perf_counter()
      try:
        self._executables[name] = self.phases[name].lower(state, batch, lod).compile()
      finally:
        jax.monitoring.unregister_event_listener(listener)
      self.compile_seconds[name] = time.perf_counter() - start
      logging.info('compiled %s in %.1f s%s', name, self.compile_seconds[name],
                   ' (from the persistent compilation cache)' if hits else '')
    return self._executables[name]

  def due(self, step: int) -> list[str]:
    """Phases that run at minibatch `step` (regularizers when `step % interval == 0`)."""
    names = ['g_main']
    if self.cfg.g_reg_interval is not None and self.cfg.pl_weight > 0 and (
        step % self.cfg.g_reg_interval == 0):
      names.append('g_reg')
    names.append('d_main')
    if self.cfg.d_reg_interval is not None and self.cfg.r1_gamma > 0 and (
        step % self.cfg.d_reg_interval == 0):
      names.append('d_reg')
    names.append('ema')
    return names

  def __call__(self, state: GANState, batch: dict, step: int,
               lod: float = 0.0) -> tuple[GANState, dict]:
    metrics = {}
    lod = jnp.float32(lod)
    for name in self.due(step):
      state, phase_metrics = self.executable(name, state, batch, lod)(state, batch, lod)
      metrics.update(phase_metrics)
    return state, metrics
