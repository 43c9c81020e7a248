r"""UNCSM's metric network over every test pair, against the float32 matmul peak.

  python -m benchmarks.metric_eval --output=reports/benchmark_metric_eval.md

The metric network scores a pair with three 512-unit layers on the pair's
representations (`uncsm.MetricNet`); its first layer is separable (one dense
map of each side, added), so a pair costs the two 512 x 512 layers: about
1.05 MFLOP. This benchmark times, on JAX's default backend and in one run:

- the float32 matrix-product peak: a square `--matmul_size` product at
  HIGHEST precision (the limit of any dense network's throughput here);
- the scores alone: `uncsm.metric_scores` of blocks of `--block` queries
  against all `--items` items, jitted, as the evaluation calls it;
- the whole streamed evaluation (`cmjax.protocol.evaluate`, nothing kept
  dense): scores, ranking and per-query metrics, both directions;

and projects the time of the NUS-WIDE-size split (33,955 test items: 2.3e9
pairs both ways) from the evaluation's rate. Weights and representations are
random (the cost does not depend on them).
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

import benchmarks
from cmjax import protocol
from cmjax.methods import uncsm

FLAGS = flags.FLAGS
flags.DEFINE_integer("items", 2000, "Test items (queries = items, both directions).")
flags.DEFINE_integer("block", 256, "Queries per scored block (the evaluation's chunk).")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square product for the peak.")
flags.DEFINE_integer("repeats", 2, "Timed repeats (the median is reported).")
flags.DEFINE_string("output", None, "Markdown report to write (default: print only).")

NUS_WIDE_TEST = 33_955


def _median_seconds(fn) -> float:
  fn()  # Compilation.
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def pair_flops(hidden: tuple[int, ...]) -> float:
  """FLOPs of one pair past the separable first layer: the dense layers after it."""
  widths = (*hidden, 2)
  return float(sum(2 * a * b for a, b in zip(widths[:-1], widths[1:])))


def main(argv):
  benchmarks.start(argv)
  config = uncsm.UNCSMConfig()
  n, width = FLAGS.items, config.hidden[-1]
  rng = np.random.default_rng(0)
  fi, ft = jax.device_put((rng.normal(size=(n, width)).astype(np.float32),
                           rng.normal(size=(n, width)).astype(np.float32)))
  net = uncsm.MetricNet(config.metric_hidden)
  params = net.init(jax.random.key(0), fi[:1], ft[:1])
  flops = pair_flops(config.metric_hidden)

  m = FLAGS.matmul_size
  a = jax.device_put(rng.normal(size=(m, m)).astype(np.float32))
  product = jax.jit(lambda a: jnp.matmul(a, a, precision=jax.lax.Precision.HIGHEST))
  peak = 2 * m**3 / _median_seconds(lambda: product(a).block_until_ready())

  scores = jax.jit(lambda q, items: uncsm.metric_scores(net, params, q, items))
  block = fi[:FLAGS.block]
  score_rate = FLAGS.block * n / _median_seconds(lambda: scores(block, ft).block_until_ready())

  score = lambda q, items: uncsm.metric_scores(net, params, q, items)
  labels = np.arange(n) % 10
  evaluate = lambda: protocol.evaluate(score, fi, ft, labels, "metric network",
                                       max_dense_pairs=0)
  eval_rate = 2 * n * n / _median_seconds(evaluate)
  full_pairs = 2 * NUS_WIDE_TEST**2
  lines = [
      "# UNCSM's metric network over every test pair",
      "",
      "Regenerate: `python -m benchmarks.metric_eval --output=reports/benchmark_metric_eval.md`",
      "",
      benchmarks.machine(),
      "",
      f"Metric network {config.metric_hidden} on {width}-d representations: "
      f"{flops / 1e6:.2f} MFLOP a pair past the separable first layer. {n:,} items, "
      f"blocks of {FLAGS.block} queries, median of {FLAGS.repeats} runs.",
      "",
      "| what | pairs/s | GFLOP/s | % of float32 matmul peak |",
      "|---|---|---|---|",
      f"| float32 matmul peak ({m} x {m}, HIGHEST) | | {peak / 1e9:.1f} | 100% |",
      f"| scores alone (`uncsm.metric_scores`, one block) | {score_rate:,.0f} | "
      f"{score_rate * flops / 1e9:.1f} | {score_rate * flops / peak:.0%} |",
      f"| streamed evaluation (`protocol.evaluate`: scores, ranking, metrics, both ways) | "
      f"{eval_rate:,.0f} | {eval_rate * flops / 1e9:.1f} | {eval_rate * flops / peak:.0%} |",
      "",
      f"The NUS-WIDE-size split ({NUS_WIDE_TEST:,} test items, {full_pairs:,} pairs both "
      f"ways) at the evaluation's rate: a projected **{full_pairs / eval_rate / 60:,.1f} "
      f"minutes** on this device.",
  ]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
