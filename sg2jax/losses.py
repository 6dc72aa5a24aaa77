"""StyleGAN2 losses and regularizers as pure functions (REFERENCE.md §2.2, §2.3).

Per-sample values are returned; the train step takes their means (and multiplies lazy
regularizers by their interval, REFERENCE.md §2.4). State such as `pl_mean` goes in and comes out.
"""

from typing import Callable

import jax
import jax.numpy as jnp


def g_nonsaturating_loss(fake_logits: jnp.ndarray) -> jnp.ndarray:
  """Non-saturating G loss `softplus(-D(G(z)))`, per sample (`[N, 1]` -> `[N, 1]`)."""
  return jax.nn.softplus(-fake_logits.astype(jnp.float32))


def d_real_loss(real_logits: jnp.ndarray) -> jnp.ndarray:
  """D's logistic loss on reals, `softplus(-D(x))`, per sample."""
  return jax.nn.softplus(-real_logits.astype(jnp.float32))


def d_fake_loss(fake_logits: jnp.ndarray) -> jnp.ndarray:
  """D's logistic loss on fakes, `softplus(D(G(z)))`, per sample."""
  return jax.nn.softplus(fake_logits.astype(jnp.float32))


def d_logistic_loss(real_logits: jnp.ndarray,
                    fake_logits: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Logistic D loss pieces `(softplus(-D(x)), softplus(D(G(z))))`, per sample."""
  return d_real_loss(real_logits), d_fake_loss(fake_logits)


def r1_penalty(discriminate: Callable[[jnp.ndarray], jnp.ndarray],
               real_img: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """R1: squared norm of the gradient of D on reals (REFERENCE.md §2.2).

  1. `g = d(sum_batch D(x)) / dx` (the gradient of the *summed* logits: with minibatch stddev
     the samples of a group are coupled, as in both official codes).
  2. `penalty_n = sum_{h, w, c} g_n^2`.
  The loss is `gamma / 2 * penalty`; differentiate through this function for the D update.

  Args:
    discriminate: `img [N, H, W, C] -> logits [N, 1]` (params closed over).
    real_img: `[N, H, W, C]`.

  Returns:
    `(penalty [N], g [N, H, W, C])`.
  """
  grads = jax.grad(lambda x: jnp.sum(discriminate(x).astype(jnp.float32)))(real_img)
  penalty = jnp.sum(jnp.square(grads.astype(jnp.float32)), axis=(1, 2, 3))
  return penalty, grads


def path_lengths(synthesize: Callable[[jnp.ndarray], jnp.ndarray], ws: jnp.ndarray,
                 noise: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Path lengths `|J_w^T y|` of the synthesis network (REFERENCE.md §2.3 steps 2-4).

  1. `y = noise / sqrt(H * W)` (pixels only, not channels; REFERENCE.md §2.3).
  2. `g = d(sum(img * y)) / d ws`, `[N, num_ws, w_dim]`.
  3. `len_n = sqrt(mean_layers sum_dims g^2)`.

  Args:
    synthesize: `ws -> img [N, H, W, C]` with params and noise closed over.
    ws: `[N, num_ws, w_dim]` (after style mixing).
    noise: unit normal `[N, H, W, C]`.

  Returns:
    `(lengths [N], img)`.
  """
  img, vjp = jax.vjp(synthesize, ws)
  h, w = img.shape[1], img.shape[2]
  (grads,) = vjp((noise / jnp.sqrt(float(h * w))).astype(img.dtype))
  grads = grads.astype(jnp.float32)
  lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))
  return lengths, img


def path_length_penalty(lengths: jnp.ndarray, pl_mean: jnp.ndarray,
                        pl_decay: float = 0.01) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Path-length penalty and the updated running mean `a` (REFERENCE.md §2.3 steps 5-6).

  `a' = a + pl_decay * (mean_n len_n - a)` with the stored `a` held constant; the penalty
  `(len_n - a')^2` differentiates through `a'` (both official codes do). Store
  `stop_gradient(a')` as the new state; the loss is `pl_weight * penalty`.

  Returns:
    `(penalty [N], new pl_mean)`.
  """
  pl_mean = jax.lax.stop_gradient(pl_mean.astype(jnp.float32))
  new_mean = pl_mean + pl_decay * (jnp.mean(lengths) - pl_mean)
  return jnp.square(lengths - new_mean), jax.lax.stop_gradient(new_mean)
