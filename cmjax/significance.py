"""Is one run better than another on the same test queries? Paired tests on the
per-query APs every run keeps (`results["per_query_ap"]`), pooled across seeds.

Two sets of runs of the same test split (a method and the best row, a paper's
method and its ablation) are paired query by query within each seed: the
difference of their avg MAP is the mean, over directions, of the mean
per-query AP difference. `compare` gives it with

- a 95% interval from a paired bootstrap (`scipy.stats.bootstrap`), the queries
  of each direction resampled apart (a stratified bootstrap: each direction
  keeps its number of queries);
- a two-sided p-value from a paired permutation test
  (`scipy.stats.permutation_test`: each query's difference flips its sign under
  the null hypothesis that the two runs are exchangeable).

Seeds pool: seed s of one set pairs with seed s of the other, and every
seed's queries count as further paired observations (as a reader of a
mean-over-seeds table compares them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["Comparison", "compare", "paired_differences"]

DIRECTIONS = ("i2t", "t2i")


@dataclasses.dataclass(frozen=True)
class Comparison:
  """The paired comparison of runs `a` against runs `b`.

  Attributes:
    difference: avg MAP of `a` minus that of `b`, pooled over the paired seeds.
    low, high: the `confidence` interval of `difference` (paired bootstrap).
    p_value: two-sided p-value of the paired permutation test.
    queries: paired test queries, both directions, every seed.
    seeds: the seeds paired.
    confidence: the interval's level.
  """

  difference: float
  low: float
  high: float
  p_value: float
  queries: int
  seeds: tuple[int, ...]
  confidence: float = 0.95

  @property
  def significant(self) -> bool:
    """The interval excludes 0."""
    return self.low > 0 or self.high < 0

  def interval(self) -> str:
    """`+0.0123 [+0.0051, +0.0190]`."""
    return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"

  def verdict(self, a: str = "a", b: str = "b") -> str:
    """One of `a better`, `b better` or `no significant difference`, with p."""
    if not self.significant:
      return f"no significant difference (p = {self.p_value:.2g})"
    return f"{a if self.difference > 0 else b} better (p = {self.p_value:.2g})"


def _aps(run: Mapping[str, Any], direction: str, alternative: str | None) -> np.ndarray:
  per_query = run.get("per_query_ap")
  if per_query is None:
    raise ValueError(f"the results of {run.get('method')} (seed {run.get('seed')}) keep no "
                     "per-query AP (a run older than the significance tests): rerun it")
  if alternative is not None:
    per_query = per_query["alternatives"][alternative]
  return np.array([np.nan if ap is None else ap for ap in per_query[direction]], np.float64)


def paired_differences(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]],
                       alternative_a: str | None = None, alternative_b: str | None = None
                       ) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
  """`({"i2t": d, "t2i": d}, seeds)`: per-query AP of `a` minus `b`, seeds paired by
  number and concatenated; queries without a relevant item (NaN AP in both: the
  same labels) are not queries of the MAP and are left out, as there.

  Args:
    runs_a, runs_b: `results.json` dicts (one per seed) of the same dataset.
    alternative_a, alternative_b: compare an alternative scorer of the runs
      (e.g. UNCSM's `cosine`) instead of the main one.

  Raises:
    ValueError: no seed in common, runs without per-query APs, or runs of
      different test splits (other numbers of queries, or relevance).
  """
  by_seed = lambda runs: {int(r["seed"]): r for r in runs}
  a, b = by_seed(runs_a), by_seed(runs_b)
  seeds = tuple(sorted(set(a) & set(b)))
  if not seeds:
    raise ValueError(f"no seed in common: {sorted(a)} vs {sorted(b)}")
  out = {}
  for direction in DIRECTIONS:
    parts = []
    for seed in seeds:
      x, y = _aps(a[seed], direction, alternative_a), _aps(b[seed], direction, alternative_b)
      if x.shape != y.shape or not np.array_equal(np.isnan(x), np.isnan(y)):
        raise ValueError(f"seed {seed}, {direction}: the runs ranked different test queries "
                         f"({x.size} vs {y.size}, or other queries without a relevant item)")
      parts.append((x - y)[~np.isnan(x)])
    out[direction] = np.concatenate(parts)
  return out, seeds


def compare(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]], *,
            alternative_a: str | None = None, alternative_b: str | None = None,
            resamples: int = 10000, confidence: float = 0.95, seed: int = 0) -> Comparison:
  """The paired comparison of `runs_a` against `runs_b` (see the module doc).

  Deterministic: the resampling draws from `seed`.
  """
  diffs, seeds = paired_differences(runs_a, runs_b, alternative_a, alternative_b)
  d_i2t, d_t2i = diffs["i2t"], diffs["t2i"]
  if not d_i2t.size or not d_t2i.size:
    raise ValueError("no query with a relevant item in one direction")

  def avg_difference(x, y, axis=-1):
    return 0.5 * (np.mean(x, axis=axis) + np.mean(y, axis=axis))

  difference = float(avg_difference(d_i2t, d_t2i))
  if np.all(d_i2t == 0) and np.all(d_t2i == 0):  # Identical rankings: nothing to resample.
    return Comparison(0.0, 0.0, 0.0, 1.0, d_i2t.size + d_t2i.size, seeds, confidence)
  rng = np.random.default_rng(seed)
  interval = stats.bootstrap((d_i2t, d_t2i), avg_difference, n_resamples=resamples,
                             confidence_level=confidence, method="percentile",
                             vectorized=True, rng=rng).confidence_interval
  # One sample of signed differences, weighted so that its statistic is the avg MAP
  # difference; `permutation_type="samples"` on one sample flips signs.
  pooled = np.concatenate([d_i2t, d_t2i])
  weights = np.concatenate([np.full(d_i2t.size, 0.5 / d_i2t.size),
                            np.full(d_t2i.size, 0.5 / d_t2i.size)])
  test = stats.permutation_test((pooled,), lambda d, axis=-1: np.sum(d * weights, axis=axis),
                                permutation_type="samples", n_resamples=resamples,
                                vectorized=True, alternative="two-sided", rng=rng, batch=1000)
  return Comparison(difference, float(interval.low), float(interval.high), float(test.pvalue),
                    pooled.size, seeds, confidence)
