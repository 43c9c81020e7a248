"""The `[Q, N]` EMD matrix of a retrieval by any solver, and cheap lower bounds."""

from __future__ import annotations

import functools
from typing import Literal

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from cmjax.ot.certified import SemidualConfig, certified_emd
from cmjax.ot.entropic import SinkhornConfig, batched_sinkhorn_emd, shared_cost_sinkhorn
from cmjax.precision import float32_matmuls

__all__ = [
    "centroid_lower_bound",
    "independent_lower_bound",
    "pairwise_emd",
]


# One compilation per (chunk shape, config), shared by every `pairwise_emd` call.
_solve_chunk = jax.jit(batched_sinkhorn_emd, static_argnames=("config",))
_solve_chunk_shared = jax.jit(functools.partial(shared_cost_sinkhorn, early_stop=True),
                              static_argnames=("config",))


@float32_matmuls
def centroid_lower_bound(p: jax.Array, q: jax.Array, image_points: jax.Array,
                         text_points: jax.Array) -> jax.Array:
  """`[Q, N]` lower bound ||sum_i p_i a_i - sum_j q_j b_j|| <= EMD.

  Valid when the cost is a distance between bin points: D_ij = ||a_i - b_j||
  (`image_points` `[m, d]`, `text_points` `[n, d]`; on a line, d = 1).
  """
  cp, cq = p @ image_points, q @ text_points
  return jnp.linalg.norm(cp[:, None, :] - cq[None, :, :], axis=-1)


@float32_matmuls
def independent_lower_bound(p: jax.Array, q: jax.Array, cost: jax.Array) -> jax.Array:
  """`[Q, N]` lower bound max(sum_i p_i min_j D_ij, sum_j q_j min_i D_ij) <= EMD.

  Valid for any cost: each unit of mass pays at least its cheapest move. (The
  minima run over all bins, so the bound holds for any support of p and q.)
  """
  row = p @ jnp.min(cost, axis=1)
  col = q @ jnp.min(cost, axis=0)
  return jnp.maximum(row[:, None], col[None, :])


@float32_matmuls
def pairwise_emd(p: jax.Array, q: jax.Array, cost: jax.Array,
                 config: SinkhornConfig | SemidualConfig | None = None, *, chunk: int = 4096,
                 solver: Literal["auto", "certified", "shared_cost", "ott"] = "auto",
                 on_nonconvergence: Literal["raise", "warn"] = "raise") -> jax.Array:
  """`[Q, N]` EMD of every `[Q, m]` query against every `[N, n]` item under one `[m, n]` cost.

  - `solver="certified"`: `certified_emd` (the default, with a
    `SemidualConfig` or none): a fixed budget, no convergence test; returns
    the dual value, a certified lower bound (call `certified_emd` for both
    bounds).
  - `solver="shared_cost"` (the default with a `SinkhornConfig`):
    `shared_cost_sinkhorn` (domain `auto`) with early stopping, `chunk` pairs
    at a time;
  - `solver="ott"`: ott-jax's Sinkhorn mapped over the pairs
    (`batched_sinkhorn_emd`).

  For a cost that is a distance between points on a line,
  `pairwise_emd_on_line` is exact and faster still.

  Raises:
    FloatingPointError: (entropic solvers, `on_nonconvergence="raise"`) if any
      problem did not converge; the message gives how many and the worst error.
  """
  if solver == "auto":
    solver = "shared_cost" if isinstance(config, SinkhornConfig) else "certified"
  if solver == "certified":
    if not isinstance(config, (SemidualConfig, type(None))):
      raise TypeError(f"solver='certified' takes a SemidualConfig, got {type(config).__name__}")
    return jnp.asarray(certified_emd(p, q, cost, config or SemidualConfig()).value)
  config = config or SinkhornConfig()
  num_q, num_n = p.shape[0], q.shape[0]
  if solver == "ott":
    solve = lambda a, b: _solve_chunk(a, b, cost, config)
  elif solver == "shared_cost":
    solve = lambda a, b: _solve_chunk_shared(a, b, cost, config)
  else:
    raise ValueError(f"unknown solver {solver!r}")
  chunk = min(chunk, num_q * num_n)  # No padding work beyond the problems there are.
  rows, cols = np.divmod(np.arange(num_q * num_n), num_n)
  costs, converged, errors = [], [], []
  for start in range(0, len(rows), chunk):
    r, c = rows[start:start + chunk], cols[start:start + chunk]
    pad = chunk - len(r)
    r, c = np.pad(r, (0, pad), mode="edge"), np.pad(c, (0, pad), mode="edge")
    out = solve(p[r], q[c])
    keep = chunk - pad
    costs.append(np.asarray(out.cost)[:keep])
    converged.append(np.asarray(out.converged)[:keep])
    errors.append(np.asarray(out.error)[:keep])
  converged, errors = np.concatenate(converged), np.concatenate(errors)
  if not converged.all():
    message = (f"pairwise_emd: {int((~converged).sum())} of {len(converged)} problems did not "
               f"converge within {config.max_iterations} iterations (worst marginal error "
               f"{errors.max():.2e} > {config.threshold:.0e}); raise max_iterations or epsilon")
    if on_nonconvergence == "raise":
      raise FloatingPointError(message)
    logging.warning(message)
  return jnp.asarray(np.concatenate(costs).reshape(num_q, num_n))
