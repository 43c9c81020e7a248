"""Entropic OT: ott-jax's Sinkhorn per problem, and many problems under one shared
ground cost solved together (what EMD-CNN trains with)."""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import implicit_differentiation, sinkhorn

from cmjax.precision import float32_matmuls

__all__ = [
    "EMDResult",
    "SCALING_LIMIT",
    "SinkhornConfig",
    "batched_sinkhorn_emd",
    "reduce_cost",
    "shared_cost_sinkhorn",
    "sinkhorn_emd",
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


@float32_matmuls
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


@float32_matmuls
def batched_sinkhorn_emd(p: jax.Array, q: jax.Array, cost: jax.Array,
                         config: SinkhornConfig = SinkhornConfig()) -> EMDResult:
  """`[B, m]` x `[B, n]` pairs under one `[m, n]` cost (or `[B, m, n]` costs) -> `[B]`."""
  cost_axis = 0 if cost.ndim == 3 else None
  return jax.vmap(lambda a, b, c: sinkhorn_emd(a, b, c, config),
                  in_axes=(0, 0, cost_axis))(p, q, cost)


# Largest max(reduced cost) / epsilon for which the scaling domain is safe in float32
# (values and gradients; tests/test_ot.py).
SCALING_LIMIT = 40.0


def reduce_cost(cost: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`cost - a[:, None] - b[None, :]` with a zero in every row and column, and `(a, b)`.

  Shifting rows and columns by constants changes no transport plan (the
  marginals are fixed) and shifts the EMD by `p @ a + q @ b`; the reduced
  cost keeps every row and column of the Gibbs kernel away from underflow.
  """
  a = jnp.min(cost, axis=1)
  b = jnp.min(cost - a[:, None], axis=0)
  return cost - a[:, None] - b[None, :], a, b


@float32_matmuls
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
    return jax.lax.cond(jnp.max(reduced) / eps <= SCALING_LIMIT, solve("scaling"), solve("log"))
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
