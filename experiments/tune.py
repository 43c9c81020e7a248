r"""Tunes one method on the validation side of a dataset (Optuna), never its test split.

  pip install -e ".[tune]"
  python -m experiments.tune --method=uncsm --dataset=wikipedia --trials=24
  python -m experiments.tune --method=fgl --dataset=web_news --image_features=efficientnet \
      --text_features=words --trials=24

Each trial is one run of the runner with a config sampled from the method's
search space (`SEARCH_SPACES` in its config file; `--help` of the method's
entry point lists it), trained on the training split less a stratified
`--holdout` share and scored by its avg MAP on that share (`cmjax.tune`).
The study lives in `--storage` (default SQLite in `--workdir`): run the
command again and it resumes; run it in several processes (or hosts, with a
shared database URL) and they share the trials. When `--trials` trials have
finished (complete, or pruned by the median rule on the runs' validation
curves) the best config is written to `<output_dir>/<dataset>/<method>.json`
(what `experiments.leaderboard --tuned` reads) with a report of every trial
beside it (`.md`).
"""

from __future__ import annotations

import os

from absl import flags

from cmjax import data, tune
from cmjax.methods import registry
from experiments import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("method", None, "Registered method to tune: " + ", ".join(
      name for name in registry.names() if registry.get(name).search_space))
  flags.DEFINE_enum("dataset", "synthetic", list(data.DATASETS), "Dataset (its test split is "
                    "never read).")
  flags.DEFINE_string("data_dir", None, "Release directory (default as in the entry points).")
  flags.DEFINE_integer("trials", 24, "Budget: trials finished (complete or pruned).",
                       lower_bound=1)
  flags.DEFINE_string("preset", "default", "Preset of the config file the space is sampled "
                      "over (the fields outside the space keep its values).")
  flags.DEFINE_list("fields", None, "Tune only these fields of the search space, by their "
                    "dotted paths as --help lists them (e.g. training.learning_rate); "
                    "default: all of them.")
  flags.DEFINE_float("holdout", tune.DEFAULT_HOLDOUT, "Share of the training split a trial "
                     "is scored on (stratified; the trial trains on the rest).")
  flags.DEFINE_integer("seed", 0, "Seed of the held-out carve, of every trial's run and of the "
                       "sampler.")
  flags.DEFINE_string("workdir", None, "The study's folder (trial workdirs, the default "
                      "SQLite storage). Default: /tmp/cmjax/tune/<dataset>/<method>/<preset>"
                      "/seed<seed>.")
  flags.DEFINE_string("storage", None, "SQLAlchemy URL of the study's database (e.g. "
                      "postgresql://user:pass@host/db, to share one study among hosts). "
                      "Default: sqlite:///<workdir>/study.db.")
  flags.DEFINE_string("study_name", None, "Default: <method>-<dataset>-<preset>-seed<seed>.")
  flags.DEFINE_float("heartbeat_s", 30.0, "Seconds between a running trial's heartbeats; a "
                     "trial silent for twice as long (its worker was killed) is failed and "
                     "its config sampled again.", lower_bound=1.0)
  flags.DEFINE_string("output_dir", "reports/tuned", "Where the tuned config "
                      "(<dataset>/<method>.json) and its report (.md) go.")
  cli.define_batch_flags()
  flags.mark_flag_as_required("method")


def main(argv):
  cli.start(argv)
  spec = registry.get(FLAGS.method)
  features = cli.feature_choice()
  label = FLAGS.dataset + features.suffix
  config = registry.make_config(spec, FLAGS.preset)
  dataset = registry.load_data(spec, config, FLAGS.dataset, FLAGS.data_dir, features)
  workdir = FLAGS.workdir or os.path.join("/tmp/cmjax/tune", label, spec.name, FLAGS.preset,
                                          f"seed{FLAGS.seed}")
  result = tune.tune(spec.name, dataset, trials=FLAGS.trials, workdir=workdir,
                     preset=FLAGS.preset, fields=FLAGS.fields, storage=FLAGS.storage,
                     study_name=FLAGS.study_name, seed=FLAGS.seed, fraction=FLAGS.holdout,
                     dataset_label=label, heartbeat_s=FLAGS.heartbeat_s,
                     loop=cli.loop_config())
  command = (f"python -m experiments.tune --method={spec.name} --dataset={FLAGS.dataset}"
             f"{cli.feature_flags_text()} --trials={FLAGS.trials}"
             + (f" --preset={FLAGS.preset}" if FLAGS.preset != "default" else "")
             + (f" --fields={','.join(FLAGS.fields)}" if FLAGS.fields else "")
             + (f" --seed={FLAGS.seed}" if FLAGS.seed else "")
             + (f" --holdout={FLAGS.holdout}" if FLAGS.holdout != tune.DEFAULT_HOLDOUT else ""))
  path = tune.write_tuned(result, FLAGS.output_dir, command)
  budget = result.budget
  print(f"{spec.name} on {label}: best held-out avg MAP {result.validation_avg_map:.4f} after "
        f"{budget['trials']} trials ({budget['pruned']} pruned, {budget['steps']} steps, "
        f"{budget['wall_s']:.0f} s) -> {path}")


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
