r"""Tests the papers' claims on a dataset: paired comparisons on the test queries.

  python -m experiments.claims --datasets=wikipedia --seeds=3 --output=reports/claims.md
  python -m experiments.claims --datasets=web_news --image_features=efficientnet \
      --text_features=words --tuned --output=reports/claims_web_news_efficientnet.md

Each claim of `cmjax.claims.CLAIMS` (EMD vs cosine / Euclidean, fine-grained vs
0/1 labels, GCN vs bag of words, adaptive vs plain tanh, metric network vs
cosine, contrastive pretraining) runs both of its arms over the seeds through
the runner, in the leaderboard's workdirs (`--root`: finished runs are shared
with `experiments.leaderboard`, interrupted ones resume), and is judged by the
paired bootstrap interval of the avg MAP difference over the test queries of
every seed (`cmjax.significance`): holds, reversed, or no significant
difference. `--tuned` starts each arm from its method's tuned config.
"""

from __future__ import annotations

import os
import time

from absl import flags

from cmjax import checks, claims, data, reports
from experiments import cli

FLAGS = flags.FLAGS
_PAPERS = sorted({claim.paper for claim in claims.CLAIMS})


def _define_flags() -> None:
  flags.DEFINE_list("datasets", ["wikipedia"], "Datasets, from " + ", ".join(data.DATASETS) + ".")
  flags.DEFINE_string("data_root", None, "Folder holding one release folder per dataset "
                      "(default: $CMJAX_DATA_DIR, else ../shared/data).")
  flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 of every arm.", lower_bound=1)
  flags.DEFINE_list("papers", _PAPERS, "Test the claims of these papers only, from "
                    + ", ".join(_PAPERS) + " (default: all).")
  flags.DEFINE_string("preset", "default", "Preset of every arm's method (without --tuned, or "
                      "where it has no tuned config).")
  cli.define_tuned_flags()
  flags.DEFINE_string("root", "/tmp/cmjax_leaderboard", "Folder of the runs' workdirs (the "
                      "leaderboard's: runs of the same config are shared).")
  flags.DEFINE_string("output", None, "Markdown report to write.")
  cli.define_batch_flags()


def main(argv):
  cli.start(argv)
  start = time.time()
  reports.check_leaderboard(FLAGS.datasets, [], FLAGS.seeds, FLAGS.preset)
  unknown = sorted(set(FLAGS.papers) - set(_PAPERS))
  if unknown:
    raise checks.ConfigError(f"--papers: unknown {', '.join(unknown)}; from {', '.join(_PAPERS)}")
  chosen = [claim for claim in claims.CLAIMS if claim.paper in FLAGS.papers]
  features = cli.feature_choice()
  tuned = cli.tuned_dir()
  command = (f"python -m experiments.claims --datasets={','.join(FLAGS.datasets)} "
             f"--seeds={FLAGS.seeds}{cli.feature_flags_text()}"
             + (f" --preset={FLAGS.preset}" if FLAGS.preset != "default" else "")
             + cli.tuned_flags_text()
             + (f" --papers={','.join(FLAGS.papers)}" if set(FLAGS.papers) != set(_PAPERS) else "")
             + " --output=<this file>")
  lines = ["# The papers' claims, tested", "", f"Regenerate: `{command}`", "",
           f"Both arms of every claim run with seeds 0-{FLAGS.seeds - 1} "
           + ("from each method's tuned config where there is one (else preset "
              f"'{FLAGS.preset}'), the arm's change on top" if tuned
              else f"from preset '{FLAGS.preset}', the arm's change on top")
           + f"; avg test MAP, {reports.over_seeds(FLAGS.seeds)}. Difference: better minus "
           "than, paired "
           "over the test queries of every seed, with its 95% bootstrap interval (queries "
           "resampled within each direction) and the two-sided p-value of the paired "
           "permutation test (cmjax.significance; 10,000 resamples, so p >= 0.0002). Verdict: "
           "holds if the interval lies above 0, reversed if below, else no significant "
           "difference. The two arms rank the same queries with closely related models, so "
           "differences of a few thousandths can be significant: read the verdict with the "
           "size of the difference.", ""]
  for dataset in FLAGS.datasets:
    table = claims.claim_runs(
        dataset, FLAGS.seeds, claims=chosen, preset=FLAGS.preset, root=FLAGS.root,
        data_dir=os.path.join(FLAGS.data_root, dataset) if FLAGS.data_root else None,
        features=features, tuned=tuned, loop=cli.loop_config())
    lines += claims.claims_markdown(dataset + features.suffix, table) + [""]
  lines.append(f"This invocation: {time.time() - start:.0f} s (finished runs are reused).")
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
