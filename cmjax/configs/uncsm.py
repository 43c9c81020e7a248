r"""UNCSM presets (Qi, Huang, Peng 2017).

  python -m experiments.uncsm --config=cmjax/configs/uncsm.py:paper
  # the default preset, one field changed:
  python -m experiments.uncsm --config.training.learning_rate=0.01

- `default`: the recipe chosen on a validation split carved from train
  (reports/uncsm_wikipedia.md): sigmoid units, AdamW 1e-3, dropout 0.2, the
  Hellinger map, model selection and early stopping on validation.
- `paper`: the settings the paper states (SGD, lr 0.001, weight decay 0.004,
  10K iterations a stage, margins 1). The paper does not state the activation:
  with ReLU pathways the contrastive stage collapses to a constant
  representation on the Wikipedia features, so the preset uses sigmoid units.
- `quick`: the default recipe with tiny networks and budgets (smoke runs, the
  leaderboard's `--preset=quick`); not for reporting.
- Ablations (reports/uncsm_wikipedia.md): `nopretrain` (Table 6), `dbn` (the
  DBN preprocessing stage, paper sec. 4.4), `margin<m>` (all margins m, Fig. 5),
  and the same on the paper recipe: `paper_relu`, `paper_nopretrain`, `paper_dbn`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from cmjax import configs

Activation = Literal["relu", "sigmoid", "tanh"]


@dataclasses.dataclass(frozen=True)
class UNCSMConfig:
  """Every setting of an UNCSM run; presets in `cmjax/configs/uncsm.py`.

  Attributes:
    hidden: pathway layer widths (paper: 1024, 512, 256).
    activation: pathway hidden activation (not stated in the paper).
    output_activation: activation of the pathway output (the shared representation).
    dropout: dropout on the pathway hidden layers.
    branch_size: width of the sigmoid triplet branches (paper: 256).
    tower_dtype: compute dtype of the two pathways: bfloat16 is fast on TPUs
      and recent GPUs (emulated, slow, on CPU); parameters, the pathways'
      outputs, the triplet branches, the losses and the metric network stay
      float32.
    metric_hidden: metric network layer widths (paper: 3 x 512).
    similarity: ranking similarity: the metric network's p_hat (paper) or the
      cosine of the shared representations (Table 5 ablation).
    pretrain: run stage 1 (contrastive pretraining); False is the Table 6 ablation.
    dbn: run the optional DBN preprocessing stage (paper sec. 4.4): Gaussian RBM
      / replicated softmax + binary RBM per modality (CD-1), then a softmax
      net; its top hidden layer feeds the pathways.
    contrastive_margin: lambda of eq. 1.
    image_triplet_margin: alpha of eq. 2.
    text_triplet_margin: beta of eq. 3.
    negatives: online triplet sampling: a random irrelevant item, or the closest
      of `negative_candidates` random ones under the current network.
    negative_candidates: candidates per anchor for negatives=hardest.
    optimizer: sgd (momentum, weight decay as an L2 gradient term, as Caffe) or
      adam (AdamW, decoupled weight decay).
    momentum: SGD momentum (0: plain SGD).
    training: learning rate and weight decay of the three trained stages, the
      batch (pairs in stage 1, triplets per modality in stage 2), validation
      cadence and patience.
    pretrain_steps: steps of stage 1.
    finetune_steps: steps of stage 2.
    metric_pairs: pairs sampled to train the metric network (paper: about 300K, 1:1).
    metric_batch_size: metric network batch.
    dbn_image_hidden: DBN layer widths of the image modality (paper: 2048, 1024).
    dbn_text_hidden: DBN layer widths of the text modality (paper: 1024, 1024).
    dbn_steps: CD-1 steps per RBM layer.
    dbn_learning_rate: RBM learning rate.
    dbn_doc_length: replicated softmax: text features are scaled to this many 'words'.
    softmax_steps: steps of the softmax net fine-tuned on top of each DBN.
    prepare: the input transform and the validation split.
  """

  hidden: tuple[int, ...] = (1024, 512, 256)
  activation: Activation = "relu"
  output_activation: Literal["none", "relu", "sigmoid", "tanh"] = "none"
  dropout: float = 0.0
  branch_size: int = 256
  tower_dtype: Literal["float32", "bfloat16"] = "float32"
  metric_hidden: tuple[int, ...] = (512, 512, 512)
  similarity: Literal["metric", "cosine"] = "metric"
  pretrain: bool = True
  dbn: bool = False
  contrastive_margin: float = 1.0
  image_triplet_margin: float = 1.0
  text_triplet_margin: float = 1.0
  negatives: Literal["random", "hardest"] = "random"
  negative_candidates: int = 8
  optimizer: Literal["sgd", "adam"] = "sgd"
  momentum: float = 0.9
  training: configs.TrainingConfig = configs.TrainingConfig(
      learning_rate=0.001, weight_decay=0.004, batch_size=128, eval_every=500, patience=0)
  pretrain_steps: int = 10000
  finetune_steps: int = 10000
  metric_pairs: int = 300000
  metric_batch_size: int = 256
  dbn_image_hidden: tuple[int, int] = (2048, 1024)
  dbn_text_hidden: tuple[int, int] = (1024, 1024)
  dbn_steps: int = 2000
  dbn_learning_rate: float = 0.001
  dbn_doc_length: float = 100.0
  softmax_steps: int = 2000
  prepare: configs.PrepareConfig = configs.PrepareConfig(input_transform="standardize",
                                                         validation_fraction=0.0)

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(
        self, "hidden", "branch_size", "metric_hidden", "contrastive_margin",
        "negative_candidates", "pretrain_steps", "finetune_steps", "metric_pairs",
        "metric_batch_size", "dbn_image_hidden", "dbn_text_hidden", "dbn_steps",
        "dbn_learning_rate", "dbn_doc_length", "softmax_steps")
    configs.check_non_negative(self, "image_triplet_margin", "text_triplet_margin", "momentum")
    configs.check_fraction(self, "dropout")
    configs.check_batch_size(self, "metric_batch_size")
    configs.check_nonempty(self, "hidden", "metric_hidden")

  @property
  def metric_steps(self) -> int:
    return max(1, self.metric_pairs // self.metric_batch_size)


_DEFAULT = {
    "activation": "sigmoid", "optimizer": "adam", "dropout": 0.2, "pretrain_steps": 3000,
    "finetune_steps": 3000, "metric_pairs": 300000,
    "prepare.input_transform": "sqrt_standardize", "prepare.validation_fraction": 0.15,
    "training.learning_rate": 1e-3, "training.weight_decay": 1e-4,
    "training.eval_every": 250, "training.patience": 4}

_PAPER = dict(activation="sigmoid")

PRESETS = {
    "default": _DEFAULT,
    "paper": _PAPER,
    "quick": dict(_DEFAULT, hidden=(64, 32, 16), branch_size=16, metric_hidden=(32, 32, 32),
                  pretrain_steps=100, finetune_steps=100, metric_pairs=12800,
                  **{"training.eval_every": 50}),
    "nopretrain": dict(_DEFAULT, pretrain=False),
    "dbn": dict(_DEFAULT, dbn=True),
    **{f"margin{m}": dict(_DEFAULT, contrastive_margin=m, image_triplet_margin=m,
                          text_triplet_margin=m) for m in (0.5, 1.5, 2.0, 2.5)},
    "paper_relu": dict(_PAPER, activation="relu"),
    "paper_nopretrain": dict(_PAPER, pretrain=False),
    "paper_dbn": dict(_PAPER, dbn=True),
}


# What `python -m experiments.tune --method=uncsm` samples, over the default preset:
# the optimiser, the regularisation, the margins of eqs. 1-3, the widths and
# the stage budgets (early stopping on validation bounds them too).
SEARCH_SPACES = {
    "uncsm": {
        "training.learning_rate": configs.Float(1e-4, 3e-3, log=True),
        "training.weight_decay": configs.Float(1e-6, 1e-2, log=True),
        "dropout": configs.Float(0.0, 0.5),
        "hidden": configs.Choice(((512, 256, 128), (1024, 512, 256), (2048, 1024, 512))),
        "contrastive_margin": configs.Float(0.5, 2.5),
        "image_triplet_margin": configs.Float(0.25, 2.5),
        "text_triplet_margin": configs.Float(0.25, 2.5),
        "pretrain_steps": configs.Int(500, 4000, step=500),
        "finetune_steps": configs.Int(500, 4000, step=500),
    },
}


def get_config(preset: str = "default"):
  return configs.preset_config(UNCSMConfig, PRESETS, preset, __file__)
