"""The training state: arrays only, so orbax and shardings see plain pytrees."""

import dataclasses
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from sg2jax.networks.weights import abstract_variables, init_variables


class AugmentState(flax.struct.PyTreeNode):
  """ADA's augmentation probability and the statistic that adapts it (REFERENCE.md §7.7).

  Attributes:
    p: the augmentation probability, float32 scalar (traced: changing it never recompiles).
    signs: `sum(sign(D(augmented real)))` since the last adjustment, int32 scalar (exact).
    count: how many real logits `signs` sums, int32 scalar.
  """
  p: jax.Array
  signs: jax.Array
  count: jax.Array


def init_augment(p: float) -> AugmentState:
  """`p` with empty accumulators."""
  return AugmentState(p=jnp.asarray(p, jnp.float32), signs=jnp.zeros((), jnp.int32),
                      count=jnp.zeros((), jnp.int32))


class GANState(flax.struct.PyTreeNode):
  """Everything a run needs to continue bit-exactly (with the data iterator's position).

  Attributes:
    step: minibatches done, int32 scalar.
    nimg: real images shown so far, int32 scalar (`kimg = nimg / 1000`).
    g: G variables: `params` (trained), `stats` (`w_avg`), `buffers` (`noise_const`).
    g_ema: the moving average of G: averaged `params`, `stats` and `buffers` copied from G.
    d: D variables (`params`).
    g_opt, d_opt: optax (Adam) states of G and D.
    pl_mean: running mean `a` of the path lengths (REFERENCE.md §2.3), float32 scalar.
    base_key: `jax.random.key_data` of the run's key; step keys are `fold_in(base, step)`.

  A run with ADA has an `AugmentedGANState` instead; this class keeps exactly the tree of the
  runs made before ADA existed, so their checkpoints restore into it.
  """
  step: jax.Array
  nimg: jax.Array
  g: dict
  g_ema: dict
  d: dict
  g_opt: optax.OptState
  d_opt: optax.OptState
  pl_mean: jax.Array
  base_key: jax.Array


class AugmentedGANState(GANState):
  """`GANState` of a run with ADA: plus `augment`, its `AugmentState` (REFERENCE.md §7.7)."""
  augment: AugmentState


def with_augment(state: GANState, augment: Optional[AugmentState]) -> GANState:
  """`state` as an `AugmentedGANState` holding `augment`, or as a plain `GANState` for None."""
  fields = {field.name: getattr(state, field.name) for field in dataclasses.fields(GANState)}
  return GANState(**fields) if augment is None else AugmentedGANState(**fields, augment=augment)


def _as_variables(variables: dict, like: dict) -> dict:
  """`variables` (e.g. read from a file) with the dtypes of `like`, the network's own tree."""
  return jax.tree.map(lambda x, a: jnp.asarray(x, a.dtype), variables, like)


def init_state(generator, discriminator, g_tx: optax.GradientTransformation,
               d_tx: optax.GradientTransformation, seed: int,
               networks: Optional[dict[str, dict]] = None,
               augment_p: Optional[float] = None) -> GANState:
  """A run's first state: fresh optimizer states, step 0, `pl_mean` 0.

  Args:
    generator, discriminator: the networks.
    g_tx, d_tx: their optimizers.
    seed: the run's seed (network initialization and the base key).
    networks: None for fresh networks (official initialization; G_ema starts as a copy of G),
      or `{'G', 'D', 'G_ema'}` variables to start from (fine-tuning: every collection, w_avg
      included, as given; the base key is the same as without them).
    augment_p: None for a run without augmentation, else the initial ADA probability.
  """
  key_init, key_train = jax.random.split(jax.random.key(seed))
  key_g, key_d = jax.random.split(key_init)
  if networks is None:
    g = init_variables(generator, key_g)
    d = init_variables(discriminator, key_d)
    g_ema = jax.tree.map(jnp.copy, g)
  else:
    g_like = abstract_variables(generator)
    g = _as_variables(networks['G'], g_like)
    g_ema = _as_variables(networks['G_ema'], g_like)
    d = _as_variables(networks['D'], abstract_variables(discriminator))
  state = GANState(
      step=jnp.zeros((), jnp.int32), nimg=jnp.zeros((), jnp.int32), g=g, g_ema=g_ema, d=d,
      g_opt=g_tx.init(g['params']), d_opt=d_tx.init(d['params']),
      pl_mean=jnp.zeros((), jnp.float32), base_key=jax.random.key_data(key_train))
  return with_augment(state, None if augment_p is None else init_augment(augment_p))


def checkpoint_layout(abstract: AugmentedGANState, has_augment: bool) -> GANState:
  """The layout a checkpoint holds, from the run's abstract state made with an `AugmentState`:
  checkpoints written without augmentation (or before ADA existed) are plain `GANState`s."""
  return abstract if has_augment else with_augment(abstract, None)


def continue_augment(state: GANState, augment_p: Optional[float], adaptive: bool,
                     sharding) -> GANState:
  """The restored state with the `AugmentState` this run's config asks for.

  - No augmentation (`augment_p` None): none.
  - A checkpoint with an `AugmentState`: kept (p and accumulators), except that a fixed p
    (`adaptive` False) is the config's `augment_p`.
  - A checkpoint without one (no augmentation, or written before ADA existed): `augment_p`
    with empty accumulators.
  """
  if augment_p is None:
    return with_augment(state, None)
  if not isinstance(state, AugmentedGANState):
    return with_augment(state, jax.device_put(init_augment(augment_p), sharding))
  if adaptive:
    return state
  p = jax.device_put(jnp.asarray(augment_p, jnp.float32), sharding)
  return state.replace(augment=state.augment.replace(p=p))


def reset_optimizers(state: GANState, g_tx: optax.GradientTransformation,
                     d_tx: optax.GradientTransformation, g_lr, d_lr) -> GANState:
  """Fresh Adam moments with the given learning rates (optimizers made with
  `optax.inject_hyperparams`, possibly inside Freeze-D's partition): TF does this when
  progressive growing changes the level, and every run does it at its start."""
  def fresh(tx, params, lr):
    return optax.tree_utils.tree_set(tx.init(params), learning_rate=jnp.asarray(lr, jnp.float32))
  return state.replace(g_opt=fresh(g_tx, state.g['params'], g_lr),
                       d_opt=fresh(d_tx, state.d['params'], d_lr))
