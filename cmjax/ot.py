"""Earth mover's distance between histograms of different sizes, on ott-jax.

EMD(p, q; D) = min_F <F, D> over F >= 0 with row sums p (`[m]`) and column
sums q (`[n]`), for a ground cost D (`[m, n]`).

- `sinkhorn_emd`: entropic OT with ott-jax's Sinkhorn solver; returns the
  transport cost <F_eps, D> of the entropic plan, differentiable in p, q and D
  (implicit differentiation of the fixed point, or unrolled iterations), and
  whether the solver converged. `batched_sinkhorn_emd` maps it over pairs.
- `ground_cost_on_line`, `emd_on_line`: the fixed ground cost
  |i/(m-1) - j/(n-1)| puts both histograms' bins on one line, where the EMD has
  an exact closed form, the L1 distance between the two cumulative
  distributions; `pairwise_emd_on_line` evaluates all Q x N pairs at once.
- `pairwise_emd`: every query against every database item under one shared
  ground cost, in chunks (bounded memory); `centroid_lower_bound` and
  `independent_lower_bound` are cheap lower bounds, and `topk_emd` uses them to
  skip exact computations that cannot change the top k.
- `learned_ground_cost`: a learned positive, scale-normalised matrix, or
  distances between learned bin embeddings.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import implicit_differentiation, sinkhorn

__all__ = [
    "EMDResult",
    "SinkhornConfig",
    "batched_sinkhorn_emd",
    "centroid_lower_bound",
    "emd_on_line",
    "ground_cost_on_line",
    "independent_lower_bound",
    "learned_ground_cost",
    "pairwise_emd",
    "pairwise_emd_on_line",
    "sinkhorn_emd",
    "topk_emd",
]


@dataclasses.dataclass(frozen=True)
class SinkhornConfig:
  """Entropic solver settings.

  Attributes:
    epsilon: entropic regularisation, in units of the ground cost (costs of
      order 1: 1e-2 gives a transport cost within about 1% of the exact EMD).
    max_iterations: iteration budget.
    threshold: marginal error (L1) at which the solver stops.
    differentiation: `unrolled` (backpropagation through the iterations; the
      default, robust) or `implicit` (implicit function theorem at the fixed
      point: memory independent of the iteration count, but its linear solve
      can fail in float32 when the plan is nearly degenerate, e.g. small
      epsilon or near-empty bins; it then raises rather than return NaNs).
  """

  epsilon: float = 1e-2
  max_iterations: int = 2000
  threshold: float = 1e-3
  differentiation: Literal["implicit", "unrolled"] = "unrolled"


class EMDResult(NamedTuple):
  """EMD of one or more problems.

  Attributes:
    cost: `[...]` transport cost <F, D>.
    converged: `[...]` whether the solver met its threshold within budget.
    error: `[...]` final marginal error.
  """

  cost: jax.Array
  converged: jax.Array
  error: jax.Array


def _solver(config: SinkhornConfig) -> sinkhorn.Sinkhorn:
  # The ridges keep the implicit linear system well posed when the plan is rank
  # deficient (histograms with near-empty bins, as softmax outputs often are).
  implicit = (implicit_differentiation.ImplicitDiff(
      solver_kwargs={"ridge_identity": 1e-6, "ridge_kernel": 1e-6})
              if config.differentiation == "implicit" else None)
  return sinkhorn.Sinkhorn(threshold=config.threshold, max_iterations=config.max_iterations,
                           implicit_diff=implicit)


def sinkhorn_emd(p: jax.Array, q: jax.Array, cost: jax.Array,
                 config: SinkhornConfig = SinkhornConfig()) -> EMDResult:
  """Entropic EMD of one problem.

  Args:
    p: `[m]` histogram (non-negative, sums to 1).
    q: `[n]` histogram (non-negative, sums to 1).
    cost: `[m, n]` ground cost.
    config: solver settings.
  """
  geom = geometry.Geometry(cost_matrix=cost, epsilon=config.epsilon)
  out = _solver(config)(linear_problem.LinearProblem(geom, a=p, b=q))
  recorded = out.errors >= 0
  last = jnp.max(jnp.where(recorded, jnp.arange(out.errors.shape[0]), 0))
  return EMDResult(cost=out.primal_cost, converged=out.converged, error=out.errors[last])


def batched_sinkhorn_emd(p: jax.Array, q: jax.Array, cost: jax.Array,
                         config: SinkhornConfig = SinkhornConfig()) -> EMDResult:
  """`[B, m]` x `[B, n]` pairs under one `[m, n]` cost (or `[B, m, n]` costs) -> `[B]`."""
  cost_axis = 0 if cost.ndim == 3 else None
  return jax.vmap(lambda a, b, c: sinkhorn_emd(a, b, c, config),
                  in_axes=(0, 0, cost_axis))(p, q, cost)


# One compilation per (chunk shape, config), shared by every `pairwise_emd` call.
_solve_chunk = jax.jit(batched_sinkhorn_emd, static_argnames=("config",))


def ground_cost_on_line(m: int, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The fixed cost |i/(m-1) - j/(n-1)| and its bin positions.

  Returns:
    `(cost [m, n], x [m], y [n])` with `cost[i, j] = |x[i] - y[j]|`.
  """
  x = jnp.linspace(0.0, 1.0, m)
  y = jnp.linspace(0.0, 1.0, n)
  return jnp.abs(x[:, None] - y[None, :]), x, y


def _cdfs_on_grid(p: jax.Array, x: jax.Array, grid: jax.Array) -> jax.Array:
  """`[..., m]` histograms at positions `x` -> `[..., K]` CDF values at `grid`."""
  below = (x[:, None] <= grid[None, :]).astype(p.dtype)
  return p @ below


def emd_on_line(p: jax.Array, q: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """Exact EMD of histograms on a line under |x_i - y_j|: `[..., m]`, `[..., n]` -> `[...]`.

  EMD = integral |F_p(t) - F_q(t)| dt, a finite sum over the merged positions.
  """
  grid = jnp.sort(jnp.concatenate([x, y]))
  widths = jnp.diff(grid)
  gap = _cdfs_on_grid(p, x, grid[:-1]) - _cdfs_on_grid(q, y, grid[:-1])
  return jnp.sum(jnp.abs(gap) * widths, axis=-1)


@functools.partial(jax.jit, static_argnames=("chunk",))
def pairwise_emd_on_line(p: jax.Array, q: jax.Array, x: jax.Array, y: jax.Array,
                         chunk: int = 64) -> jax.Array:
  """Exact `[Q, N]` EMD of every `[Q, m]` query against every `[N, n]` item on a line.

  Memory is O(chunk * N * (m + n)): queries are processed `chunk` at a time.
  """
  grid = jnp.sort(jnp.concatenate([x, y]))
  widths = jnp.diff(grid)
  fp = _cdfs_on_grid(p, x, grid[:-1])  # [Q, K]
  fq = _cdfs_on_grid(q, y, grid[:-1])  # [N, K]
  pad = (-fp.shape[0]) % chunk
  blocks = jnp.pad(fp, ((0, pad), (0, 0))).reshape(-1, chunk, fp.shape[1])
  out = jax.lax.map(lambda b: jnp.sum(jnp.abs(b[:, None, :] - fq[None]) * widths, -1), blocks)
  return out.reshape(-1, fq.shape[0])[: fp.shape[0]]


def centroid_lower_bound(p: jax.Array, q: jax.Array, image_points: jax.Array,
                         text_points: jax.Array) -> jax.Array:
  """`[Q, N]` lower bound ||sum_i p_i a_i - sum_j q_j b_j|| <= EMD.

  Valid when the cost is a distance between bin points: D_ij = ||a_i - b_j||
  (`image_points` `[m, d]`, `text_points` `[n, d]`; on a line, d = 1).
  """
  cp, cq = p @ image_points, q @ text_points
  return jnp.linalg.norm(cp[:, None, :] - cq[None, :, :], axis=-1)


def independent_lower_bound(p: jax.Array, q: jax.Array, cost: jax.Array) -> jax.Array:
  """`[Q, N]` lower bound max(sum_i p_i min_j D_ij, sum_j q_j min_i D_ij) <= EMD.

  Valid for any cost: each unit of mass pays at least its cheapest move. (The
  minima run over all bins, so the bound holds for any support of p and q.)
  """
  row = p @ jnp.min(cost, axis=1)
  col = q @ jnp.min(cost, axis=0)
  return jnp.maximum(row[:, None], col[None, :])


def pairwise_emd(p: jax.Array, q: jax.Array, cost: jax.Array,
                 config: SinkhornConfig = SinkhornConfig(), *, chunk: int = 4096,
                 on_nonconvergence: Literal["raise", "warn"] = "raise") -> jax.Array:
  """`[Q, N]` entropic EMD of every `[Q, m]` query against every `[N, n]` item.

  The Q x N problems share the `[m, n]` ground cost; they are solved `chunk`
  pairs at a time with `batched_sinkhorn_emd`, so memory stays bounded.

  Raises:
    FloatingPointError: (with `on_nonconvergence="raise"`) if any problem did
      not converge; the message gives how many and the worst error.
  """
  num_q, num_n = p.shape[0], q.shape[0]
  solve = lambda a, b: _solve_chunk(a, b, cost, config)
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
    from absl import logging
    logging.warning(message)
  return jnp.asarray(np.concatenate(costs).reshape(num_q, num_n))


def topk_emd(lower_bound: np.ndarray, exact_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
             k: int, initial: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
  """The k nearest items of every query by EMD, skipping pairs a lower bound rules out.

  For each query, items are visited in increasing lower-bound order; exact
  distances are computed for the first c of them, and the top k among those is
  final once its k-th distance is at most the lower bound of the next unvisited
  item (no unvisited item can then enter the top k). Queries that are not yet
  certified double c.

  Args:
    lower_bound: `[Q, N]` lower bounds of the EMD.
    exact_fn: `(query_rows [P], item_cols [P]) -> [P]` exact EMDs of pairs.
    k: neighbours per query.
    initial: first c (default 4k).

  Returns:
    `(indices [Q, k], distances [Q, k], number of exact computations)`.
  """
  lower_bound = np.asarray(lower_bound)
  num_q, num_n = lower_bound.shape
  order = np.argsort(lower_bound, axis=1, kind="stable")
  exact = np.full((num_q, num_n), np.inf)
  computed = np.zeros(num_q, int)
  pending = np.arange(num_q)
  c = min(initial or 4 * k, num_n)
  evaluations = 0
  while pending.size:
    rows = np.repeat(pending, [c - computed[q] for q in pending])
    cols = np.concatenate([order[q, computed[q]:c] for q in pending])
    if rows.size:
      exact[rows, cols] = exact_fn(rows, cols)
      evaluations += rows.size
    computed[pending] = c
    kth = np.sort(exact[pending], axis=1)[:, k - 1]
    next_bound = (lower_bound[pending, order[pending, c]] if c < num_n
                  else np.full(len(pending), np.inf))
    pending = pending[kth > next_bound]
    c = min(2 * c, num_n)
  top = np.argsort(exact, axis=1, kind="stable")[:, :k]
  return top, np.take_along_axis(exact, top, 1), evaluations


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
