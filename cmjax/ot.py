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
- `shared_cost_sinkhorn`: many problems under one shared ground cost solved
  together, each iteration one batched operation (log or scaling domain);
  what EMD-CNN trains with.
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
    "reduce_cost",
    "shared_cost_sinkhorn",
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


# Largest max(reduced cost) / epsilon for which the scaling domain is safe in float32
# (values and gradients; tests/test_ot.py).
_SCALING_LIMIT = 40.0


def reduce_cost(cost: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`cost - a[:, None] - b[None, :]` with a zero in every row and column, and `(a, b)`.

  Shifting rows and columns by constants changes no transport plan (the
  marginals are fixed) and shifts the EMD by `p @ a + q @ b`; the reduced
  cost keeps every row and column of the Gibbs kernel away from underflow.
  """
  a = jnp.min(cost, axis=1)
  b = jnp.min(cost - a[:, None], axis=0)
  return cost - a[:, None] - b[None, :], a, b


def shared_cost_sinkhorn(p: jax.Array, q: jax.Array, cost: jax.Array,
                         config: SinkhornConfig = SinkhornConfig(), *,
                         domain: Literal["auto", "log", "scaling"] = "auto",
                         early_stop: bool = False, check_every: int = 10) -> EMDResult:
  """Entropic EMD of `[B, m]` x `[B, n]` pairs that share one `[m, n]` ground cost.

  The B problems are solved together: each Sinkhorn iteration is one batched
  operation on `[B, m]` and `[B, n]` potentials against the one cost, instead
  of B separate solver loops.

  - `domain="log"`: log-sum-exp updates of the dual potentials; stable for any
    epsilon.
  - `domain="scaling"`: the classic u, v scalings, two `[B, n] @ [n, m]`
    matrix products an iteration (several times faster:
    reports/benchmark_emd_cnn_step.md). It needs
    `max(reduced cost) / epsilon` below about 40 in float32: beyond that the
    kernel underflows, the gradients first, and non-finite results are
    reported as not converged.
  - `domain="auto"` (default): scaling when `max(reduced cost) / epsilon <=
    40`, else log; decided on device (`lax.cond`), so it also holds for
    costs that are learned under `jit`.

  Histograms are floored at 1e-12 (renormalised), which moves the EMD by at
  most 1e-12 * m * max(cost). Without `early_stop` the solver runs exactly
  `config.max_iterations` iterations and is differentiable by unrolling
  (`config.differentiation` must be `unrolled`); with it, it stops once every
  problem's marginal error is below `config.threshold` (checked every
  `check_every` iterations; not differentiable).

  Returns:
    `EMDResult` with `[B]` cost, converged and error (L1 error of the row
    marginals; the column marginals are exact after the last update).
  """
  if config.differentiation != "unrolled":
    raise ValueError("shared_cost_sinkhorn differentiates by unrolling only")
  reduced, shift_a, shift_b = reduce_cost(cost)
  eps = config.epsilon
  if domain == "auto":
    solve = lambda d: lambda: shared_cost_sinkhorn(p, q, cost, config, domain=d,
                                                   early_stop=early_stop, check_every=check_every)
    return jax.lax.cond(jnp.max(reduced) / eps <= _SCALING_LIMIT, solve("scaling"), solve("log"))
  floor = lambda h: (h + 1e-12) / jnp.sum(h + 1e-12, axis=-1, keepdims=True)
  p, q = floor(p), floor(q)
  if domain == "log":
    log_p, log_q, scaled = jnp.log(p), jnp.log(q), reduced / eps
    # Potentials in units of epsilon: f [B, m], g [B, n].
    def iterate(state):
      f, g = state
      f = log_p - jax.nn.logsumexp(g[:, None, :] - scaled, axis=2)
      return f, log_q - jax.nn.logsumexp(f[:, :, None] - scaled, axis=1)
    plan = lambda state: jnp.exp(state[0][:, :, None] + state[1][:, None, :] - scaled)
    init = (jnp.zeros_like(p), jnp.zeros_like(q))
  elif domain == "scaling":
    kernel = jnp.exp(-reduced / eps)
    def iterate(state):
      u, v = state
      u = p / (v @ kernel.T)
      return u, q / (u @ kernel)
    plan = lambda state: state[0][:, :, None] * kernel * state[1][:, None, :]
    init = (jnp.ones_like(p), jnp.ones_like(q))
  else:
    raise ValueError(f"unknown domain {domain!r}")

  def marginal_error(state):
    return jnp.sum(jnp.abs(jnp.sum(plan(state), axis=2) - p), axis=1)

  def block(state):
    return jax.lax.fori_loop(0, check_every, lambda _, s: iterate(s), state)

  if early_stop:
    def not_done(carry):
      state, done = carry
      return (done < config.max_iterations) & ~(jnp.max(marginal_error(state)) <= config.threshold)
    state, _ = jax.lax.while_loop(not_done, lambda c: (block(c[0]), c[1] + check_every),
                                  (init, 0))
  else:
    state, _ = jax.lax.scan(lambda s, _: (iterate(s), None), init, None,
                            length=config.max_iterations)
  transport = plan(state)
  total = jnp.sum(transport * reduced, axis=(1, 2)) + p @ shift_a + q @ shift_b
  error = marginal_error(state)
  error = jnp.where(jnp.isfinite(total), error, jnp.inf)
  return EMDResult(cost=total, converged=error <= config.threshold, error=error)


# One compilation per (chunk shape, config), shared by every `pairwise_emd` call.
_solve_chunk = jax.jit(batched_sinkhorn_emd, static_argnames=("config",))
_solve_chunk_shared = jax.jit(functools.partial(shared_cost_sinkhorn, early_stop=True),
                              static_argnames=("config",))

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
                 solver: Literal["shared_cost", "ott"] = "shared_cost",
                 on_nonconvergence: Literal["raise", "warn"] = "raise") -> jax.Array:
  """`[Q, N]` entropic EMD of every `[Q, m]` query against every `[N, n]` item.

  The Q x N problems share the `[m, n]` ground cost; they are solved `chunk`
  pairs at a time, so memory stays bounded. `solver="shared_cost"` (default)
  uses `shared_cost_sinkhorn` (domain `auto`) with early stopping;
  `solver="ott"` maps ott-jax's Sinkhorn over the pairs (`batched_sinkhorn_emd`).

  Raises:
    FloatingPointError: (with `on_nonconvergence="raise"`) if any problem did
      not converge; the message gives how many and the worst error.
  """
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
