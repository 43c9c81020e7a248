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
"""

from __future__ import annotations

import os
import re
import time

from absl import app, flags, logging
import numpy as np

from cmjax import configs, data, plotting, runner
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
  cli.define_loop_flags()
  cli.show_in_help(cli.LOOP_FLAGS)


def flag_mark(runs: list[dict]) -> str:
  """' (!)' after a method whose runs carry warnings (constant scores...), else ''."""
  return " (!)" if any(r.get("warnings") for r in runs) else ""


def flag_notes(table: dict[str, list[dict]]) -> list[str]:
  """One line per flagged method and seed: what its run's warnings say."""
  notes = [f"- (!) {method} seed {r['seed']}: {'; '.join(r['warnings'])}"
           for method, runs in table.items() for r in runs if r.get("warnings")]
  return ["", *notes] if notes else []


def _cell(runs: list[dict], direction: str, key: str = "map") -> str:
  values = [r[key][direction] if direction else r[key] for r in runs]
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def read_reference(path: str) -> dict[tuple[str, str], float]:
  """`{(dataset, method): avg MAP}` of an earlier leaderboard markdown file."""
  table, dataset = {}, None
  if not os.path.isfile(path):
    raise configs.ConfigError(f"--reference={path}: file not found")
  with open(path) as f:
    for line in f:
      heading = re.match(r"^## (\S+)", line)
      if heading:
        dataset = heading.group(1)
      row = re.match(r"^\| (\w+) \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| ([\d.]+) ±", line)
      if row and dataset:
        table[(dataset, row.group(1))] = float(row.group(2))
  return table


def _table(dataset: str, table: dict[str, list[dict]], reference: dict) -> list[str]:
  columns = ["method", "I->T", "T->I", "Avg", "published I->T / T->I", "pair ROC AUC",
             "wall s / run"] + (["Avg - reference"] if reference else [])
  lines = [f"## {dataset}", "", "| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  mean_avg = lambda m: np.mean([r["map"]["avg"] for r in table[m]])
  for method in sorted(table, key=lambda m: -mean_avg(m)):
    runs = table[method]
    published = registry.get(method).published.get(dataset)
    cells = [method + flag_mark(runs), _cell(runs, "i2t"), _cell(runs, "t2i"), _cell(runs, "avg"),
             f"{published[0]:.4f} / {published[1]:.4f}" if published else "",
             _cell(runs, None, "roc_auc"), f"{np.mean([r['wall_s'] for r in runs]):.0f}"]
    if reference:
      old = reference.get((dataset, method))
      cells.append("" if old is None else f"{mean_avg(method) - old:+.4f}")
    lines.append("| " + " | ".join(cells) + " |")
  lines += flag_notes(table)
  families = {}
  for method in table:
    family = registry.get(method).family
    if family:
      families.setdefault(family, []).append(method)
  for family, members in families.items():
    lines += ["", f"Best of the {family} family (as the UNCSM paper reports it): "
                  f"{max(members, key=mean_avg)}."]
  return lines


def _run_all(dataset: str, methods: list[str]) -> dict[str, list[dict]]:
  data_dir = os.path.join(FLAGS.data_root, dataset) if FLAGS.data_root else None
  views, table = {}, {}
  for method in methods:
    spec = registry.get(method)
    config = registry.make_config(spec, FLAGS.preset)
    view = spec.view(config, dataset)
    key = (view[0], tuple(sorted(view[1].items())))
    if key not in views:  # Each data view is loaded once.
      views[key] = registry.load_data(spec, config, dataset, data_dir)
    table[method] = []
    for seed in range(FLAGS.seeds):
      workdir = os.path.join(FLAGS.root, dataset, method, FLAGS.preset, f"seed{seed}")
      if runner.read_results(workdir) is None:
        logging.info("leaderboard: %s on %s, seed %d -> %s", method, dataset, seed, workdir)
      table[method].append(runner.run(spec, config, views[key], workdir, seed,
                                      preset=FLAGS.preset, loop=cli.loop_config()))
  return table


def _check_flags(methods: list[str]) -> None:
  for dataset in FLAGS.datasets:
    if dataset not in data.DATASETS:
      raise data.DataError(f"unknown dataset {dataset!r}; choose from "
                           f"{', '.join(data.DATASETS)}")
  for method in methods:
    spec = registry.get(method)
    if FLAGS.preset not in spec.presets:
      raise configs.ConfigError(f"method {method} has no preset {FLAGS.preset!r} (it has "
                                f"{', '.join(spec.presets)})")
  if FLAGS.seeds <= 0:
    raise configs.ConfigError("--seeds must be > 0")


def main(argv):
  cli.start(argv)
  start = time.time()
  try:
    methods = FLAGS.methods or list(registry.names())
    _check_flags(methods)
    reference = read_reference(FLAGS.reference) if FLAGS.reference else {}
    tables = {dataset: _run_all(dataset, methods) for dataset in FLAGS.datasets}
  except cli.USER_ERRORS as e:
    cli.exit_with_error(e)
  command = (f"python -m experiments.leaderboard --datasets={','.join(FLAGS.datasets)} "
             f"--seeds={FLAGS.seeds}"
             + (f" --methods={','.join(methods)}" if FLAGS.methods else "")
             + (f" --preset={FLAGS.preset}" if FLAGS.preset != "default" else "")
             + (f" --reference={FLAGS.reference}" if FLAGS.reference else "")
             + " --output=<this file>")
  devices = next(iter(next(iter(tables.values())).values()))[0]["environment"]
  lines = ["# Leaderboard" + ("" if FLAGS.preset == "default"
                              else f" (preset '{FLAGS.preset}': smoke run, not for reporting)"),
           "", f"Regenerate: `{command}`", "",
           f"Test MAP over all returned results, mean ± std over {FLAGS.seeds} seeds; preset "
           f"'{FLAGS.preset}' of every method; {os.cpu_count()} CPU cores, backend "
           f"{devices['backend']}, {devices['num_devices']} device(s).", ""]
  stem = os.path.splitext(FLAGS.output)[0] if FLAGS.output else None
  for dataset, table in tables.items():
    lines += _table(dataset, table, reference) + [""]
    total = sum(r["wall_s"] for runs in table.values() for r in runs)
    lines += [f"Sum of the run wall times on {dataset}: {total:.0f} s ({total / 60:.1f} min).",
              ""]
    if stem:
      curves = {d: {m: (np.asarray(runs[0]["pr_curve"]["recall"]),
                        np.mean([r["pr_curve"][d] for r in runs], 0))
                    for m, runs in table.items()} for d in ("i2t", "t2i")}
      figure = plotting.plot_pr_curves(curves, f"{stem}_{dataset}.png",
                                       title=f"PR curves on {dataset}")
      lines += [f"![PR curves on {dataset}]({os.path.basename(figure)})", ""]
  lines.append(f"This invocation: {time.time() - start:.0f} s (finished runs are reused).")
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
