r"""Runs every method on every dataset and writes the comparison table and figures.

  python -m experiments.leaderboard --datasets=wikipedia,web_news --seeds=3 \
      --root=/tmp/cmjax_leaderboard --output=reports/leaderboard.md

Every (dataset, method, seed) runs in its own workdir under `--root`; finished
runs (a `results.json`) are reused and interrupted ones resume, so an
interrupted leaderboard continues where it stopped. The table gives I->T, T->I
and Avg test MAP as mean ± std over seeds and the mean wall time of a run; one
figure per dataset (`<output stem>_<dataset>.png`) holds the PR curves of all
methods (averaged over seeds). `--quick` shrinks every training budget for a
smoke run.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import app, flags, logging
import numpy as np

from cmjax import data, plotting, results
from cmjax.methods import baselines, deep, uncsm
from experiments import common

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["wikipedia"], "Datasets, from " + ", ".join(data.DATASETS) + ".")
flags.DEFINE_string("data_root", None,
                    "Folder holding one release folder per dataset (default: as experiments.uncsm).")
flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 per method.")
flags.DEFINE_list("methods", ["uncsm", *baselines.BASELINES], "Methods to run.")
flags.DEFINE_string("root", "/tmp/cmjax_leaderboard", "Folder of the runs' workdirs.")
flags.DEFINE_string("output", None, "Markdown table to write; figures go beside it.")
flags.DEFINE_bool("quick", False, "Tiny training budgets (smoke test), not for reporting.")

# Published MAP (I->T, T->I) on the Wikipedia release features; see ANCHORS.md.
PUBLISHED = {
    "wikipedia": {"cca": (0.2549, 0.1846), "sm": (0.225, 0.223), "scm": (0.277, 0.226)},
}
CORR_AE_FAMILY = ("corr_ae", "corr_cross_ae", "corr_full_ae")


def _configs(quick: bool):
  uncsm_config, deep_config = uncsm.RECIPES["tuned"], deep.DeepConfig()
  if quick:
    uncsm_config = dataclasses.replace(
        uncsm_config, hidden=(64, 32, 16), branch_size=16, metric_hidden=(32, 32, 32),
        pretrain_steps=100, finetune_steps=100, metric_pairs=12800, eval_every=50)
    deep_config = dataclasses.replace(
        deep_config, hidden=(32,), code_dim=8, dcca_dim=8, steps=100, eval_every=50,
        dcca_batch_size=256, mdbn_steps=100, mdbn_image_hidden=(32, 16),
        mdbn_text_hidden=(16, 16), mdbn_joint_hidden=32)
  return uncsm_config, deep_config


def run_method(method: str, dataset: data.Dataset, workdir: str, seed: int, quick: bool) -> dict:
  """The results of one run, reused from `workdir` if it finished."""
  done = results.read_results(workdir)
  if done is not None:
    return done
  logging.info("leaderboard: %s on %s, seed %d -> %s", method, dataset.name, seed, workdir)
  uncsm_config, deep_config = _configs(quick)
  if method == "uncsm":
    return uncsm.run(uncsm_config, dataset, workdir, seed)
  return baselines.run_baseline(method, dataset, workdir, seed, deep_config=deep_config)


def _cell(runs: list[dict], direction: str) -> str:
  values = [r["map"][direction] for r in runs]
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def _table(name: str, table: dict[str, list[dict]]) -> list[str]:
  published = PUBLISHED.get(name, {})
  lines = [f"## {name}", "",
           "| method | I->T | T->I | Avg | published I->T / T->I | wall s / run |",
           "|---|---|---|---|---|---|"]
  order = sorted(table, key=lambda m: -np.mean([r["map"]["avg"] for r in table[m]]))
  for method in order:
    runs = table[method]
    ref = published.get(method)
    ref = f"{ref[0]:.4f} / {ref[1]:.4f}" if ref else ""
    lines.append(f"| {method} | {_cell(runs, 'i2t')} | {_cell(runs, 't2i')} | "
                 f"{_cell(runs, 'avg')} | {ref} | {np.mean([r['wall_s'] for r in runs]):.0f} |")
  family = [m for m in CORR_AE_FAMILY if m in table]
  if family:
    best = max(family, key=lambda m: np.mean([r["map"]["avg"] for r in table[m]]))
    lines += ["", f"Best of the Corr-AE family (as the UNCSM paper reports it): {best}."]
  return lines


def main(argv):
  del argv
  common.setup_logging()
  start = time.time()
  lines = ["# Leaderboard", "",
           f"Regenerate: `python -m experiments.leaderboard --datasets={','.join(FLAGS.datasets)} "
           f"--seeds={FLAGS.seeds} --output=<this file>`" + (" (QUICK smoke run)" if FLAGS.quick else ""),
           "", f"Test MAP over all returned results, mean ± std over {FLAGS.seeds} seeds; "
           f"{os.cpu_count()} CPU cores.", ""]
  stem = os.path.splitext(FLAGS.output)[0] if FLAGS.output else None
  for name in FLAGS.datasets:
    data_dir = os.path.join(FLAGS.data_root, name) if FLAGS.data_root else None
    dataset = data.load_dataset(name, data_dir)
    table = {m: [run_method(m, dataset, os.path.join(FLAGS.root, name, m, f"seed{s}"), s,
                            FLAGS.quick) for s in range(FLAGS.seeds)]
             for m in FLAGS.methods}
    lines += _table(name, table) + [""]
    if stem:
      curves = {d: {m: (np.asarray(runs[0]["pr_curve"]["recall"]),
                        np.mean([r["pr_curve"][d] for r in runs], 0))
                    for m, runs in table.items()} for d in ("i2t", "t2i")}
      figure = plotting.plot_pr_curves(curves, f"{stem}_{name}.png", title=f"PR curves on {name}")
      lines += [f"![PR curves on {name}]({os.path.basename(figure)})", ""]
  lines.append(f"This invocation: {time.time() - start:.0f} s (finished runs are reused).")
  common.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
