"""Exact top-k EMD retrieval: exact solves (POT, else SciPy's HiGHS) only where
the bounds leave the order open."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from cmjax.ot.certified import EMDBounds

__all__ = [
    "TopK",
    "certified_topk",
    "exact_emd",
    "exact_plan",
    "topk_emd",
]


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
  return np.array([np.sum(exact_plan(a, b, cost) * cost) for a, b in zip(p, q)])


def exact_plan(p: np.ndarray, q: np.ndarray, cost: np.ndarray) -> np.ndarray:
  """The optimal transport plan `[m, n]` (float64) of histograms `[m]`, `[n]` under
  `cost` `[m, n]`: rows sum to p, columns to q (normalised), total cost the EMD.
  Solved by SciPy's HiGHS linear programming."""
  from scipy import optimize, sparse
  p, q, cost = (np.asarray(x, np.float64) for x in (p, q, cost))
  m, n = cost.shape
  rows = sparse.kron(sparse.eye(m), np.ones((1, n)))      # sum_j F_ij = p_i
  cols = sparse.kron(np.ones((1, m)), sparse.eye(n))      # sum_i F_ij = q_j
  result = optimize.linprog(cost.ravel(), A_eq=sparse.vstack([rows, cols]).tocsr(),
                            b_eq=np.concatenate([p / p.sum(), q / q.sum()]),
                            bounds=(0, None), method="highs")
  if result.status != 0:
    raise FloatingPointError(f"exact_plan: linprog failed: {result.message}")
  return result.x.reshape(m, n)


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
