r"""Runs one baseline of the UNCSM paper's comparison on the shared data and protocol.

  python -m experiments.baselines --method=cca --dataset=wikipedia
  python -m experiments.baselines --method=corr_full_ae --dataset=web_news --seed=1

Each run writes the same workdir files as experiments.uncsm (results.json,
pr_curves.png; checkpoints/ and logs/ for the trained methods) and resumes
from its workdir.
"""

from __future__ import annotations

from absl import app, flags

from cmjax import preprocess
from cmjax.methods import baselines, deep
from experiments import common

FLAGS = flags.FLAGS
common.define_common_flags("baselines")
flags.DEFINE_enum("method", "cca", list(baselines.BASELINES), "Baseline to run.")

_LIN, _DEEP = baselines.LinearConfig(), deep.DeepConfig()
# Closed-form methods.
flags.DEFINE_integer("dims", _LIN.dims, "Common-space dimension of cca, cfa, kcca, scm.")
flags.DEFINE_list("reg_grid", [str(r) for r in _LIN.reg_grid],
                  "Covariance ridges (relative to the mean eigenvalue) tried by cca, kcca and "
                  "scm; the best on a validation split of train is refit on all of train.")
flags.DEFINE_integer("landmarks", _LIN.landmarks, "Nystroem landmarks of kcca (low-rank solution).")
flags.DEFINE_integer("degree", _LIN.degree, "Degree of kcca_poly's kernel (gamma x.y + 1)^degree.")
flags.DEFINE_float("l2", _LIN.l2, "L2 penalty of the logistic regressions of sm and scm.")
flags.DEFINE_enum("linear_input_transform", _LIN.input_transform, list(preprocess.INPUT_TRANSFORMS),
                  "Feature transform of the closed-form methods (none: as published).")
# Deep methods.
flags.DEFINE_list("hidden", [str(h) for h in _DEEP.hidden], "Hidden layer widths of the "
                  "encoders (bimodal_ae: its modality layer width is the first).")
flags.DEFINE_integer("code_dim", _DEEP.code_dim, "Code width of the autoencoders.")
flags.DEFINE_integer("dcca_dim", _DEEP.dcca_dim, "Output and CCA dimension of dcca/dccae.")
flags.DEFINE_enum("activation", _DEEP.activation, ["relu", "sigmoid", "tanh"], "Hidden activation.")
flags.DEFINE_float("learning_rate", _DEEP.learning_rate, "AdamW learning rate.")
flags.DEFINE_float("weight_decay", _DEEP.weight_decay, "AdamW weight decay.")
flags.DEFINE_integer("batch_size", _DEEP.batch_size, "Batch of the autoencoders and the DBNs.")
flags.DEFINE_integer("dcca_batch_size", _DEEP.dcca_batch_size,
                     "Batch of dcca/dccae (the correlation needs large batches).")
flags.DEFINE_float("dcca_reg", _DEEP.dcca_reg, "Covariance ridge inside the DCCA objective.")
flags.DEFINE_float("dccae_reconstruction", _DEEP.dccae_reconstruction,
                   "lambda: weight of DCCAE's reconstruction term.")
flags.DEFINE_float("corr_alpha", _DEEP.corr_alpha,
                   "alpha of Corr-AE: (1 - alpha) reconstruction + alpha code distance.")
flags.DEFINE_integer("steps", _DEEP.steps, "Training steps of the deep methods.")
flags.DEFINE_enum("input_transform", _DEEP.input_transform, list(preprocess.INPUT_TRANSFORMS),
                  "Feature transform of the deep methods (closed-form ones use none).")
common.define_selection_flags(
    _DEEP, "model selection (early stopping of the deep methods; the ridge of the "
    "closed-form ones, from --reg_grid)")
flags.DEFINE_integer("mdbn_steps", _DEEP.mdbn_steps, "CD-1 steps per RBM of multimodal_dbn.")
flags.DEFINE_float("mdbn_learning_rate", _DEEP.mdbn_learning_rate, "RBM learning rate.")
flags.DEFINE_integer("mdbn_joint_hidden", _DEEP.mdbn_joint_hidden, "Joint RBM hidden units.")
flags.DEFINE_integer("mdbn_mean_field_steps", _DEEP.mdbn_mean_field_steps,
                     "Mean-field updates that infer the missing modality at query time.")


def main(argv):
  del argv
  common.setup_logging()
  linear_config = common.config_from_flags(_LIN, {"input_transform": "linear_input_transform"})
  deep_config = common.config_from_flags(_DEEP)
  common.run_or_exit(FLAGS.method, lambda dataset, workdir: baselines.run_baseline(
      FLAGS.method, dataset, workdir, FLAGS.seed, linear_config=linear_config,
      deep_config=deep_config, loop=common.loop_config()))


if __name__ == "__main__":
  app.run(main)
