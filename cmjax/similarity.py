"""How two sets of vectors are compared: `[Q, d] x [N, d] -> [Q, N]`, in JAX.

One definition each, used by every method: cosine (and its distance),
normalised (centred) correlation, Euclidean distance.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from cmjax.precision import float32_matmuls

__all__ = [
    "SIMILARITIES",
    "cosine",
    "cosine_distance",
    "euclidean_distance",
    "normalized_correlation",
    "pairwise",
]

Similarity = Literal["cosine", "normalized_correlation"]
SIMILARITIES = ("cosine", "normalized_correlation")


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@float32_matmuls
def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[Q, d] x [N, d] -> [Q, N]` cosine similarities (zero rows score 0)."""
  return _unit(jnp.asarray(a)) @ _unit(jnp.asarray(b)).T


@float32_matmuls
def normalized_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[Q, d] x [N, d] -> [Q, N]` cosine of the row-centred vectors (Pearson correlation)."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  return cosine(a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True))


@float32_matmuls
def cosine_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[Q, d] x [N, d] -> [Q, N]` 1 - cosine."""
  return 1.0 - cosine(a, b)


@float32_matmuls
def euclidean_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[Q, d] x [N, d] -> [Q, N]` Euclidean distances (smooth at 0)."""
  sq = jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2 * a @ b.T
  return jnp.sqrt(jnp.maximum(sq, 0.0) + 1e-12)


@float32_matmuls
def pairwise(kind: Similarity, a: jax.Array, b: jax.Array) -> jax.Array:
  """The similarity `kind` (one of `SIMILARITIES`) of every row pair."""
  if kind == "cosine":
    return cosine(a, b)
  if kind == "normalized_correlation":
    return normalized_correlation(a, b)
  raise ValueError(f"unknown similarity {kind!r}; choose from {', '.join(SIMILARITIES)}")
