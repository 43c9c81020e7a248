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

from absl import app, flags

import benchmarks
from benchmarks.ranking_floor import comparison_lines, measure

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
