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
  `pairwise_emd_on_line` is exact and faster still. Every solver returns a
  device array, computed on device (traceable: it runs inside jitted programs);
  under `jit`, problems that did not converge are reported by a warning from
  the device whatever `on_nonconvergence` says.

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
  if solver not in ("ott", "shared_cost"):
    raise ValueError(f"unknown solver {solver!r}")
  costs, converged, errors = _entropic_matrix(p, q, cost, config, solver,
                                              min(chunk, p.shape[0] * q.shape[0]))
  report = functools.partial(_report_nonconvergence, config, on_nonconvergence)
  if isinstance(converged, jax.core.Tracer):  # Inside a jitted program: report from the device.
    jax.debug.callback(functools.partial(report, traced=True), converged, errors)
  else:
    report(converged, errors)
  return costs


@functools.partial(jax.jit, static_argnames=("config", "solver", "chunk"))
@float32_matmuls
def _entropic_matrix(p, q, cost, config, solver, chunk):
  """`[Q, N]` costs, converged and errors of every pair, `chunk` pairs at a time in a
  `lax.map` on device (the last chunk padded with the last pair, then cut)."""
  num_q, num_n = p.shape[0], q.shape[0]
  total = num_q * num_n
  pairs = jnp.minimum(jnp.arange(-(-total // chunk) * chunk), total - 1).reshape(-1, chunk)
  solve = batched_sinkhorn_emd if solver == "ott" else functools.partial(
      shared_cost_sinkhorn, early_stop=True)

  def one_chunk(index):
    rows, cols = jnp.divmod(index, num_n)
    out = solve(p[rows], q[cols], cost, config)
    return out.cost, out.converged, out.error

  out = jax.lax.map(one_chunk, pairs)
  return tuple(x.reshape(-1)[:total].reshape(num_q, num_n) for x in out)


def _report_nonconvergence(config: SinkhornConfig, on_nonconvergence: str, converged, errors,
                           traced: bool = False) -> None:
  """Raises (or warns, or always warns from inside a jitted program) when some problem
  did not converge."""
  converged, errors = np.asarray(converged), np.asarray(errors)
  if converged.all():
    return
  message = (f"pairwise_emd: {int((~converged).sum())} of {converged.size} problems did not "
             f"converge within {config.max_iterations} iterations (worst marginal error "
             f"{errors.max():.2e} > {config.threshold:.0e}); raise max_iterations or epsilon")
  if on_nonconvergence == "raise" and not traced:
    raise FloatingPointError(message)
  logging.warning(message)
