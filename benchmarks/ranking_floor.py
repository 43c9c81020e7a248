"""The ranking of one retrieval direction against its floor, measured in one run
(`benchmarks.evaluation`, `benchmarks.scale`): cmjax's streamed evaluation, the
scores alone, NumPy's values-only sort of them and NumPy's argsort + AP.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from cmjax import devices, evaluation

__all__ = ["comparison_lines", "measure"]


def _numpy_ap(scores: np.ndarray, query_labels, item_labels) -> np.ndarray:
  order = np.argsort(-scores, axis=1, kind="stable")
  rel = (item_labels[order] == query_labels[:, None]).astype(np.float64)
  hits = np.cumsum(rel, 1)
  precision = hits / np.arange(1, scores.shape[1] + 1)
  return (precision * rel).sum(1) / np.maximum(rel.sum(1), 1)


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def measure(num_items: int, num_queries: int, *, dim: int = 64, num_classes: int = 10,
            chunk_size: int = 256, numpy_queries: int = 256, seed: int = 0) -> dict:
  """Seconds per query of cmjax's evaluation and of the references (see module doc).

  Returns:
    `{"cmjax", "scores", "numpy_sort", "numpy_argsort_ap"}` seconds per query, with
    `"metrics"` (cmjax's `RetrievalMetrics`) and `"numpy_queries"`.
  """
  chunk_size = min(chunk_size, num_queries)
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_items)
  centres = rng.normal(size=(num_classes, dim))
  items = (centres[labels] + 2.0 * rng.normal(size=(num_items, dim))).astype(np.float32)
  queries = items[:num_queries] + 0.5 * rng.normal(size=(num_queries, dim)).astype(np.float32)
  items_dev, queries_dev, labels_dev = devices.put((items, queries, labels))
  score = lambda q, i: q @ i.T
  run = lambda: evaluation.streamed_metrics(score, queries_dev, items_dev, labels[:num_queries],
                                            labels_dev, chunk_size=chunk_size)
  run()  # Compiles (the same shapes: the same program).
  start = time.perf_counter()
  metrics = run()
  cmjax_s = time.perf_counter() - start
  block_scores = jax.jit(lambda start: jax.lax.dynamic_slice_in_dim(
      queries_dev, start, chunk_size) @ items_dev.T)
  starts = [devices.put(np.int32(s)) for s in range(0, num_queries - chunk_size + 1, chunk_size)]
  block_scores(starts[0]).block_until_ready()
  scores_s = _timed(lambda: [block_scores(s) for s in starts]) / (len(starts) * chunk_size)
  m = min(numpy_queries, num_queries)
  host_scores = queries[:m] @ items.T
  numpy_sort_s = _timed(lambda: np.sort(host_scores, axis=1)) / m
  start = time.perf_counter()
  reference = _numpy_ap(host_scores, labels[:m], labels)
  numpy_argsort_s = (time.perf_counter() - start) / m
  np.testing.assert_allclose(metrics.average_precisions[:m], reference, rtol=1e-4)
  return {"cmjax": cmjax_s / num_queries, "scores": scores_s, "numpy_sort": numpy_sort_s,
          "numpy_argsort_ap": numpy_argsort_s, "metrics": metrics, "numpy_queries": m}


def comparison_lines(t: dict, num_queries_both_ways: int) -> list[str]:
  """Report lines of `measure`'s times, projected to `num_queries_both_ways` queries."""
  ms = lambda s: f"{1e3 * s:.2f} ms"
  floor = t["scores"] + t["numpy_sort"]
  total = lambda s: f"{s * num_queries_both_ways:,.0f} s"
  return [
      "| per query | time | all queries | cmjax / this |",
      "|---|---|---|---|",
      f"| cmjax: scores, exact ranking, AP, AP@50, P@50, PR curve | {ms(t['cmjax'])} | "
      f"{total(t['cmjax'])} | 1.00 |",
      f"| scores alone (the floor of any exact method) | {ms(t['scores'])} | "
      f"{total(t['scores'])} | {t['cmjax'] / t['scores']:.1f} |",
      f"| NumPy values-only sort (`np.sort`) | {ms(t['numpy_sort'])} | "
      f"{total(t['numpy_sort'])} | {t['cmjax'] / t['numpy_sort']:.2f} |",
      f"| scores + values-only sort | {ms(floor)} | {total(floor)} | "
      f"**{t['cmjax'] / floor:.2f}** |",
      f"| NumPy argsort + AP only (reference) | {ms(t['numpy_argsort_ap'])} | "
      f"{total(t['numpy_argsort_ap'])} | {t['cmjax'] / t['numpy_argsort_ap']:.2f} |",
      "",
      f"The NumPy times are over the first {t['numpy_queries']} queries; their APs agree "
      "with cmjax's to 1e-4.",
  ]
