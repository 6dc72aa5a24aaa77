"""The optimizers of G and D: optax Adam with the learning rate in its state, and the policy for
non-finite gradients as a wrapping `GradientTransformation`."""

import jax
import jax.numpy as jnp
import optax

NAN_POLICIES = ('skip', 'nan_to_num')


def all_finite(tree) -> jnp.ndarray:
  """True when every element of every leaf is finite."""
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner`, except that an update whose gradients are not all finite changes nothing: zero
  updates, and the optimizer state stays as it was (TF's policy). The state is `inner`'s own
  (so checkpoints of the plain optimizer restore); unlike `optax.apply_if_finite` it keeps no
  count of skipped steps (the train step reports `Grad/*/finite` instead)."""

  def update(grads, state, params=None):
    updates, new_state = inner.update(grads, state, params)
    finite = all_finite(grads)
    keep = lambda new, old: jnp.where(finite, new, old)
    updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
    return updates, jax.tree.map(keep, new_state, state)

  return optax.GradientTransformation(inner.init, update)


def nan_to_num_gradients(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner` on gradients with NaN -> 0 and +-inf -> +-1e5 (ADA's policy); `inner`'s state."""

  def update(grads, state, params=None):
    grads = jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), grads)
    return inner.update(grads, state, params)

  return optax.GradientTransformation(inner.init, update)


def make_adam(lr: float, beta1: float, beta2: float, eps: float,
              nan_policy: str = 'skip') -> optax.GradientTransformation:
  """optax Adam with the learning rate in its state (progressive growing changes it), wrapped in
  the non-finite-gradient policy `nan_policy` ('skip' or 'nan_to_num')."""
  if nan_policy not in NAN_POLICIES:
    raise ValueError(f'nan_policy {nan_policy!r} is not one of {", ".join(NAN_POLICIES)}')
  adam = optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=beta1, b2=beta2, eps=eps)
  return skip_nonfinite(adam) if nan_policy == 'skip' else nan_to_num_gradients(adam)
