"""Restricted Boltzmann machines trained with contrastive divergence (CD-1).

Three kinds, by visible units: `gaussian` (real-valued, unit variance, for
standardised image features), `binary` (for stacking on hidden units) and
`replicated_softmax` (word counts, Salakhutdinov & Hinton 2009; hidden biases
scale with document length D). CD-1 is written as a loss whose gradient is the
CD update: mean free energy of the data minus that of the (stopped-gradient)
one-step reconstruction, so RBMs train in the shared loop like any model.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

__all__ = ["RBMKind", "cd_loss", "free_energy", "hidden_probabilities", "init_rbm", "reconstruct"]

RBMKind = Literal["gaussian", "binary", "replicated_softmax"]


def init_rbm(rng: jax.Array, num_visible: int, num_hidden: int) -> dict:
  """`{"w": [V, H], "visible_bias": [V], "hidden_bias": [H]}`."""
  return {
      "w": 0.01 * jax.random.normal(rng, (num_visible, num_hidden)),
      "visible_bias": jnp.zeros(num_visible),
      "hidden_bias": jnp.zeros(num_hidden),
  }


def _hidden_input(params: dict, v: jax.Array, kind: RBMKind) -> jax.Array:
  bias = params["hidden_bias"]
  if kind == "replicated_softmax":
    bias = bias * jnp.sum(v, axis=-1, keepdims=True)
  return v @ params["w"] + bias


def hidden_probabilities(params: dict, v: jax.Array, kind: RBMKind) -> jax.Array:
  """`[B, V] -> [B, H]` p(h = 1 | v)."""
  return jax.nn.sigmoid(_hidden_input(params, v, kind))


def free_energy(params: dict, v: jax.Array, kind: RBMKind) -> jax.Array:
  """`[B, V] -> [B]` free energy F(v) (p(v) is proportional to exp(-F(v)))."""
  hidden_term = jnp.sum(jax.nn.softplus(_hidden_input(params, v, kind)), axis=-1)
  if kind == "gaussian":
    return 0.5 * jnp.sum((v - params["visible_bias"]) ** 2, axis=-1) - hidden_term
  return -v @ params["visible_bias"] - hidden_term


def reconstruct(rng: jax.Array, params: dict, h: jax.Array, kind: RBMKind,
                doc_length: jax.Array | None = None) -> jax.Array:
  """One Gibbs half-step `[B, H] -> [B, V]`.

  Gaussian units give their mean, binary units a sample, replicated softmax
  the expected counts `D * softmax(.)` (mean field).
  """
  visible_input = h @ params["w"].T + params["visible_bias"]
  if kind == "gaussian":
    return visible_input
  if kind == "binary":
    return jax.random.bernoulli(rng, jax.nn.sigmoid(visible_input)).astype(h.dtype)
  return doc_length[:, None] * jax.nn.softmax(visible_input, axis=-1)


def cd_loss(params: dict, v: jax.Array, rng: jax.Array, kind: RBMKind) -> tuple[jax.Array, dict]:
  """CD-1 surrogate loss of a `[B, V]` batch, and the reconstruction error."""
  hidden_rng, visible_rng = jax.random.split(rng)
  h = jax.random.bernoulli(hidden_rng, hidden_probabilities(params, v, kind)).astype(v.dtype)
  v_model = jax.lax.stop_gradient(
      reconstruct(visible_rng, params, h, kind, jnp.sum(v, axis=-1))
  )
  loss = jnp.mean(free_energy(params, v, kind)) - jnp.mean(free_energy(params, v_model, kind))
  return loss, {"reconstruction_mse": jnp.mean((v - v_model) ** 2)}
