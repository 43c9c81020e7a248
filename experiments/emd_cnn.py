r"""Trains and evaluates EMD-CNN (Zuo et al. 2020) or its control rows.

  python -m experiments.emd_cnn --dataset=wikipedia --workdir=/tmp/emd_cnn_wiki

On `web_news` the networks read decoded pixels and caption characters (an
image CNN and a character CNN, trained from scratch); on feature datasets
(wikipedia, synthetic, arrays) MLPs read the feature vectors. The control rows
are the same networks with equal-size outputs compared by `--distance=cosine`
or `--distance=euclidean`. The workdir receives config.json, checkpoints/,
logs/ (TensorBoard), results.json (MAP, PR curve, `roc_auc` of pair
classification), pr_curves.png and test_distances.npy; running again resumes.
"""

from __future__ import annotations

from absl import app, flags

from cmjax import preprocess
from cmjax.methods import emd_cnn
from experiments import common

FLAGS = flags.FLAGS
common.define_common_flags("emd_cnn")

_D = emd_cnn.EMDCNNConfig()
flags.DEFINE_enum("distance", _D.distance, ["emd", "cosine", "euclidean"],
                  "Cross-modal dissimilarity: EMD between histograms of different sizes "
                  "(the method), or the cosine / Euclidean control rows (equal sizes).")
flags.DEFINE_integer("image_bins", _D.image_bins,
                     "Histogram size of the image network (also both sizes of the controls).")
flags.DEFINE_integer("text_bins", _D.text_bins, "Histogram size of the text network (EMD).")
flags.DEFINE_enum("ground_cost", _D.ground_cost, ["fixed", "matrix", "embedding"],
                  "EMD ground cost: fixed |i/(m-1) - j/(n-1)|, a learned positive matrix, or "
                  "distances of learned bin embeddings; all scaled to mean 1.")
flags.DEFINE_integer("cost_embedding_dim", _D.cost_embedding_dim,
                     "Dimension of the bin embeddings of --ground_cost=embedding.")
flags.DEFINE_float("epsilon", _D.epsilon,
                   "Entropic regularisation of the Sinkhorn EMD, in units of the mean cost.")
flags.DEFINE_integer("sinkhorn_iterations", _D.sinkhorn_iterations,
                     "Sinkhorn iterations unrolled in each training step.")
flags.DEFINE_enum("sinkhorn_domain", _D.sinkhorn_domain, ["auto", "scaling", "log"],
                  "Training Sinkhorn updates: scaling (fast; needs max cost / epsilon <= 40), "
                  "log-sum-exp (stable for any epsilon), or auto (scaling when safe, decided "
                  "each step).")
flags.DEFINE_integer("eval_max_iterations", _D.eval_max_iterations,
                     "Sinkhorn iteration budget when ranking a database.")
flags.DEFINE_float("eval_threshold", _D.eval_threshold,
                   "Marginal error at which retrieval Sinkhorn stops; non-converged problems "
                   "are counted in a warning.")
flags.DEFINE_enum("loss", _D.loss, ["triplet", "contrastive"],
                  "Margin loss over the batch's image/text pairs: hinge on every relevant / "
                  "irrelevant pair per anchor, or contrastive.")
flags.DEFINE_float("margin", _D.margin, "Margin of the loss (distances have mean cost 1).")
flags.DEFINE_enum("encoder", _D.encoder, ["network", "identity"],
                  "network: learned encoders; identity: the (histogram) input features are the "
                  "histograms and only the ground cost is learned.")
flags.DEFINE_list("hidden", [str(h) for h in _D.hidden], "Feature MLP hidden widths.")
flags.DEFINE_enum("activation", _D.activation, ["relu", "sigmoid", "tanh"],
                  "Feature MLP activation.")
flags.DEFINE_float("dropout", _D.dropout, "Dropout before each network's output layer(s).")
flags.DEFINE_list("image_channels", [str(c) for c in _D.image_channels],
                  "Image CNN: channels of the stride-2 3x3 convolutions.")
flags.DEFINE_integer("char_embedding", _D.char_embedding, "Text CNN: character embedding size.")
flags.DEFINE_list("text_widths", [str(w) for w in _D.text_widths],
                  "Text CNN: convolution widths (characters).")
flags.DEFINE_integer("text_filters", _D.text_filters, "Text CNN: filters per width.")
flags.DEFINE_integer("max_chars", _D.max_chars,
                     "web_news: captions are truncated to this many characters (counted in "
                     "the log).")
flags.DEFINE_integer("char_vocab", _D.char_vocab,
                     "web_news: characters in the vocabulary (most frequent in train).")
flags.DEFINE_float("learning_rate", _D.learning_rate, "AdamW learning rate.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "AdamW weight decay.")
flags.DEFINE_integer("batch_size", _D.batch_size,
                     "Documents per step; all batch_size^2 image/text pairs are scored.")
flags.DEFINE_integer("steps", _D.steps, "Training steps.")
flags.DEFINE_enum("input_transform", _D.input_transform, list(preprocess.INPUT_TRANSFORMS),
                  "Feature transform fitted on train (feature datasets, network encoder).")
common.define_selection_flags(_D)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_logging()
  config = common.config_from_flags(_D)
  out = common.run_or_exit(
      config.method_name,
      lambda dataset, workdir: emd_cnn.run(config, dataset, workdir, FLAGS.seed,
                                           loop=common.loop_config()),
      lambda name, data_dir: emd_cnn.load_dataset(name, data_dir, config))
  print(f"pair classification ROC AUC {out['roc_auc']:.4f}")


if __name__ == "__main__":
  app.run(main)
