r"""Runs one baseline of the UNCSM paper's comparison on the shared data and protocol.

  python -m experiments.baselines --method=cca --dataset=wikipedia

Implemented so far: the closed-form baselines (cca, cfa, kcca_poly, kcca_rbf,
sm, scm). Each writes the same workdir files as experiments.uncsm
(results.json, pr_curves.png).
"""

from __future__ import annotations

import time

from absl import app, flags
import numpy as np

from cmjax import evaluation, results
from cmjax.methods import linear
from experiments import common

FLAGS = flags.FLAGS
common.define_common_flags("baselines")
flags.DEFINE_enum("method", "cca", ["cca", "cfa", "kcca_poly", "kcca_rbf", "sm", "scm"],
                  "Baseline to run.")
flags.DEFINE_integer("dims", 10, "Common-space dimension of cca, cfa, kcca, scm.")
flags.DEFINE_float("reg", 1e-3, "Covariance ridge of cca/scm (relative to the mean "
                   "eigenvalue); kcca uses 10x this.")
flags.DEFINE_integer("landmarks", 512, "Nystroem landmarks of kcca (low-rank solution).")
flags.DEFINE_integer("degree", 2, "Degree of kcca_poly's kernel (gamma x.y + 1)^degree.")
flags.DEFINE_float("l2", 1e-3, "L2 penalty of the logistic regressions of sm and scm.")


def fit(method: str, x: np.ndarray, z: np.ndarray, labels: np.ndarray, num_classes: int,
        seed: int) -> linear.Projection:
  """Fits `method` on training pairs `x` `[n, d_x]`, `z` `[n, d_z]`."""
  if method == "cca":
    return linear.fit_cca(x, z, FLAGS.dims, FLAGS.reg)
  if method == "cfa":
    return linear.fit_cfa(x, z, FLAGS.dims)
  if method.startswith("kcca_"):
    return linear.fit_kcca(x, z, FLAGS.dims, method[len("kcca_"):], FLAGS.landmarks,
                           10 * FLAGS.reg, FLAGS.degree, seed)
  if method == "sm":
    return linear.fit_sm(x, z, labels, num_classes, FLAGS.l2)
  return linear.fit_scm(x, z, labels, num_classes, FLAGS.dims, FLAGS.reg, FLAGS.l2)


def main(argv):
  del argv
  common.setup_logging()
  start = time.time()
  dataset = common.load_dataset_or_exit()
  train, test = dataset.train, dataset.test
  projection = fit(FLAGS.method, train.image, train.text, train.labels, dataset.num_classes,
                   FLAGS.seed)
  scores = linear.similarity(projection.image(test.image), projection.text(test.text),
                             projection.similarity)
  metrics = evaluation.cross_modal_metrics(scores, scores.T, test.labels, test.labels)
  workdir = common.workdir(FLAGS.method)
  out = results.write_results(workdir, method=FLAGS.method, dataset=dataset.name,
                              seed=FLAGS.seed, metrics=metrics, wall_s=time.time() - start)
  print(f"{FLAGS.method} {dataset.name}: MAP i2t {out['map']['i2t']:.4f} "
        f"t2i {out['map']['t2i']:.4f} avg {out['map']['avg']:.4f} -> {workdir}")


if __name__ == "__main__":
  app.run(main)
