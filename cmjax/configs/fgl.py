r"""FGL presets (Xu et al. 2019).

  python -m experiments.fgl --dataset=web_news
  python -m experiments.fgl --dataset=web_news --config=cmjax/configs/fgl.py:binary

- `default`: fine-grained labels from the siamese text network (beta 1), the
  weighted pairwise loss, a Chebyshev GCN text path (K=3, 4 filters) on a
  2,000-bigram word graph where the dataset has raw captions, else an MLP.
- `binary`: the same with every pair weighing 1 (the paper's ablation).
- `mlp_text`: the same as `default` with a bag-of-words MLP text path (the
  word-graph signals, no graph convolution) in place of the GCN.
- `distribution`: the group's base model: binary labels, the distribution loss.
- `quick`: tiny budgets (smoke runs); not for reporting.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from cmjax import configs, data


@dataclasses.dataclass(frozen=True)
class FGLConfig:
  """Every setting of an FGL run; presets in `cmjax/configs/fgl.py`.

  Attributes:
    text_encoder: gcn (Chebyshev graph convolutions on the word graph of the
      `words_graph` view), mlp (an MLP on the text feature vectors), or auto
      (gcn where the dataset has raw captions, else mlp).
    words_graph: how the `words_graph` view (raw captions) is built: `tokens`,
      `vocab_size`, `embedding_dim`, `neighbors`, `window`
      (`cmjax.data.WordsGraphOptions`).
    gcn_filters: graph-convolution channels per node.
    gcn_order: Chebyshev terms K.
    text_hidden: MLP text path: hidden widths before the `embed` layer.
    image_hidden: image path: hidden widths before the `embed` layer (none: one
      dense layer, as in the group's model).
    embed: width of both paths' output (paper: 1024).
    activation: activation of both paths' output layer.
    dropout: dropout in both paths.
    tower_dtype: compute dtype of the image and text paths (the siamese text
      network's too): bfloat16 is fast on TPUs and recent GPUs (emulated, slow,
      on CPU). Parameters, the paths' outputs, the pair scores and losses stay
      float32, and so does the graph convolution (its Chebyshev recursion);
      the dense layer after it takes the dtype.
    labels: fine_grained (weights from the siamese network) or binary (all
      pairs weigh 1: the ablation).
    beta: strength of the fine-grained labels (weight+ = 1 + beta (1 - s),
      weight- = 1 + beta s).
    loss: pairwise (weighted cross entropy) or distribution (variances and a
      margin on the mean gap).
    distribution_lambda: weight of the mean-gap hinge of the distribution loss.
    distribution_margin: margin of the mean gap of the distribution loss.
    siamese_dim: output width of the siamese text network.
    siamese_margin: different-class texts are pushed to cosine <= this.
    siamese_steps: steps of the siamese stage.
    steps: steps of the matching stage.
    training: AdamW learning rate and weight decay of both stages, the batch
      (documents a step; all batch_size^2 pairs are used), validation cadence
      and patience.
    prepare: the transform of feature vectors (graph signals are never
      transformed) and the validation split.
  """

  text_encoder: Literal["auto", "gcn", "mlp"] = "auto"
  words_graph: data.WordsGraphOptions = data.WordsGraphOptions()
  gcn_filters: int = 4
  gcn_order: int = 3
  text_hidden: tuple[int, ...] = (512,)
  image_hidden: tuple[int, ...] = ()
  embed: int = 1024
  activation: Literal["relu", "sigmoid", "tanh"] = "tanh"
  dropout: float = 0.2
  tower_dtype: Literal["float32", "bfloat16"] = "float32"
  labels: Literal["fine_grained", "binary"] = "fine_grained"
  beta: float = 1.0
  loss: Literal["pairwise", "distribution"] = "pairwise"
  distribution_lambda: float = 1.0
  distribution_margin: float = 0.5
  siamese_dim: int = 256
  siamese_margin: float = 0.0
  siamese_steps: int = 1000
  steps: int = 3000
  training: configs.TrainingConfig = configs.TrainingConfig(batch_size=64)
  prepare: configs.PrepareConfig = configs.PrepareConfig()

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(self, "gcn_filters", "gcn_order", "text_hidden", "image_hidden",
                           "embed", "siamese_dim", "siamese_steps", "steps")
    configs.check_non_negative(self, "beta", "distribution_lambda", "distribution_margin")
    configs.check_fraction(self, "dropout")
    if not -1.0 <= self.siamese_margin < 1.0:
      raise configs.ConfigError(f"config field 'siamese_margin' must be in [-1, 1), got "
                                f"{self.siamese_margin}")


PRESETS = {
    "default": {},
    "binary": dict(labels="binary"),
    "mlp_text": dict(text_encoder="mlp"),
    "distribution": dict(labels="binary", loss="distribution"),
    "quick": {"words_graph.vocab_size": 300, "embed": 64, "text_hidden": (32,),
              "siamese_dim": 32, "siamese_steps": 50, "steps": 100, "training.eval_every": 50},
}


# What `python -m experiments.tune --method=fgl` samples, over the default preset:
# training, the embedding width, the fine-grained label sharpness (beta), the
# siamese network's margin and budget, and the graph filters.
SEARCH_SPACES = {
    "fgl": {
        "training.learning_rate": configs.Float(1e-4, 3e-3, log=True),
        "training.weight_decay": configs.Float(1e-6, 1e-2, log=True),
        "dropout": configs.Float(0.0, 0.5),
        "embed": configs.Choice((256, 512, 1024)),
        "beta": configs.Float(0.25, 4.0, log=True),
        "siamese_margin": configs.Float(0.0, 0.5),
        "siamese_steps": configs.Int(250, 2000, step=250),
        "gcn_filters": configs.Int(2, 8),
        "steps": configs.Int(1000, 5000, step=500),
    },
}


def get_config(preset: str = "default"):
  return configs.preset_config(FGLConfig, PRESETS, preset, __file__)
