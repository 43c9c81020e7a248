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

import time

from absl import flags

from cmjax import data, reports
from cmjax.methods import registry
from experiments import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("method", "uncsm", "Registered method: " + ", ".join(registry.names()))
  flags.DEFINE_enum("dataset", "wikipedia", list(data.DATASETS), "Dataset.")
  flags.DEFINE_string("data_dir", None, "Release directory (default as in the entry points).")
  flags.DEFINE_list("presets", ["default"], "Presets of the method's config file to run.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
  flags.DEFINE_string("root", "/tmp/cmjax_report", "Folder of the runs' workdirs.")
  flags.DEFINE_string("output", None, "Markdown report to write.")
  cli.define_batch_flags()


def main(argv):
  cli.start(argv)
  start = time.time()
  seeds = cli.parse_seeds(FLAGS.seeds, "seeds")
  table, dataset = reports.preset_runs(FLAGS.method, FLAGS.dataset, FLAGS.presets, seeds,
                                       root=FLAGS.root, data_dir=FLAGS.data_dir,
                                       features=cli.feature_choice(), loop=cli.loop_config())
  command = (f"python -m experiments.report --method={FLAGS.method} --dataset={FLAGS.dataset} "
             f"--presets={','.join(FLAGS.presets)} --seeds={','.join(FLAGS.seeds)}"
             f"{cli.feature_flags_text()} --output=<this file>")
  lines = reports.preset_markdown(FLAGS.method, FLAGS.dataset, table, dataset, command)
  total = sum(r["wall_s"] for _, runs in table.values() for r in runs)
  lines += ["", f"Total wall time of this command's runs: {total:.0f} s (this invocation: "
                f"{time.time() - start:.0f} s; finished runs are reused)."]
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
