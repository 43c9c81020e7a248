"""Many problems under one general ground cost: a certified semi-dual solver
(a lower and an upper bound per problem)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.ot.entropic import reduce_cost
from cmjax.precision import float32_matmuls

__all__ = [
    "EMDBounds",
    "SemidualConfig",
    "certified_emd",
]


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
@float32_matmuls
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
  # The cost shift, pinned like every other product: at JAX's default precision
  # (bfloat16 on TPUs) the certified bounds would move.
  highest = jax.lax.Precision.HIGHEST
  shift = (np.asarray(jnp.matmul(p, shift_a, precision=highest), np.float64)[:, None]
           + np.asarray(jnp.matmul(q, shift_b, precision=highest), np.float64)[None, :])
  lower = np.concatenate(lower, axis=1).astype(np.float64) + shift
  upper = np.concatenate(upper, axis=1).astype(np.float64) + shift
  return EMDBounds(value=lower, lower=lower, upper=upper)
