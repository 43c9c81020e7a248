r"""Regenerates the UNCSM report: main result, paper recipe and ablations, per seed.

  python -m experiments.report_uncsm --dataset=wikipedia --seeds=0,1,2 \
      --root=/tmp/cmjax_report --output=reports/uncsm_wikipedia.md
  python -m experiments.report_uncsm --dataset=web_news --variants=tuned \
      --root=/tmp/cmjax_report --output=reports/uncsm_web_news.md

Each (variant, seed) runs in its own workdir under `--root`; a finished run
(its `results.json` exists) is reused, an interrupted one resumes, so the
command can be stopped and run again. The report gives mean and standard
deviation over seeds (numpy `std`, ddof=0) of test MAP, and the wall time.
The cosine rows (paper Table 5) come from the same trained pathways as the
metric-network rows, ranked by the cosine of the shared representation.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import app, flags, logging
import numpy as np

from cmjax import data, runner
from cmjax.methods import registry
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "wikipedia", list(data.DATASETS), "Dataset.")
flags.DEFINE_string("data_dir", None, "Release directory (default as in experiments.uncsm).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_list("variants", ["tuned", "tuned_nopretrain", "paper", "tuned_dbn"],
                  "Variants to run, from VARIANTS.")
flags.DEFINE_string("root", "/tmp/cmjax_report", "Folder of the runs' workdirs.")
flags.DEFINE_string("output", None, "Markdown report to write.")

SPEC = registry.get("uncsm")
_TUNED = registry.make_config(SPEC, "default")
_PAPER = registry.make_config(SPEC, "paper")
VARIANTS: dict[str, tuple[str, object]] = {
    "tuned": ("default (tuned) recipe", _TUNED),
    "tuned_nopretrain": ("tuned, without pretraining (Table 6)",
                         dataclasses.replace(_TUNED, pretrain=False)),
    "paper": ("paper recipe (SGD 0.001, wd 0.004, 10K steps/stage, sigmoid, no validation)",
              _PAPER),
    "paper_relu": ("paper recipe with ReLU pathways",
                   dataclasses.replace(_PAPER, activation="relu")),
    "paper_nopretrain": ("paper recipe, without pretraining",
                         dataclasses.replace(_PAPER, pretrain=False)),
    "tuned_dbn": ("tuned + DBN preprocessing (paper sec. 4.4)",
                  dataclasses.replace(_TUNED, dbn=True)),
    "paper_dbn": ("paper recipe + DBN preprocessing (paper sec. 4.4)",
                  dataclasses.replace(_PAPER, dbn=True)),
    **{f"tuned_margin{m}": (f"tuned, all margins {m} (Fig. 5)",
                            dataclasses.replace(_TUNED, contrastive_margin=m,
                                                image_triplet_margin=m, text_triplet_margin=m))
       for m in (0.5, 1.5, 2.0, 2.5)},
}


def _row(label: str, runs: list[dict], get=lambda r: r["map"]) -> str:
  cell = lambda d: (f"{np.mean([get(r)[d] for r in runs]):.4f} ± "
                    f"{np.std([get(r)[d] for r in runs]):.4f}")
  wall = np.mean([r["wall_s"] for r in runs])
  return f"| {label} | {cell('i2t')} | {cell('t2i')} | {cell('avg')} | {len(runs)} | {wall:.0f} |"


def main(argv):
  del argv
  cli.setup_logging()
  dataset = data.load_dataset(FLAGS.dataset, FLAGS.data_dir)
  start = time.time()
  table = {}
  for name in FLAGS.variants:
    _, config = VARIANTS[name]
    runs = []
    for seed in (int(s) for s in FLAGS.seeds):
      workdir = os.path.join(FLAGS.root, FLAGS.dataset, name, f"seed{seed}")
      if runner.read_results(workdir) is None:
        logging.info("running %s seed %d in %s", name, seed, workdir)
      runs.append(runner.run(SPEC, config, dataset, workdir, seed))
    table[name] = runs
  lines = [
      f"# UNCSM on {FLAGS.dataset}",
      "",
      "Regenerate: `python -m experiments.report_uncsm --dataset=" + FLAGS.dataset +
      f" --seeds={','.join(FLAGS.seeds)} --variants={','.join(FLAGS.variants)}"
      f" --output=<this file>`",
      "",
      f"Test MAP over all returned results (eq. 6), {len(dataset.test)} test queries each way; "
      f"mean ± std over seeds; wall time per run (all stages, evaluation included) on this "
      f"machine ({os.cpu_count()} CPU cores).",
      "",
      f"Data: {len(dataset.train)} training pairs (a stratified share is carved out for "
      f"validation where a recipe uses one), {len(dataset.test)} test pairs, image inputs "
      f"{dataset.train.image.shape[1]}-d, text inputs {dataset.train.text.shape[1]}-d"
      + (f"; {len(dataset.metadata['dropped'])} listed pairs dropped by the loader "
         f"(missing image files)" if dataset.metadata.get("dropped") else "") + ".",
      "",
      "| variant | I->T | T->I | Avg | seeds | wall s / run |",
      "|---|---|---|---|---|---|",
  ]
  for name, runs in table.items():
    lines.append(_row(VARIANTS[name][0], runs))
    if runs[0]["config"]["similarity"] == "metric":
      lines.append(_row(VARIANTS[name][0] + " — cosine instead of metric net (Table 5)", runs,
                        lambda r: r["alternatives"]["cosine"]))
  lines += ["", "Per run (seed: avg MAP; stage steps and best validation avg MAP):", ""]
  for name, runs in table.items():
    for r in runs:
      stages = ", ".join(f"{k} {v['steps']} steps" + (
          f" val {v['best_val_avg_map']:.3f}" if v.get("best_val_avg_map") else "")
                         for k, v in r["stages"].items())
      lines.append(f"- {name} seed {r['seed']}: avg {r['map']['avg']:.4f} ({stages})")
  lines += ["", f"Total wall time of this command's runs: "
                f"{sum(r['wall_s'] for runs in table.values() for r in runs):.0f} s "
                f"(this invocation: {time.time() - start:.0f} s)."]
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
