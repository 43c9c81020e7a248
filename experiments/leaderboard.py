r"""Runs every registered method on every dataset and writes the comparison table.

  python -m experiments.leaderboard --datasets=wikipedia,web_news --seeds=3 \
      --root=/tmp/cmjax_leaderboard --output=reports/leaderboard.md

Every (dataset, method, preset, seed) runs through `cmjax.runner` in its own
workdir `<root>/<dataset>/<method>/<preset>/seed<seed>`; a finished run is
reused only when its config and data match (the runner refuses a workdir of
another identity), interrupted ones resume, so an interrupted leaderboard
continues where it stopped. The table gives I->T, T->I and Avg test MAP as
mean ± std over seeds, the pair ROC AUC and the mean wall time of a run; one
figure per dataset (`<output stem>_<dataset>.png`) holds the PR curves of all
methods (averaged over seeds). `--preset=quick` shrinks every training budget
(smoke runs; the table says so). `--reference=<older table>` adds the
difference of each Avg MAP to that table's (reproduction checks).

`--tuned` runs each method's tuned config for the dataset when
`--tuned_dir` has one (`python -m experiments.tune`), and the table's
`config` column says so with the tuning budget (trials, training steps, wall
time). Every row is compared with the best row, paired over the test queries
pooled across seeds (`cmjax.significance`): the difference of avg MAP with its
95% bootstrap interval and the permutation test's p-value.
"""

from __future__ import annotations

import os
import time

from absl import flags
from cmjax import data, reports
from cmjax.methods import registry
from experiments import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_list("datasets", ["wikipedia"], "Datasets, from " + ", ".join(data.DATASETS) + ".")
  flags.DEFINE_string("data_root", None, "Folder holding one release folder per dataset "
                      "(default: $CMJAX_DATA_DIR, else ../shared/data).")
  flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 per method.")
  flags.DEFINE_list("methods", None, "Methods to run (default: every registered method: "
                    + ", ".join(registry.names()) + ").")
  flags.DEFINE_string("preset", "default", "Preset of every method's config file (quick: "
                      "tiny budgets, for smoke runs only).")
  flags.DEFINE_string("root", "/tmp/cmjax_leaderboard", "Folder of the runs' workdirs.")
  flags.DEFINE_string("output", None, "Markdown table to write; figures go beside it.")
  flags.DEFINE_string("reference", None, "An earlier leaderboard markdown file: each row "
                      "gets the difference of its Avg MAP to that file's row.")
  cli.define_tuned_flags()
  cli.define_batch_flags()


def main(argv):
  cli.start(argv)
  start = time.time()
  methods = FLAGS.methods or list(registry.names())
  try:
    reports.check_leaderboard(FLAGS.datasets, methods, FLAGS.seeds, FLAGS.preset)
    reference = reports.read_reference(FLAGS.reference) if FLAGS.reference else {}
    features = cli.feature_choice()
    tables = {dataset + features.suffix: reports.leaderboard_runs(
        dataset, methods, FLAGS.seeds, preset=FLAGS.preset, root=FLAGS.root,
        data_dir=os.path.join(FLAGS.data_root, dataset) if FLAGS.data_root else None,
        features=features, loop=cli.loop_config(),
        tuned=cli.tuned_dir()) for dataset in FLAGS.datasets}
  except cli.USER_ERRORS as e:
    cli.exit_with_error(e)
  command = (f"python -m experiments.leaderboard --datasets={','.join(FLAGS.datasets)} "
             f"--seeds={FLAGS.seeds}"
             + (f" --methods={','.join(methods)}" if FLAGS.methods else "")
             + (f" --preset={FLAGS.preset}" if FLAGS.preset != "default" else "")
             + (f" --reference={FLAGS.reference}" if FLAGS.reference else "")
             + cli.tuned_flags_text()
             + cli.feature_flags_text()
             + " --output=<this file>")
  devices = next(iter(next(iter(tables.values())).values()))[0]["environment"]
  lines = ["# Leaderboard" + ("" if FLAGS.preset == "default"
                              else f" (preset '{FLAGS.preset}': smoke run, not for reporting)"),
           "", f"Regenerate: `{command}`", "",
           f"Test MAP over all returned results, {reports.over_seeds(FLAGS.seeds)}; "
           + (f"each method's tuned config where {FLAGS.tuned_dir} has one, else preset "
              f"'{FLAGS.preset}' (the config column says which); " if FLAGS.tuned else
              f"preset '{FLAGS.preset}' of every method; ")
           + f"{os.cpu_count()} CPU cores, backend {devices['backend']}, "
           f"{devices['num_devices']} device(s). Avg - best: paired over the test queries of "
           "every seed (95% bootstrap interval, permutation test p-value; "
           "cmjax.significance).", ""]
  stem = os.path.splitext(FLAGS.output)[0] if FLAGS.output else None
  for dataset, table in tables.items():
    budgets = reports.tuning_budgets(FLAGS.tuned_dir, dataset, table) if FLAGS.tuned else None
    lines += reports.leaderboard_table(dataset, table, reference, budgets) + [""]
    total = sum(r["wall_s"] for runs in table.values() for r in runs)
    lines += [f"Sum of the run wall times on {dataset}: {total:.0f} s ({total / 60:.1f} min).",
              ""]
    if stem:
      figure = reports.leaderboard_figure(dataset, table, f"{stem}_{dataset}.png")
      lines += [f"![PR curves on {dataset}]({os.path.basename(figure)})", ""]
  lines.append(f"This invocation: {time.time() - start:.0f} s (finished runs are reused).")
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
