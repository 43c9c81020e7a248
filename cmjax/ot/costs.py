"""Learned ground costs."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

__all__ = [
    "learned_ground_cost",
]


def learned_ground_cost(params: dict, kind: Literal["matrix", "embedding"]) -> jax.Array:
  """A learned `[m, n]` ground cost, positive and scaled to mean 1 (it cannot collapse).

  Args:
    params: `{"logits": [m, n]}` for `matrix` (cost = softplus(logits)), or
      `{"image_points": [m, d], "text_points": [n, d]}` for `embedding`
      (cost = ||a_i - b_j||).
    kind: which parametrisation.
  """
  if kind == "matrix":
    cost = jax.nn.softplus(params["logits"])
  elif kind == "embedding":
    diff = params["image_points"][:, None, :] - params["text_points"][None, :, :]
    cost = jnp.sqrt(jnp.sum(diff**2, -1) + 1e-12)
  else:
    raise ValueError(f"unknown ground cost {kind!r}")
  return cost / jnp.mean(cost)
