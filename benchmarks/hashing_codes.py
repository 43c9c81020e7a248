r"""The hashing baselines' codes on device in float32 against their float64 form.

  python -m benchmarks.hashing_codes --dataset=wikipedia \
      --output=reports/hashing_codes_wikipedia.md
  python -m benchmarks.hashing_codes --dataset=web_news --image_features=efficientnet \
      --output=reports/hashing_codes_web_news_efficientnet.md

CVH, CCA+ITQ, CMFH, IMH and LSSH are fitted in float64 on the host; their codes of
new items come from the same maps applied on device in float32 at full precision
(`hashing_baselines.sign_encoder`). For each method and code length (the `default`
preset, seed 0), this counts the test items' bits whose sign differs from the
float64 map's, thresholded at the float64 training mean, and the smallest
|value - threshold| relative to the largest: how close any bit came to flipping.
"""

from __future__ import annotations

from absl import app, flags
import numpy as np

import benchmarks
from cmjax import preprocess
from cmjax.methods import hashing_baselines, registry
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "wikipedia", ["wikipedia", "web_news", "synthetic"],
                  "Dataset whose test items are hashed.")
flags.DEFINE_string("data_dir", None, "Its release folder (default: ../shared/data/<name>).")
flags.DEFINE_list("bits", ["16", "32", "64", "128"], "Code lengths.")
flags.DEFINE_list("methods", list(hashing_baselines.VARIANTS), "Hashing baselines.")
flags.DEFINE_string("output", None, "Markdown report to write (default: print only).")
cli.define_feature_flags()


def compare(real_map: hashing_baselines.Map, train: np.ndarray, test: np.ndarray
            ) -> tuple[int, int, float]:
  """`(bits that differ, bits, smallest |value - threshold| / largest)` of one modality."""
  centred = real_map.host(test) - real_map.host(train).mean(0)
  expected = np.where(centred >= 0, 1.0, -1.0)
  codes = np.asarray(hashing_baselines.sign_encoder(real_map, train)(test))
  nonzero = np.abs(centred)[centred != 0]
  return int((codes != expected).sum()), codes.size, nonzero.min() / nonzero.max()


def main(argv):
  benchmarks.start(argv)
  first = registry.get(FLAGS.methods[0])
  config = registry.make_config(first, "default")
  dataset = registry.load_data(first, config, FLAGS.dataset, FLAGS.data_dir,
                               cli.feature_choice())
  prepared = preprocess.prepare(dataset, config.prepare.input_transform,
                                config.prepare.validation_fraction, seed=0)
  train, test = prepared.train, prepared.test
  lines = [
      "# Hashing baselines: float32 device codes against float64",
      "",
      f"Regenerate: `python -m benchmarks.hashing_codes --dataset={FLAGS.dataset}"
      f"{cli.feature_flags_text()} --output=<this file>`",
      "",
      benchmarks.machine(),
      "",
      f"{FLAGS.dataset}{cli.feature_flags_text()}: {len(test.image)} test items, each "
      "method's `default` preset, seed 0. Differing: test bits (both modalities) whose "
      "device code is not the float64 sign. Closest: the smallest |value - threshold| "
      "over the largest, of the float64 map.",
      "",
      "| method | bits | differing | of | closest |",
      "|---|---|---|---|---|",
  ]
  total = 0
  for bits in map(int, FLAGS.bits):
    for name in FLAGS.methods:
      method_config = registry.make_config(registry.get(name), "default", bits=bits)
      maps = hashing_baselines.VARIANTS[name].maps(train.image, train.text, method_config, 0)
      rows = [compare(m, a, b) for m, a, b in zip(maps, (train.image, train.text),
                                                    (test.image, test.text))]
      differing, size = sum(r[0] for r in rows), sum(r[1] for r in rows)
      total += differing
      lines.append(f"| {name} | {bits} | {differing} | {size:,} | "
                   f"{min(r[2] for r in rows):.1e} |")
      print(lines[-1], flush=True)
  lines += ["", f"Differing bits in all: {total}."]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
