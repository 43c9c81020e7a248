r"""Benchmark: full-ranking retrieval evaluation against its floor.

  python -m benchmarks.evaluation --num_items=100000 --num_queries=2000 \
      --output=reports/benchmark_evaluation.md

Scores are embedding dot products computed block by block on device, so only a
`[chunk_size, num_items]` block exists at a time. The evaluation is the
runner's own path (`cmjax.evaluation.streamed_metrics`: scores, exact ranking
with ties by index, AP, AP@50, P@50, PR curve). Measured in the same run on the
same blocks:
- the scores alone (the floor of any exact method: every score must exist);
- NumPy's values-only sort of those scores (`np.sort`, no indices), the other
  half of the floor the cheapest exact ranking would approach;
- NumPy's argsort + AP (a plain reference implementation), whose APs must agree.
The NumPy references run on the first `--numpy_queries` queries and are
compared per query.
"""

from __future__ import annotations

import resource
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from cmjax import devices, evaluation
import benchmarks

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_items", 100_000, "Database size N.")
flags.DEFINE_integer("num_queries", 2000, "Queries evaluated (of the N x N problem).")
flags.DEFINE_integer("chunk_size", 256, "Queries per block.")
flags.DEFINE_integer("dim", 64, "Embedding dimension.")
flags.DEFINE_integer("num_classes", 10, "Classes (single-label relevance).")
flags.DEFINE_integer("numpy_queries", 256, "Queries for the NumPy reference timings.")
flags.DEFINE_string("output", None, "Markdown report to write.")


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


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


def main(argv):
  benchmarks.start(argv)
  n, q = FLAGS.num_items, FLAGS.num_queries
  base_rss = _peak_rss_gib()
  t = measure(n, q, dim=FLAGS.dim, num_classes=FLAGS.num_classes, chunk_size=FLAGS.chunk_size,
              numpy_queries=FLAGS.numpy_queries)
  peak = _peak_rss_gib()
  metrics = t["metrics"]
  lines = [
      "# Retrieval evaluation at scale",
      "",
      f"Regenerate: `python -m benchmarks.evaluation --num_items={n} "
      f"--num_queries={q} --output=<this file>`",
      "",
      benchmarks.machine(),
      "",
      f"Database N = {n:,} items ({FLAGS.dim}-d embeddings, {FLAGS.num_classes} classes), "
      f"{q:,} queries evaluated in blocks of {FLAGS.chunk_size}; MAP {metrics.map:.4f}, "
      f"MAP@50 {metrics.map_at[50]:.4f}. The 'all queries' column is a full {n:,} x {n:,} "
      "evaluation at these rates.",
      "",
      *comparison_lines(t, n),
      "",
      f"Peak resident memory of the process: {peak:.2f} GiB (before evaluation: "
      f"{base_rss:.2f} GiB). The full N x N float32 score matrix would take "
      f"{n * n * 4 / 2**30:.1f} GiB; it never exists.",
  ]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
