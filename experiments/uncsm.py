r"""Trains and evaluates UNCSM (Qi, Huang, Peng 2017).

With no flags it runs the tuned recipe on the embedded synthetic data:

  python -m experiments.uncsm

On the Wikipedia benchmark, the paper's recipe as written:

  python -m experiments.uncsm --dataset=wikipedia --recipe=paper \
      --workdir=/tmp/uncsm_wiki_paper

`--recipe` picks the base settings (`tuned`, the default, or `paper`); every
other flag given on the command line overrides its recipe's value. The run's
workdir receives config.json, checkpoints/, logs/ (TensorBoard), results.json,
pr_curves.png and test_scores.npy; running again in the same workdir resumes.
"""

from __future__ import annotations

from absl import app, flags

from cmjax import preprocess
from cmjax.methods import uncsm
from experiments import common

FLAGS = flags.FLAGS
common.define_common_flags("uncsm")

_DEFAULT = uncsm.RECIPES["tuned"]
flags.DEFINE_enum("recipe", "tuned", list(uncsm.RECIPES),
                  "Base settings: 'paper' (SGD lr 0.001, weight decay 0.004, 10K steps a "
                  "stage, no validation, sigmoid units) or 'tuned' (the default: see "
                  "reports/uncsm_wikipedia.md). Flags given explicitly override it.")
flags.DEFINE_enum("similarity", _DEFAULT.similarity, ["metric", "cosine"],
                  "Ranking similarity: the metric network's p_hat (paper) or the cosine of "
                  "the shared representations (Table 5 ablation).")
flags.DEFINE_bool("pretrain", _DEFAULT.pretrain,
                  "Run stage 1 (contrastive pretraining); --nopretrain is the Table 6 "
                  "ablation.")
flags.DEFINE_bool("dbn", _DEFAULT.dbn,
                  "Run the optional DBN preprocessing stage (paper sec. 4.4): Gaussian RBM "
                  "/ replicated softmax + binary RBM per modality (CD-1), then a softmax "
                  "net; its top hidden layer feeds the pathways.")
flags.DEFINE_float("contrastive_margin", _DEFAULT.contrastive_margin, "lambda of eq. 1.")
flags.DEFINE_float("image_triplet_margin", _DEFAULT.image_triplet_margin, "alpha of eq. 2.")
flags.DEFINE_float("text_triplet_margin", _DEFAULT.text_triplet_margin, "beta of eq. 3.")
flags.DEFINE_enum("negatives", _DEFAULT.negatives, ["random", "hardest"],
                  "Online triplet sampling: a random irrelevant item, or the closest of "
                  "--negative_candidates random ones under the current network.")
flags.DEFINE_integer("negative_candidates", _DEFAULT.negative_candidates,
                     "Candidates per anchor for --negatives=hardest.")
flags.DEFINE_list("hidden", [str(h) for h in _DEFAULT.hidden], "Pathway layer widths.")
flags.DEFINE_enum("activation", _DEFAULT.activation, ["relu", "sigmoid", "tanh"],
                  "Pathway hidden activation (not stated in the paper).")
flags.DEFINE_enum("output_activation", _DEFAULT.output_activation,
                  ["none", "relu", "sigmoid", "tanh"],
                  "Activation of the pathway output (the shared representation).")
flags.DEFINE_float("dropout", _DEFAULT.dropout, "Dropout on pathway hidden layers.")
flags.DEFINE_integer("branch_size", _DEFAULT.branch_size, "Width of the sigmoid triplet branches.")
flags.DEFINE_list("metric_hidden", [str(h) for h in _DEFAULT.metric_hidden],
                  "Metric network layer widths.")
flags.DEFINE_enum("optimizer", _DEFAULT.optimizer, ["sgd", "adam"],
                  "sgd (with momentum, weight decay as an L2 gradient term, as Caffe) or adam "
                  "(AdamW, decoupled weight decay).")
flags.DEFINE_float("learning_rate", _DEFAULT.learning_rate, "Learning rate of all stages.")
flags.DEFINE_float("momentum", _DEFAULT.momentum, "SGD momentum (0: plain SGD).")
flags.DEFINE_float("weight_decay", _DEFAULT.weight_decay, "Weight decay.")
flags.DEFINE_integer("batch_size", _DEFAULT.batch_size,
                     "Pairs (stage 1) or triplets per modality (stage 2) per step; split over "
                     "all local devices, so it must be divisible by their number.")
flags.DEFINE_integer("pretrain_steps", _DEFAULT.pretrain_steps, "Steps of stage 1.")
flags.DEFINE_integer("finetune_steps", _DEFAULT.finetune_steps, "Steps of stage 2.")
flags.DEFINE_integer("metric_pairs", _DEFAULT.metric_pairs,
                     "Pairs sampled to train the metric network (paper: about 300K, 1:1).")
flags.DEFINE_integer("metric_batch_size", _DEFAULT.metric_batch_size, "Metric network batch.")
flags.DEFINE_integer("dbn_steps", _DEFAULT.dbn_steps, "CD-1 steps per RBM layer.")
flags.DEFINE_float("dbn_learning_rate", _DEFAULT.dbn_learning_rate, "RBM learning rate.")
flags.DEFINE_float("dbn_doc_length", _DEFAULT.dbn_doc_length,
                   "Replicated softmax: text features are scaled to this many 'words'.")
flags.DEFINE_integer("softmax_steps", _DEFAULT.softmax_steps,
                     "Steps of the softmax net fine-tuned on top of each DBN.")
flags.DEFINE_enum("input_transform", _DEFAULT.input_transform, list(preprocess.INPUT_TRANSFORMS),
                  "Feature transform fitted on train: none, standardize, sqrt_standardize "
                  "(Hellinger map then standardise, for histograms), l2.")
common.define_selection_flags(_DEFAULT)

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_logging()
  # The --recipe preset, with every explicitly given flag applied.
  config = common.config_from_flags(uncsm.RECIPES[FLAGS.recipe])
  common.run_or_exit("uncsm", lambda dataset, workdir: uncsm.run(
      config, dataset, workdir, FLAGS.seed, loop=common.loop_config()))


if __name__ == "__main__":
  app.run(main)
