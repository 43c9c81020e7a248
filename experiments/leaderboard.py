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
from cmjax.methods import baselines, deep, emd_cnn, uncsm
from experiments import common

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["wikipedia"], "Datasets, from " + ", ".join(data.DATASETS) + ".")
flags.DEFINE_string("data_root", None,
                    "Folder holding one release folder per dataset (default: as experiments.uncsm).")
flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 per method.")
EMD_METHODS = {"emd_cnn": "emd", "emd_cnn_cosine": "cosine", "emd_cnn_euclidean": "euclidean"}
flags.DEFINE_list("methods", ["uncsm", *EMD_METHODS, *baselines.BASELINES],
                  "Methods to run: uncsm, emd_cnn (and its control rows emd_cnn_cosine, "
                  "emd_cnn_euclidean), " + ", ".join(baselines.BASELINES) + ".")
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
  emd_config = emd_cnn.EMDCNNConfig()
  if quick:
    uncsm_config = dataclasses.replace(
        uncsm_config, hidden=(64, 32, 16), branch_size=16, metric_hidden=(32, 32, 32),
        pretrain_steps=100, finetune_steps=100, metric_pairs=12800, eval_every=50)
    deep_config = dataclasses.replace(
        deep_config, hidden=(32,), code_dim=8, dcca_dim=8, steps=100, eval_every=50,
        dcca_batch_size=256, mdbn_steps=100, mdbn_image_hidden=(32, 16),
        mdbn_text_hidden=(16, 16), mdbn_joint_hidden=32)
    emd_config = dataclasses.replace(emd_config, hidden=(32,), image_channels=(8, 16),
                                     text_filters=16, steps=100, eval_every=50)
  return uncsm_config, deep_config, emd_config


def run_method(method: str, dataset: data.Dataset, workdir: str, seed: int, quick: bool) -> dict:
  """The results of one run, reused from `workdir` if it finished."""
  done = results.read_results(workdir)
  if done is not None:
    return done
  logging.info("leaderboard: %s on %s, seed %d -> %s", method, dataset.name, seed, workdir)
  uncsm_config, deep_config, emd_config = _configs(quick)
  if method == "uncsm":
    return uncsm.run(uncsm_config, dataset, workdir, seed)
  if method in EMD_METHODS:
    config = dataclasses.replace(emd_config, distance=EMD_METHODS[method])
    return emd_cnn.run(config, dataset, workdir, seed)
  return baselines.run_baseline(method, dataset, workdir, seed, deep_config=deep_config)


def _cell(runs: list[dict], direction: str) -> str:
  values = [r["map"][direction] for r in runs]
  return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def _table(name: str, table: dict[str, list[dict]]) -> list[str]:
  published = PUBLISHED.get(name, {})
  lines = [f"## {name}", "",
           "| method | I->T | T->I | Avg | published I->T / T->I | pair ROC AUC | wall s / run |",
           "|---|---|---|---|---|---|---|"]
  order = sorted(table, key=lambda m: -np.mean([r["map"]["avg"] for r in table[m]]))
  for method in order:
    runs = table[method]
    ref = published.get(method)
    ref = f"{ref[0]:.4f} / {ref[1]:.4f}" if ref else ""
    auc = [r["roc_auc"] for r in runs if "roc_auc" in r]
    auc = f"{np.mean(auc):.4f} ± {np.std(auc):.4f}" if auc else ""
    lines.append(f"| {method} | {_cell(runs, 'i2t')} | {_cell(runs, 't2i')} | "
                 f"{_cell(runs, 'avg')} | {ref} | {auc} | "
                 f"{np.mean([r['wall_s'] for r in runs]):.0f} |")
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
           f"--seeds={FLAGS.seeds}"
           + (f" --methods={','.join(FLAGS.methods)}" if FLAGS["methods"].present else "")
           + " --output=<this file>`" + (" (QUICK smoke run)" if FLAGS.quick else ""),
           "", f"Test MAP over all returned results, mean ± std over {FLAGS.seeds} seeds; "
           f"{os.cpu_count()} CPU cores.", ""]
  stem = os.path.splitext(FLAGS.output)[0] if FLAGS.output else None
  for name in FLAGS.datasets:
    data_dir = os.path.join(FLAGS.data_root, name) if FLAGS.data_root else None
    features = data.load_dataset(name, data_dir)
    # EMD-CNN reads web_news as pixels and characters (its own loader).
    emd_data = emd_cnn.load_dataset(name, data_dir, _configs(FLAGS.quick)[2])
    table = {m: [run_method(m, emd_data if m in EMD_METHODS else features,
                            os.path.join(FLAGS.root, name, m, f"seed{s}"), s, FLAGS.quick)
                 for s in range(FLAGS.seeds)]
             for m in FLAGS.methods}
    lines += _table(name, table) + [""]
    total = sum(r["wall_s"] for runs in table.values() for r in runs)
    lines += [f"Sum of the run wall times on {name}: {total:.0f} s ({total / 60:.1f} min).", ""]
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
