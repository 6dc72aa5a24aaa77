"""The training state: arrays only, so orbax and shardings see plain pytrees."""

import flax.struct
import jax
import jax.numpy as jnp
import optax

from sg2jax.networks.weights import init_variables


class GANState(flax.struct.PyTreeNode):
  """Everything a run needs to continue bit-exactly (with the data iterator's position).

  Attributes:
    step: minibatches done, int32 scalar.
    nimg: real images shown so far, int32 scalar (`kimg = nimg / 1000`).
    g: G variables: `params` (trained), `stats` (`w_avg`), `buffers` (`noise_const`).
    g_ema: the moving average of G: averaged `params`, `stats` and `buffers` copied from G.
    d: D variables (`params`).
    g_opt, d_opt: optax (Adam) states of G and D.
    pl_mean: running mean `a` of the path lengths (SPEC.md §3.3), float32 scalar.
    base_key: `jax.random.key_data` of the run's key; step keys are `fold_in(base, step)`.
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


def init_state(generator, discriminator, g_tx: optax.GradientTransformation,
               d_tx: optax.GradientTransformation, seed: int) -> GANState:
  """Fresh networks (official initialization) and optimizer states; G_ema starts as a copy of G."""
  key_init, key_train = jax.random.split(jax.random.key(seed))
  key_g, key_d = jax.random.split(key_init)
  g = init_variables(generator, key_g)
  d = init_variables(discriminator, key_d)
  return GANState(
      step=jnp.zeros((), jnp.int32), nimg=jnp.zeros((), jnp.int32), g=g, g_ema=jax.tree.map(jnp.copy, g), d=d,
      g_opt=g_tx.init(g['params']), d_opt=d_tx.init(d['params']),
      pl_mean=jnp.zeros((), jnp.float32), base_key=jax.random.key_data(key_train))


def reset_optimizers(state: GANState, g_tx: optax.GradientTransformation,
                     d_tx: optax.GradientTransformation, g_lr, d_lr) -> GANState:
  """Fresh Adam moments with the given learning rates (optimizers made with
  `optax.inject_hyperparams`): TF does this when progressive growing changes the level."""
  def fresh(tx, params, lr):
    opt = tx.init(params)
    return opt._replace(hyperparams={**opt.hyperparams, 'learning_rate': jnp.asarray(
        lr, jnp.float32)})
  return state.replace(g_opt=fresh(g_tx, state.g['params'], g_lr),
                       d_opt=fresh(d_tx, state.d['params'], d_lr))
