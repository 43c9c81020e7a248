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
- `certified_emd`: every query against every item under one general ground
  cost, with a certificate per problem: a lower bound (dual value) and an
  upper bound (a feasible plan's cost). The semi-dual over the potentials of
  the smaller side, damped Newton with epsilon scaling, a fixed budget.
  `certified_topk` makes top-k retrieval exact by solving only the pairs
  whose bounds straddle the k-th (`exact_emd`: POT, else SciPy's HiGHS).
- `pairwise_emd`: the `[Q, N]` EMD matrix by any of the solvers above (the
  certified one by default); `centroid_lower_bound` and
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
    "EMDBounds",
    "SemidualConfig",
    "TopK",
    "certified_emd",
    "certified_topk",
    "exact_emd",
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


@jax.jit
def _line_block(cdf_block: jax.Array, item_cdfs: jax.Array, widths: jax.Array) -> jax.Array:
  """`[B, K]` query CDFs x `[N, K]` item CDFs -> `[B, N]` sum_k |F_p - F_q| widths_k."""
  return jnp.sum(jnp.abs(cdf_block[:, None, :] - item_cdfs[None]) * widths, axis=-1)


def _line_cdfs(histograms, positions: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """`[n, m]` histograms at `positions` -> `[n, K]` float32 CDFs at `grid` (float64 sums)."""
  below = (positions[:, None] <= grid[None, :]).astype(np.float64)
  return (np.asarray(histograms, np.float64) @ below).astype(np.float32)


def pairwise_emd_on_line(p: jax.Array, q: jax.Array, x: jax.Array, y: jax.Array,
                         chunk: int = 64) -> jax.Array:
  """Exact `[Q, N]` EMD of every `[Q, m]` query against every `[N, n]` item on a line.

  The CDFs at the merged positions are summed on the host in float64; the
  device compares `chunk` queries at a time against every item (a sum of
  |difference| x width: no matrix product, so no matmul precision to pin),
  queries and items padded on the host to whole blocks, so one compiled
  block serves every Q and every N up to the same multiple of `chunk`.
  Memory is O(chunk * N * (m + n)).

  Why the product is not on the device (XLA:CPU, jax 0.10.2): a `pad` of a
  matrix product's output fused into a broadcast |difference| reduction
  kills the process (SIGSEGV), e.g. under `jax.jit`, with Q = 2 or 20:

      fp = p @ b                                    # p [Q, 128], b [128, 137]
      block = jnp.pad(fp, ((0, 64 - Q), (0, 0)))    # [64, 137]
      jnp.sum(jnp.abs(block[:, None, :] - fq[None]), -1)   # fq [30, 137]

  The earlier form of this function did exactly that (tests/test_ot.py
  checks a grid of shapes against POT).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  grid = np.sort(np.concatenate([x, y]))
  widths = jax.device_put(np.diff(grid).astype(np.float32))
  fp, fq = _line_cdfs(p, x, grid[:-1]), _line_cdfs(q, y, grid[:-1])
  num_q, num_n = fp.shape[0], fq.shape[0]
  items = jax.device_put(np.pad(fq, ((0, -num_n % chunk), (0, 0))))
  queries = np.pad(fp, ((0, -num_q % chunk), (0, 0)))
  blocks = [np.asarray(_line_block(jax.device_put(queries[start:start + chunk]), items, widths))
            for start in range(0, len(queries), chunk)]
  # Sliced and placed on the host side: eager device ops (`jnp.asarray` included)
  # compile once per shape.
  return jax.device_put(np.concatenate(blocks)[:num_q, :num_n])


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
    from absl import logging
    logging.warning(message)
  return jnp.asarray(np.concatenate(costs).reshape(num_q, num_n))


# ---------------------------------------------------------------------------
# Many problems under one general ground cost: a certified semi-dual solver.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SemidualConfig:
  """Settings of `certified_emd`.

  Attributes:
    epsilons: entropic regularisations, largest first (epsilon scaling), in
      units of the largest reduced cost (so they do not depend on the cost's
      scale). The smallest must be at least 1/80 (float32 scaling domain,
      `_SEMIDUAL_LIMIT`).
    newton_steps: damped Newton steps per epsilon (one number, or one per
      epsilon). A fixed budget, no convergence test: the bounds certify
      whatever it achieves. More steps tighten them (reports/benchmark_emd.md
      has a second budget).
    max_step: largest change of a potential in one step, in units of epsilon.
    item_chunk: items per call.
    pairs_per_block: problems solved together (memory is O(pairs_per_block *
      m * n) floats; small enough to stay in cache).
    plan_factors: temperatures of the rounded entropic plans, as fractions of
      the last epsilon (floored at the limit); the upper bound is the
      cheapest plan.
  """

  epsilons: tuple[float, ...] = (0.2, 0.1, 0.05, 0.025, 0.0125)
  newton_steps: int | tuple[int, ...] = (1, 1, 1, 1, 2)
  max_step: float = 2.0
  item_chunk: int = 1024
  pairs_per_block: int = 2048
  plan_factors: tuple[float, ...] = (1.0,)

  def __post_init__(self):
    if not self.epsilons or any(b >= a for a, b in zip(self.epsilons, self.epsilons[1:])):
      raise ValueError(f"epsilons must decrease, got {self.epsilons}")
    if min(self.epsilons) < 1.0 / _SEMIDUAL_LIMIT:
      raise ValueError(f"epsilons below 1/{_SEMIDUAL_LIMIT:g} overflow float32: {self.epsilons}")
    if len(self.steps) != len(self.epsilons) or min(self.steps) < 1:
      raise ValueError(f"newton_steps: one positive count per epsilon, got {self.newton_steps}")
    if self.max_step <= 0 or self.item_chunk < 1 or self.pairs_per_block < 1:
      raise ValueError("max_step, item_chunk and pairs_per_block must be positive")
    if not self.plan_factors or not all(0 < f <= 1 for f in self.plan_factors):
      raise ValueError(f"plan_factors must lie in (0, 1], got {self.plan_factors}")

  @property
  def steps(self) -> tuple[int, ...]:
    """Newton steps for each epsilon."""
    if isinstance(self.newton_steps, int):
      return (self.newton_steps,) * len(self.epsilons)
    return tuple(self.newton_steps)


class EMDBounds(NamedTuple):
  """EMDs of `[Q, N]` problems with a certificate each.

  Attributes:
    value: `[Q, N]` the reported EMD: the dual value (the lower bound, on
      average the closer of the two: reports/benchmark_emd.md).
    lower: `[Q, N]` dual value of c-transformed potentials (weak duality).
    upper: `[Q, N]` cost of a feasible transport plan.
  Both bounds hold up to float32 rounding (reports/benchmark_emd.md checks
  them against POT's exact values to 1e-5).
  """

  value: np.ndarray
  lower: np.ndarray
  upper: np.ndarray

  @property
  def gap(self) -> np.ndarray:
    """`[Q, N]` upper - lower >= EMD's distance to either bound."""
    return self.upper - self.lower


def _solve_definite(entry: Callable[[int, int], jax.Array], rhs: jax.Array) -> jax.Array:
  """Solve `[B]` definite n x n systems A x = rhs, `rhs` `[B, n]`, `entry(i, j)` -> `[B]` A_ij.

  Gaussian elimination without pivoting (A is definite), unrolled over n
  with the batch as the vector dimension: several times faster on CPU than a
  batched `jnp.linalg.solve` of small systems, and A is never assembled.
  """
  n = rhs.shape[1]
  a = [[entry(i, j) for j in range(n)] for i in range(n)]
  b = [rhs[:, i] for i in range(n)]
  for k in range(n):
    inverse_pivot = 1.0 / a[k][k]
    for i in range(k + 1, n):
      factor = a[i][k] * inverse_pivot
      for j in range(k + 1, n):
        a[i][j] = a[i][j] - factor * a[k][j]
      b[i] = b[i] - factor * b[k]
  x = [None] * n
  for i in reversed(range(n)):
    total = b[i]
    for j in range(i + 1, n):
      total = total - a[i][j] * x[j]
    x[i] = total / a[i][i]
  return jnp.stack(x, axis=1)


def _centered(g: jax.Array, spread: jax.Array) -> jax.Array:
  """`[B, n]` potentials centred on 0 and no more than `spread` apart.

  At the optimum |g_j - g_k| <= max reduced cost (each column receives mass
  from some row that prefers it), so clamping to that spread loses nothing;
  centred, every kernel row sum exp(-f_i / eps) lies in
  [exp(-spread / 2eps), n exp(spread / 2eps)] and its square stays finite in
  float32 down to eps = spread / 80 (`_SEMIDUAL_LIMIT`).
  """
  top = jnp.max(g, axis=1, keepdims=True)
  g = jnp.maximum(g, top - spread)
  return g - (top + jnp.min(g, axis=1, keepdims=True)) / 2


# Smallest epsilon of `certified_emd`, in units of the largest reduced cost.
_SEMIDUAL_LIMIT = 80.0


def _semidual_newton_step(g: jax.Array, p: jax.Array, q: jax.Array, kernel: jax.Array,
                          kernel_pairs: jax.Array, eps: float, max_step: float,
                          spread: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One damped Newton step on the entropic semi-dual: `(new g [B, n], error [B])`.

  The semi-dual is L(g) = q.g - eps sum_i p_i log sum_j K_ij exp(g_j / eps)
  (K = exp(-reduced cost / eps)), concave in g `[B, n]`; its gradient is q
  minus the column sums of the plan, its Hessian an n x n matrix per problem,
  formed with one matrix product against `kernel_pairs` (`[m, >= n(n+1)/2]`,
  the products K_ij K_ik, zero-padded). Potentials are kept centred (`_centered`), so no
  kernel row sum under- or overflows.

  The error is the L1 marginal error of the entropic plan before the step.

  Args:
    g: `[B, n]` potentials. p: `[B, m]`. q: `[B, n]`.
  """
  n = q.shape[1]
  g = _centered(g, spread)
  v = jnp.exp(g / eps)                                    # [B, n]
  row_sums = v @ kernel.T                                 # [B, m]
  y = jnp.where(p > 0, p / row_sums, 0.0)                 # [B, m]
  # Zero columns up to 16 make the product 2x faster on CPU.
  columns = v * (y @ jnp.pad(kernel, ((0, 0), (0, -n % 16))))[:, :n]  # [B, n] plan columns
  products = (y / row_sums) @ kernel_pairs                # [B, >= n(n+1)/2]
  index = {pair: k for k, pair in enumerate(zip(*np.triu_indices(n)))}

  def hessian(i, j):
    # L is flat along g + c (sum q = sum p): the -1 removes that direction. The
    # ridge keeps columns that receive no mass (v_j = 0) from making it singular.
    h = products[:, index[min(i, j), max(i, j)]] * v[:, i] * v[:, j]
    return (h - columns[:, i] - 1e-3 if i == j else h) / eps - 1.0

  step = -_solve_definite(hessian, q - columns)
  new = g + jnp.clip(step, -max_step * eps, max_step * eps)
  new = jnp.where(jnp.all(jnp.isfinite(new), axis=1, keepdims=True), new, g)
  return new, jnp.sum(jnp.abs(q - columns), axis=1)


def _plan_upper_bound(q: jax.Array, plan_columns: jax.Array, column_costs: jax.Array,
                      row_excess: Callable[[jax.Array], jax.Array],
                      reduced: jax.Array) -> jax.Array:
  """Cost of a plan with exact row sums p, rounded to column sums q.

  The plan's columns that carry more than q_j are scaled down to q_j; the mass
  removed from each row goes to the columns short of mass in proportion to
  their deficit (Altschuler, Weed, Rigollet 2017, Algorithm 2), which makes it
  feasible.

  Args:
    q: `[B, n]` the column marginals.
    plan_columns: `[B, n]` column sums. column_costs: `[B, n]` cost carried by
      each column. row_excess: `[B, n]` fraction removed per column -> `[B, m]`
      mass removed per row. reduced: `[m, n]`.
  """
  keep = jnp.where(plan_columns > q, q / jnp.maximum(plan_columns, 1e-30), 1.0)
  removed = row_excess(1.0 - keep)                        # [B, m]
  deficit = jnp.maximum(q - keep * plan_columns, 0.0)     # [B, n]
  total = jnp.sum(deficit, 1, keepdims=True)
  # Weights of the columns that receive the removed mass (uniform if, by
  # rounding, none is short): a convex combination, so the cost stays bounded.
  weights = jnp.where(total > 0, deficit / jnp.maximum(total, 1e-30), 1.0 / q.shape[1])
  moved = jnp.sum((removed @ reduced) * weights, 1)
  return jnp.sum(keep * column_costs, 1) + moved


def _certify_block(p: jax.Array, q: jax.Array, g: jax.Array, reduced: jax.Array,
                   plan_epsilons: tuple[jax.Array, ...],
                   spread: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`[B]` lower and upper bounds (in reduced cost) of `[B, m]` x `[B, n]` problems, from g.

  Lower: the dual value of g and its c-transform. Upper: the cheapest of the
  entropic plans of g at `plan_epsilons`, each rounded onto the marginals.
  """
  f = jnp.min(reduced[None] - g[:, None, :], axis=2)     # c-transform f_i = min_j R_ij - g_j
  # And back: g_j <= min_i R_ij - f_i over the rows with mass (the other rows'
  # f_i can be -inf), which raises g where no row is tight and stays feasible.
  slack = jnp.where(p[:, :, None] > 0, reduced[None] - f[:, :, None], jnp.inf)
  lower = jnp.sum(f * p, 1) + jnp.sum(q * jnp.min(slack, axis=1), 1)
  uppers = []
  for eps in plan_epsilons:
    kernel = jnp.exp(-reduced / eps)
    v = jnp.exp(_centered(g, spread) / eps)
    y = jnp.where(p > 0, p / (v @ kernel.T), 0.0)       # plan y_i K_ij v_j, row sums p
    sums = y @ jnp.concatenate([kernel, kernel * reduced], axis=1)  # [B, 2n]
    n = q.shape[1]
    uppers.append(_plan_upper_bound(
        q, v * sums[:, :n], v * sums[:, n:],
        lambda excess: y * ((v * excess) @ kernel.T), reduced))
  return lower, functools.reduce(jnp.minimum, uppers)


@functools.partial(jax.jit, static_argnames=("config", "queries_per_block"))
def _certified_block(p: jax.Array, q: jax.Array, reduced: jax.Array, config: SemidualConfig,
                     queries_per_block: int) -> tuple[jax.Array, jax.Array]:
  """`[Q, m]` x `[C, n]` -> `[Q, C]` bounds in reduced cost, `queries_per_block` at a time."""
  scale = jnp.max(reduced)
  (num_q, m), (num_c, n) = p.shape, q.shape
  rows, cols = np.triu_indices(n)
  items = jnp.tile(q, (queries_per_block, 1))            # [B, n], B = block x C pairs

  epsilons = jnp.repeat(jnp.asarray(config.epsilons, reduced.dtype),
                        np.asarray(config.steps)) * scale  # [S] one per Newton step
  kernels = jnp.exp(-reduced[None] / epsilons[:, None, None])  # [S, m, n]
  kernel_pairs = kernels[:, :, rows] * kernels[:, :, cols]  # [S, m, n(n+1)/2]
  # Padded to a multiple of 16 columns: the matrix product runs 1.5x faster on CPU.
  kernel_pairs = jnp.pad(kernel_pairs, ((0, 0), (0, 0), (0, -len(rows) % 16)))

  def one_block(histograms):                             # [block, m]
    pair_p = jnp.repeat(histograms, num_c, axis=0)       # [B, m]

    def newton_step(g, step):  # One compiled step, scanned over the schedule.
      eps, kernel, pairs = step
      g, _ = _semidual_newton_step(g, pair_p, items, kernel, pairs, eps, config.max_step, scale)
      return g, None

    g, _ = jax.lax.scan(newton_step, jnp.zeros_like(items), (epsilons, kernels, kernel_pairs))
    finest = config.epsilons[-1]
    plan_epsilons = sorted({max(finest * f, 1.0 / _SEMIDUAL_LIMIT) for f in config.plan_factors})
    plan_epsilons = [scale * eps for eps in plan_epsilons]
    return _certify_block(pair_p, items, g, reduced, plan_epsilons, scale)

  blocks = p.reshape(num_q // queries_per_block, queries_per_block, m)
  lower, upper = jax.lax.map(one_block, blocks)
  return lower.reshape(num_q, num_c), upper.reshape(num_q, num_c)


def certified_emd(p: jax.Array, q: jax.Array, cost: jax.Array,
                  config: SemidualConfig = SemidualConfig()) -> EMDBounds:
  """EMD of every `[Q, m]` query against every `[N, n]` item under one `[m, n]` cost, with bounds.

  For a general ground cost (learned, random; no line structure). Each
  problem's dual is reduced to the potentials g of the smaller side (the
  semi-dual over g in R^n), solved by damped Newton steps with epsilon
  scaling in the scaling domain (the Gibbs kernel of the row/column-reduced
  cost, shared by every problem: each step is a few matrix products against
  it). Then, per problem:

  - lower bound: the dual value p.f + q.g of g and its c-transform
    f_i = min_j (D_ij - g_j), feasible for the dual (weak duality);
  - upper bound: the cost of the entropic plan of g, rounded onto the
    marginals (a feasible plan).

  A fixed iteration budget, no convergence test, no warning: the bounds
  certify each value whatever the iterations achieved. `certified_topk`
  solves exactly only the pairs whose bounds straddle the k-th, so top-k
  retrieval is exact.

  Args:
    p: `[Q, m]` histograms. q: `[N, n]` histograms. cost: `[m, n]`.
    config: solver settings.

  Returns:
    `EMDBounds` of `[Q, N]` float64 arrays.
  """
  p = jnp.asarray(p, jnp.float32)
  q = jnp.asarray(q, jnp.float32)
  p = p / jnp.sum(p, axis=1, keepdims=True)
  q = q / jnp.sum(q, axis=1, keepdims=True)
  reduced, shift_a, shift_b = reduce_cost(jnp.asarray(cost, jnp.float32))
  num_q, num_n = p.shape[0], q.shape[0]
  chunk = min(config.item_chunk, num_n)
  per_block = max(1, min(num_q, config.pairs_per_block // chunk))
  p_padded = jnp.pad(p, ((0, -num_q % per_block), (0, 0)), mode="edge")
  lower, upper = [], []
  for start in range(0, num_n, chunk):
    block = q[start:start + chunk]
    padded = jnp.pad(block, ((0, chunk - block.shape[0]), (0, 0)), mode="edge")
    lo, up = _certified_block(p_padded, padded, reduced, config, per_block)
    lower.append(np.asarray(lo)[:num_q, :block.shape[0]])
    upper.append(np.asarray(up)[:num_q, :block.shape[0]])
  shift = (np.asarray(p @ shift_a, np.float64)[:, None]
           + np.asarray(q @ shift_b, np.float64)[None, :])
  lower = np.concatenate(lower, axis=1).astype(np.float64) + shift
  upper = np.concatenate(upper, axis=1).astype(np.float64) + shift
  return EMDBounds(value=lower, lower=lower, upper=upper)


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


def exact_emd(p: np.ndarray, q: np.ndarray, cost: np.ndarray) -> np.ndarray:
  """Exact EMD of `[P, m]` x `[P, n]` pairs under one `[m, n]` cost -> `[P]` (float64).

  POT's network simplex (`ot.emd2`) when POT is installed, else the HiGHS
  linear-programming solver of SciPy (slower, same optimum).
  """
  p, q, cost = (np.asarray(x, np.float64) for x in (p, q, cost))
  p = p / p.sum(1, keepdims=True)
  q = q / q.sum(1, keepdims=True)
  try:
    import ot as pot
    return np.array([pot.emd2(a, b, cost) for a, b in zip(p, q)])
  except ImportError:
    pass
  from scipy import optimize, sparse
  m, n = cost.shape
  rows = sparse.kron(sparse.eye(m), np.ones((1, n)))      # sum_j F_ij = p_i
  cols = sparse.kron(np.ones((1, m)), sparse.eye(n))      # sum_i F_ij = q_j
  constraints = sparse.vstack([rows, cols]).tocsr()
  out = []
  for a, b in zip(p, q):
    result = optimize.linprog(cost.ravel(), A_eq=constraints, b_eq=np.concatenate([a, b]),
                              bounds=(0, None), method="highs")
    if result.status != 0:
      raise FloatingPointError(f"exact_emd: linprog failed: {result.message}")
    out.append(result.fun)
  return np.array(out)


class TopK(NamedTuple):
  """Certified top-k retrieval.

  Attributes:
    indices: `[Q, k]` the k nearest items of each query, nearest first.
    distances: `[Q, k]` their EMDs: exact where `exact`, else the certified value.
    exact: `[Q, k]` whether the distance was computed exactly.
    refined: number of exact computations.
  """

  indices: np.ndarray
  distances: np.ndarray
  exact: np.ndarray
  refined: int


def certified_topk(bounds: EMDBounds, exact_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   k: int) -> TopK:
  """The exact set of k nearest items of every query, from certified bounds.

  Per query, with U the k-th smallest upper bound:
  - an item whose lower bound exceeds U cannot be in the top k (k items are
    certainly nearer); it is never solved;
  - an item that at most k - 1 other items could beat (fewer than k others
    have a lower bound <= its upper bound) is certainly in; not solved either;
  - the rest straddle the k-th and are solved exactly (`exact_fn`); the top k
    is the certain items and the nearest of these by exact EMD (ties by index).

  The set is exact. The order inside it is exact among refined items; certain
  items are placed by their certified value (their intervals are in
  `bounds`).

  Args:
    bounds: `[Q, N]` bounds, e.g. from `certified_emd`.
    exact_fn: `(query_rows [P], item_cols [P]) -> [P]` exact EMDs of pairs.
    k: neighbours per query.
  """
  value, lower, upper = (np.asarray(x, np.float64) for x in bounds)
  num_q, num_n = lower.shape
  if not 0 < k <= num_n:
    raise ValueError(f"k must be in [1, {num_n}], got {k}")
  kth_upper = np.sort(upper, axis=1)[:, k - 1:k]
  candidate = lower <= kth_upper
  sorted_lower = np.sort(lower, axis=1)
  beaten_by = np.stack([np.searchsorted(row, u, side="right") for row, u in
                        zip(sorted_lower, upper)]) - (lower <= upper)  # Others with L <= U.
  certain = candidate & (beaten_by <= k - 1)
  refine = candidate & ~certain
  rows, cols = np.nonzero(refine)
  distance = np.where(candidate, value, np.inf)
  if rows.size:
    distance[rows, cols] = exact_fn(rows, cols)
  # Certain items first (they are in whatever their value), then the nearest refined.
  order_key = np.where(certain, -np.inf, distance)
  chosen = np.argsort(order_key, axis=1, kind="stable")[:, :k]
  chosen_distance = np.take_along_axis(distance, chosen, 1)
  by_distance = np.argsort(chosen_distance, axis=1, kind="stable")
  indices = np.take_along_axis(chosen, by_distance, 1)
  return TopK(indices=indices, distances=np.take_along_axis(distance, indices, 1),
              exact=np.take_along_axis(refine, indices, 1), refined=int(rows.size))


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
