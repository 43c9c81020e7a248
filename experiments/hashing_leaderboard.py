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

import os
import time

from absl import flags

from cmjax import configs, data, reports
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
  cli.define_batch_flags()


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
  data_dir = lambda d: os.path.join(FLAGS.data_root, d) if FLAGS.data_root else None
  features = cli.feature_choice()
  results = {(d + features.suffix, m, b): reports.hashing_runs(
      d, m, b, FLAGS.seeds, preset=FLAGS.preset, root=FLAGS.root, data_dir=data_dir(d),
      features=features, loop=cli.loop_config())
             for d in FLAGS.datasets for m in FLAGS.methods for b in bits_list}
  command = (f"python -m experiments.hashing_leaderboard --datasets={','.join(FLAGS.datasets)} "
             f"--bits={','.join(FLAGS.bits)} --seeds={FLAGS.seeds} "
             f"--methods={','.join(FLAGS.methods)}{cli.feature_flags_text()} "
             "--output=<this file>")
  lines = reports.hashing_markdown(
      results, seeds=FLAGS.seeds, preset=FLAGS.preset, command=command,
      figure_stem=os.path.splitext(FLAGS.output)[0] if FLAGS.output else None)
  total = sum(r["wall_s"] for runs in results.values() for r in runs)
  lines.append(f"Sum of the run wall times: {total:.0f} s; this invocation: "
               f"{time.time() - start:.0f} s (finished runs are reused).")
  cli.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  cli.import_method_modules()
  _define_flags()
  cli.run_app(main)
