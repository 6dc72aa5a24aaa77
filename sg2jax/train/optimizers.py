"""The optimizers of G and D: optax Adam with the learning rate in its state, Freeze-D's frozen
layers, and the policy for non-finite gradients as a wrapping `GradientTransformation`."""

from typing import Sequence

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


def freeze(inner: optax.GradientTransformation,
           frozen: Sequence[str]) -> optax.GradientTransformation:
  """`inner` for every parameter except the layers in `frozen`, which get zero updates and no
  optimizer state (ADA's Freeze-D, REFERENCE.md §7.9: there they are buffers, not parameters).

  Gradients still flow through frozen layers to their inputs: only the update is masked.

  Args:
    inner: the optimizer of the trained parameters.
    frozen: layer paths such as `'b32/fromrgb'`; every leaf below one of them is frozen.

  Returns:
    An `optax.multi_transform` of `inner` ('trained') and `optax.set_to_zero` ('frozen').
  """
  prefixes = tuple(f'{layer}/' for layer in frozen)

  def label(path, _) -> str:
    name = '/'.join(str(getattr(k, 'key', k)) for k in path)
    return 'frozen' if name.startswith(prefixes) else 'trained'

  return optax.multi_transform(
      {'trained': inner, 'frozen': optax.set_to_zero()},
      lambda params: jax.tree_util.tree_map_with_path(label, params))


def make_adam(lr: float, beta1: float, beta2: float, eps: float, nan_policy: str = 'skip',
              frozen: Sequence[str] = ()) -> optax.GradientTransformation:
  """optax Adam with the learning rate in its state (progressive growing changes it), the layers
  in `frozen` left out (`freeze`; none: the plain Adam state), wrapped in the non-finite-gradient
  policy `nan_policy` ('skip' or 'nan_to_num')."""
  if nan_policy not in NAN_POLICIES:
    raise ValueError(f'nan_policy {nan_policy!r} is not one of {", ".join(NAN_POLICIES)}')
  adam = optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=beta1, b2=beta2, eps=eps)
  if frozen:
    adam = freeze(adam, frozen)
  return skip_nonfinite(adam) if nan_policy == 'skip' else nan_to_num_gradients(adam)
