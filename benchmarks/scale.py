r"""The runner at NUS-WIDE scale: wall time and peak memory of the CLI.

  python -m benchmarks.scale --output=reports/benchmark_scale.md

Data: 10 Gaussian classes in the `arrays` format (128-d images, 64-d texts,
class means N(0, 1), noise N(0, `--noise`^2)), written once to a scratch folder.
Each run is `python -m experiments.run --dataset=arrays` in a child process;
its wall time and peak resident memory (`os.wait4`'s `ru_maxrss`) are read by
this process. Sizes, each at 1/8, 1/4, 1/2 and 1/1:
- `cca` and `dcca` (default presets): the UNCSM paper's NUS-WIDE split,
  58,620 train / 33,955 test pairs; evaluation ranks all 33,955 texts for
  every test image and the reverse (1.15e9 pairs each way).
- `dbrc` at 64 bits: the hashing protocol of NUS-WIDE, a database of 186,577
  training items and 2,100 test queries.
The two-way ranking alone, next to its floor (`benchmarks.ranking_floor`):
`--ranking_queries` queries against the 33,955-item test split, projected to
both directions. UNCSM's metric network scores every pair with an MLP: its pairs/s through the
same streaming path (`cmjax.runner.evaluate`, nothing kept dense) on
`--metric_test` test items, projected to the 33,955-item split.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app, flags
import jax
import numpy as np

import benchmarks
from benchmarks import ranking_floor
from cmjax import runner
from cmjax.methods import uncsm

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["cca", "dcca", "dbrc"], "Methods to run through the CLI.")
flags.DEFINE_list("fractions", ["0.125", "0.25", "0.5", "1"], "Fractions of the full sizes.")
flags.DEFINE_float("noise", 4.0, "Standard deviation of the features around their class mean.")
flags.DEFINE_integer("metric_test", 4000, "Test items of the metric-network measurement.")
flags.DEFINE_integer("ranking_queries", 4096, "Queries of the ranking-floor measurement.")
flags.DEFINE_float("rss_limit_gb", 4.0, "Peak resident memory each run must stay within.")
flags.DEFINE_string("scratch", None, "Folder for data and workdirs (default: a new temp dir).")
flags.DEFINE_string("output", None, "Markdown report to write.")

# (train, test) pairs at 1/1: NUS-WIDE in the UNCSM paper, and its hashing protocol.
RETRIEVAL_SIZES = (58_620, 33_955)
HASHING_SIZES = (186_577, 2_100)
# Extra flags of each method's run (none: its default preset as it is).
RUN_FLAGS = {"dbrc": ["--config.bits=64"]}
CLASSES, IMAGE_DIM, TEXT_DIM = 10, 128, 64


def write_data(path: str, num_train: int, num_test: int, noise: float, seed: int = 0) -> None:
  """Gaussian classes as an `arrays` `.npz` (labels cycle through the classes)."""
  rng = np.random.default_rng(seed)
  means = {dim: rng.normal(size=(CLASSES, dim)) for dim in (IMAGE_DIM, TEXT_DIM)}

  def split(n):
    labels = rng.permutation(np.arange(n) % CLASSES)
    feature = lambda dim: (means[dim][labels] + noise * rng.normal(size=(n, dim))).astype(
        np.float32)
    return feature(IMAGE_DIM), feature(TEXT_DIM), labels.astype(np.int64)

  image_train, text_train, label_train = split(num_train)
  image_test, text_test, label_test = split(num_test)
  np.savez(path, image_train=image_train, text_train=text_train, label_train=label_train,
           image_test=image_test, text_test=text_test, label_test=label_test)


def cli_rows(scratch: str) -> list[dict]:
  """One row per (method, fraction): sizes, wall time, peak RSS, test MAP."""
  rows = []
  for method in FLAGS.methods:
    sizes = HASHING_SIZES if method == "dbrc" else RETRIEVAL_SIZES
    for fraction in FLAGS.fractions:
      num_train, num_test = (int(round(n * float(fraction))) for n in sizes)
      data = os.path.join(scratch, f"data_{num_train}_{num_test}.npz")
      if not os.path.exists(data):
        write_data(data, num_train, num_test, FLAGS.noise)
      workdir = os.path.join(scratch, f"{method}_{fraction}")
      wall, rss, status, last = benchmarks.run_child(
          [sys.executable, "-m", "experiments.run", f"--method={method}", "--dataset=arrays",
           f"--data_dir={data}", f"--workdir={workdir}", *RUN_FLAGS.get(method, [])])
      results = runner.read_results(workdir) if status == 0 else None
      rows.append({"method": method, "fraction": fraction, "train": num_train,
                   "test": num_test, "wall": wall, "rss": rss, "status": status,
                   "map": results["map"]["avg"] if results else None,
                   "hashing_map": (results["hashing"]["i2t"]["map"] + results["hashing"]["t2i"]
                                   ["map"]) / 2 if results and results["hashing"] else None,
                   "last": last})
      print(f"{method} {fraction}: {wall:.0f} s, {rss:.2f} GB, exit {status}", flush=True)
  return rows


def metric_network_rate() -> tuple[int, float]:
  """`(test items, pairs/s)` of UNCSM's metric network through `runner.evaluate`."""
  config = uncsm.UNCSMConfig()
  rng = np.random.default_rng(0)
  n, width = FLAGS.metric_test, config.hidden[-1]
  fi = jax.device_put(rng.normal(size=(n, width)).astype(np.float32))
  ft = jax.device_put(rng.normal(size=(n, width)).astype(np.float32))
  net = uncsm.MetricNet(config.metric_hidden)
  params = net.init(jax.random.key(0), fi[:1], ft[:1])
  score = lambda a, b: uncsm.metric_scores(net, params, a, b)
  labels = np.arange(n) % CLASSES
  runner.evaluate(score, fi[:600], ft[:600], labels[:600], "warm-up", max_dense_pairs=0)
  start = time.perf_counter()
  runner.evaluate(score, fi, ft, labels, "uncsm metric", max_dense_pairs=0)
  return n, 2 * n * n / (time.perf_counter() - start)


def main(argv):
  benchmarks.start(argv)
  scratch = FLAGS.scratch or tempfile.mkdtemp(prefix="cmjax_scale_")
  os.makedirs(scratch, exist_ok=True)
  rows = cli_rows(scratch)
  ranking = ranking_floor.measure(RETRIEVAL_SIZES[1], FLAGS.ranking_queries,
                                        dim=TEXT_DIM, num_classes=CLASSES)
  n, rate = metric_network_rate()
  full_pairs = 2 * RETRIEVAL_SIZES[1] ** 2
  lines = [
      "# The runner at NUS-WIDE scale",
      "",
      "Regenerate: `python -m benchmarks.scale --output=reports/benchmark_scale.md`",
      "",
      benchmarks.machine(),
      "",
      f"Each row is one `python -m experiments.run --dataset=arrays` child process (default "
      f"preset; dbrc at 64 bits) on {CLASSES} Gaussian classes, {IMAGE_DIM}-d images and "
      f"{TEXT_DIM}-d texts (noise sd {FLAGS.noise}). Peak RSS is the child's `ru_maxrss`; "
      f"the limit is {FLAGS.rss_limit_gb:g} GB. cca and dcca: train / test pairs of the "
      "UNCSM paper's NUS-WIDE split, all test texts ranked for every test image and the "
      "reverse. dbrc: the NUS-WIDE hashing protocol, the training items are the database "
      "of the test queries.",
      "",
      "| method | size | train | test | wall s | peak RSS GB | within limit | test MAP avg | "
      "hashing MAP avg |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  fmt = lambda v: "" if v is None else f"{v:.4f}"
  for r in rows:
    ok = "yes" if r["status"] == 0 and r["rss"] <= FLAGS.rss_limit_gb else (
        f"NO (exit {r['status']}: {r['last']})" if r["status"] else "NO")
    lines.append(f"| {r['method']} | {r['fraction']} | {r['train']:,} | {r['test']:,} | "
                 f"{r['wall']:.0f} | {r['rss']:.2f} | {ok} | {fmt(r['map'])} | "
                 f"{fmt(r['hashing_map'])} |")
  lines += ["", "Growth from the smallest to the largest size:", ""]
  for method in FLAGS.methods:
    mine = [r for r in rows if r["method"] == method and r["status"] == 0]
    if len(mine) > 1:
      lo, hi = mine[0], mine[-1]
      lines.append(f"- {method}: x{float(hi['fraction']) / float(lo['fraction']):g} the "
                   f"items: wall x{hi['wall'] / lo['wall']:.1f}, peak RSS "
                   f"x{hi['rss'] / lo['rss']:.2f}")
  lines += [
      "",
      "## The two-way ranking against its floor",
      "",
      f"{FLAGS.ranking_queries:,} queries ({TEXT_DIM}-d embeddings, {CLASSES} classes) "
      f"against the {RETRIEVAL_SIZES[1]:,}-item test split, through the runner's streamed "
      f"evaluation; 'all queries' is both directions of the full split "
      f"({2 * RETRIEVAL_SIZES[1]:,} queries).",
      "",
      *ranking_floor.comparison_lines(ranking, 2 * RETRIEVAL_SIZES[1]),
      "",
      "## UNCSM's metric network over every test pair",
      "",
      f"`uncsm.metric_scores` (default metric_hidden {uncsm.UNCSMConfig().metric_hidden}, "
      f"random weights and representations) ranked both ways through `runner.evaluate` with "
      f"nothing kept dense, on {n:,} test items ({2 * n * n:,} scored pairs): "
      f"**{rate:,.0f} pairs/s**. The 33,955-item split has {full_pairs:,} pairs both ways: "
      f"a projected **{full_pairs / rate / 3600:.1f} hours** on this machine.",
  ]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
