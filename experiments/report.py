r"""A method's presets on one dataset, several seeds: the report of its variants.

  python -m experiments.report --method=uncsm --dataset=wikipedia \
      --presets=default,dbn,nopretrain,paper --output=reports/uncsm_wikipedia.md
  python -m experiments.report --method=fgl --dataset=web_news \
      --presets=default,binary,mlp_text --output=reports/fgl_web_news.md

Each (preset, seed) runs through `cmjax.runner` in its own workdir
`<root>/<dataset>/<method>/<preset>/seed<seed>`; finished runs are reused (when
config and data match) and interrupted ones resume, so the command can be
stopped and run again. Each preset's row says which fields differ from the
`default` preset; a method's alternative similarities (e.g. UNCSM's cosine
instead of the metric network) get their own rows. Mean and standard
deviation (numpy `std`, ddof=0) over seeds of test MAP, pair ROC AUC and the
wall time of a run.
"""

from __future__ import annotations

import os
import time

from absl import app, flags
import numpy as np

from cmjax import configs, data, runner
from cmjax.methods import registry
from experiments import cli, leaderboard

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("method", "uncsm", "Registered method: " + ", ".join(registry.names()))
  flags.DEFINE_enum("dataset", "wikipedia", list(data.DATASETS), "Dataset.")
  flags.DEFINE_string("data_dir", None, "Release directory (default as in the entry points).")
  flags.DEFINE_list("presets", ["default"], "Presets of the method's config file to run.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
  flags.DEFINE_string("root", "/tmp/cmjax_report", "Folder of the runs' workdirs.")
  flags.DEFINE_string("output", None, "Markdown report to write.")
  cli.define_loop_flags()
  cli.show_in_help(cli.LOOP_FLAGS)


def _changes(config, default) -> str:
  """The fields where `config` differs from the default preset."""
  diff = [f"{k}={v}" for k, v in vars(config).items() if getattr(default, k) != v]
  return ", ".join(diff) if diff else "the default preset"


def _row(label: str, runs: list[dict], get=lambda r: r["map"]) -> str:
  cell = lambda d: (f"{np.mean([get(r)[d] for r in runs]):.4f} ± "
                    f"{np.std([get(r)[d] for r in runs]):.4f}")
  auc = np.mean([r["roc_auc"] for r in runs])
  return (f"| {label} | {cell('i2t')} | {cell('t2i')} | {cell('avg')} | {auc:.4f} | "
          f"{len(runs)} | {np.mean([r['wall_s'] for r in runs]):.0f} |")


def _run_presets(spec, seeds: list[int]) -> tuple[dict[str, tuple[str, list[dict]]], data.Dataset]:
  default = registry.make_config(spec, "default")
  views, table = {}, {}
  for preset in FLAGS.presets:
    config = registry.make_config(spec, preset)
    view = spec.view(config, FLAGS.dataset)
    key = (view[0], tuple(sorted(view[1].items())))
    if key not in views:
      views[key] = registry.load_data(spec, config, FLAGS.dataset, FLAGS.data_dir)
    table[preset] = (_changes(config, default), [
        runner.run(spec, config, views[key],
                   os.path.join(FLAGS.root, FLAGS.dataset, spec.name, preset, f"seed{seed}"),
                   seed, preset=preset, loop=cli.loop_config())
        for seed in seeds])
  return table, next(iter(views.values()))


def main(argv):
  cli.start(argv)
  start = time.time()
  spec = registry.get(FLAGS.method)
  if not FLAGS.presets:
    raise configs.ConfigError("--presets needs at least one preset")
  for preset in FLAGS.presets:
    if preset not in spec.presets:
      raise configs.ConfigError(f"method {spec.name} has no preset {preset!r} (it has "
                                f"{', '.join(spec.presets)})")
  seeds = cli.parse_seeds(FLAGS.seeds, "seeds")
  table, dataset = _run_presets(spec, seeds)
  first = next(iter(table.values()))[1][0]
  env = first["environment"]
  lines = [
      f"# {spec.name} on {FLAGS.dataset}", "", spec.description, "",
      f"Regenerate: `python -m experiments.report --method={spec.name} "
      f"--dataset={FLAGS.dataset} --presets={','.join(FLAGS.presets)} "
      f"--seeds={','.join(FLAGS.seeds)} --output=<this file>`", "",
      f"Test MAP over all returned results, {first['num_test']} test queries each way; mean ± "
      f"std over seeds; pair ROC AUC; wall time per run (all stages and the evaluation) on "
      f"{os.cpu_count()} CPU cores, backend {env['backend']}.", "",
      f"Data: {first['num_train'] + first['num_val']} training pairs (a stratified share is "
      f"carved out for validation where a preset uses one), {first['num_test']} test pairs, "
      f"view '{first['view']}', image inputs {dataset.train.image.shape[1:]}, text inputs "
      f"{dataset.train.text.shape[1:]}"
      + (f"; {len(dataset.metadata['dropped'])} listed pairs dropped by the loader (missing "
         f"image files)" if dataset.metadata.get("dropped") else "") + ".", "",
      "| preset (changes vs default) | I->T | T->I | Avg | pair ROC AUC | seeds | wall s / run |",
      "|---|---|---|---|---|---|---|",
  ]
  for preset, (changes, runs) in table.items():
    label = f"{preset} ({changes}){leaderboard.flag_mark(runs)}"
    lines.append(_row(label, runs))
    for name in runs[0]["alternatives"]:
      if runs[0]["config"].get("similarity") != name:
        lines.append(_row(f"{label} — {name} instead", runs,
                          lambda r, n=name: r["alternatives"][n]))
  if first.get("hashing"):
    lines += ["", "Hashing protocol (database = training items, queries = test items; mAP@50 "
              "over the relevant items in the top 50, MAP over the full Hamming ranking, P@r2 "
              "within Hamming radius 2):", "",
              "| preset | bits | mAP@50 I->T | mAP@50 T->I | MAP I->T | MAP T->I | "
              "tie-aware MAP I->T | P@r2 I->T | P@r2 T->I |", "|---|---|---|---|---|---|---|---|---|"]
    for preset, (_, runs) in table.items():
      cell = lambda d, k: (f"{np.mean([r['hashing'][d][k] for r in runs]):.4f} ± "
                           f"{np.std([r['hashing'][d][k] for r in runs]):.4f}")
      lines.append(f"| {preset} | {runs[0]['hashing']['bits']} | {cell('i2t', 'map@50')} | "
                   f"{cell('t2i', 'map@50')} | {cell('i2t', 'map')} | {cell('t2i', 'map')} | "
                   f"{cell('i2t', 'map_tie_aware')} | {cell('i2t', 'precision_radius2')} | "
                   f"{cell('t2i', 'precision_radius2')} |")
  lines += leaderboard.flag_notes({preset: runs for preset, (_, runs) in table.items()})
  lines += ["", "Per run (seed: avg MAP; stage steps and best validation avg MAP):", ""]
  for preset, (_, runs) in table.items():
    for r in runs:
      stages = ", ".join(f"{k} {v['steps']} steps" + (
          f" val {v['best_val_avg_map']:.3f}" if v.get("best_val_avg_map") else "")
                         for k, v in r["stages"].items())
      lines.append(f"- {preset} seed {r['seed']}: avg {r['map']['avg']:.4f} ({stages})")
  total = sum(r["wall_s"] for _, runs in table.values() for r in runs)
  lines += ["", f"Total wall time of this command's runs: {total:.0f} s (this invocation: "
                f"{time.time() - start:.0f} s; finished runs are reused)."]
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
