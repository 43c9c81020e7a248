r"""Every hashing method at every code length on every dataset: the hashing tables.

  python -m experiments.hashing_leaderboard --datasets=wikipedia,web_news \
      --bits=16,32,64,128 --seeds=3 --output=reports/hashing_leaderboard.md

Protocol (the hashing literature's): database = the training items, queries =
the test items; image queries rank the training texts by Hamming distance and
text queries the training images. mAP@50 (the DJSRH / DCMH convention: AP over
the relevant items within the top 50), MAP over the full ranking (ties by
database index; the tie-aware expectation is in each run's results.json) and
precision within Hamming radius 2, mean ± std over seeds, next to the published
mAP@50. With `--output`, one figure per dataset and code length
(`<output stem>_<dataset>_<K>bits.png`) holds every method's PR curves over the
Hamming ranking, both directions, averaged over seeds. Runs go to
`<root>/<dataset>/<method>/<preset>/bits<K>/seed<seed>` and are reused when
config and data match.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import app, flags
import numpy as np

from cmjax import configs, data, plotting, runner
from cmjax.methods import registry
from experiments import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
  hashing = [m for m in registry.names() if registry.get(m).hashing]
  flags.DEFINE_list("datasets", ["wikipedia"], "Datasets, from " + ", ".join(data.DATASETS))
  flags.DEFINE_list("methods", hashing, "Hashing methods: " + ", ".join(hashing))
  flags.DEFINE_list("bits", ["16", "32", "64", "128"], "Code lengths.")
  flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1.")
  flags.DEFINE_string("preset", "default", "Preset of every method (quick: smoke runs).")
  flags.DEFINE_string("data_root", None, "Folder holding one release folder per dataset.")
  flags.DEFINE_string("root", "/tmp/cmjax_hashing", "Folder of the runs' workdirs.")
  flags.DEFINE_string("output", None, "Markdown report to write.")
  cli.define_loop_flags()
  cli.show_in_help(cli.LOOP_FLAGS)


def _cell(runs, direction, key):
  values = [r["hashing"][direction][key] for r in runs]
  return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _pr_figure(runs_by_method: dict, path: str, title: str) -> str:
  """Every method's hashing PR curves (mean precision over seeds), both directions."""
  curves = {d: {m: (np.asarray(runs[0]["hashing"][d]["pr_curve"]["recall"]),
                    np.mean([r["hashing"][d]["pr_curve"]["precision"] for r in runs], 0))
                for m, runs in runs_by_method.items()} for d in ("i2t", "t2i")}
  return plotting.plot_pr_curves(curves, path, title=title)


def _run(dataset: str, method: str, bits: int) -> list[dict]:
  spec = registry.get(method)
  if not spec.hashing:
    raise configs.ConfigError(f"method {method} is not a hashing method")
  config = dataclasses.replace(registry.make_config(spec, FLAGS.preset), bits=bits)
  data_dir = os.path.join(FLAGS.data_root, dataset) if FLAGS.data_root else None
  loaded = registry.load_data(spec, config, dataset, data_dir)
  return [runner.run(spec, config, loaded, os.path.join(
      FLAGS.root, dataset, method, FLAGS.preset, f"bits{bits}", f"seed{seed}"), seed,
                     preset=FLAGS.preset, loop=cli.loop_config())
          for seed in range(FLAGS.seeds)]


def _parse_bits(values: list[str]) -> list[int]:
  """`--bits` as positive integers."""
  try:
    bits = [int(b) for b in values]
  except ValueError:
    raise configs.ConfigError(f"--bits takes code lengths (integers), got "
                              f"{','.join(values)}") from None
  if not bits or min(bits) <= 0:
    raise configs.ConfigError(f"--bits takes positive code lengths, got {','.join(values)}")
  return bits


def main(argv):
  cli.start(argv)
  start = time.time()
  bits_list = _parse_bits(FLAGS.bits)
  if FLAGS.seeds <= 0:
    raise configs.ConfigError(f"--seeds must be > 0, got {FLAGS.seeds}")
  results = {(d, m, b): _run(d, m, b) for d in FLAGS.datasets for m in FLAGS.methods
             for b in bits_list}
  lines = ["# Cross-modal hashing" + ("" if FLAGS.preset == "default" else
                                      f" (preset '{FLAGS.preset}': smoke run)"), "",
           f"Regenerate: `python -m experiments.hashing_leaderboard --datasets="
           f"{','.join(FLAGS.datasets)} --bits={','.join(FLAGS.bits)} --seeds={FLAGS.seeds} "
           f"--methods={','.join(FLAGS.methods)} --output=<this file>`", "",
           "Database = training items, queries = test items, relevant = same class. mAP@50: "
           "AP over the relevant items within the top 50; MAP: over the full Hamming ranking "
           "(ties by database index); P@r2: precision within Hamming radius 2. Mean ± std "
           f"over {FLAGS.seeds} seeds; {os.cpu_count()} CPU cores.", ""]
  for dataset in FLAGS.datasets:
    for bits in bits_list:
      lines += [f"## {dataset}, {bits} bits", "",
                "| method | mAP@50 I->T | mAP@50 T->I | MAP I->T | MAP T->I | P@r2 I->T | "
                "P@r2 T->I | published mAP@50 I->T / T->I | wall s / run |",
                "|---|---|---|---|---|---|---|---|---|"]
      for method in FLAGS.methods:
        runs = results[(dataset, method, bits)]
        ref = registry.get(method).published_hashing.get(dataset, {}).get(bits)
        lines.append(
            f"| {method} | {_cell(runs, 'i2t', 'map@50')} | {_cell(runs, 't2i', 'map@50')} | "
            f"{_cell(runs, 'i2t', 'map')} | {_cell(runs, 't2i', 'map')} | "
            f"{_cell(runs, 'i2t', 'precision_radius2')} | "
            f"{_cell(runs, 't2i', 'precision_radius2')} | "
            + (f"{ref[0]:.3f} / {ref[1]:.3f}" if ref else "")
            + f" | {np.mean([r['wall_s'] for r in runs]):.0f} |")
      lines.append("")
      if FLAGS.output:
        figure = _pr_figure(
            {m: results[(dataset, m, bits)] for m in FLAGS.methods},
            f"{os.path.splitext(FLAGS.output)[0]}_{dataset}_{bits}bits.png",
            title=f"Hamming-ranking PR curves, {dataset}, {bits} bits")
        lines += [f"![PR curves, {dataset}, {bits} bits]({os.path.basename(figure)})", ""]
  total = sum(r["wall_s"] for runs in results.values() for r in runs)
  lines.append(f"Sum of the run wall times: {total:.0f} s; this invocation: "
               f"{time.time() - start:.0f} s (finished runs are reused).")
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
