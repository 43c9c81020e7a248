r"""Trains and evaluates EMD-CNN (Zuo et al. 2020) or its control rows.

  python -m experiments.emd_cnn --dataset=web_news
  python -m experiments.emd_cnn --dataset=wikipedia --method=emd_cnn_cosine

On `web_news` the networks read decoded pixels and caption characters (an
image CNN and a character CNN, trained from scratch); on feature datasets
(wikipedia, synthetic, arrays) MLPs read the feature vectors. The control rows
(`emd_cnn_cosine`, `emd_cnn_euclidean`) are the same networks with equal-size
outputs compared by cosine or Euclidean distance. `--help` lists every flag and
every config field (`--config.<field>=...`).
"""

from experiments import cli

if __name__ == "__main__":
  cli.main(["emd_cnn", "emd_cnn_cosine", "emd_cnn_euclidean"])
