r"""DBRC presets (Hu, Nie, Li 2019).

  python -m experiments.dbrc --dataset=wikipedia --config.bits=32
  python -m experiments.dbrc --dataset=wikipedia --config=cmjax/configs/dbrc.py:nonlinear

- `default`: 64 bits, linear adaptive tanh, unsupervised, RMSProp 1e-3, batch 128.
- `plain`, `nonlinear`: the hashing-layer ablation (plain tanh then sign; the
  nonlinear adaptive tanh).
- `balanced`: reconstruction error averaged over each modality's dimensions,
  so the 10-d Wikipedia text weighs as much as the 128-d image (better on
  validation, seed 0: 0.191 vs 0.169 avg MAP; reports/dbrc_ablation.md).
- `supervised`: a label classifier on the code added (a variant, not the paper).
- `quick`: tiny budgets (smoke runs); not for reporting.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from cmjax import configs


@dataclasses.dataclass(frozen=True)
class DBRCConfig:
  """Every setting of a DBRC run; presets in `cmjax/configs/dbrc.py`.

  Attributes:
    bits: code length K.
    hashing_layer: plain tanh, linear or nonlinear adaptive tanh.
    alpha_penalty: weight of mean(1 / alpha^2), which drives the scales up.
    hidden: width of each modality's dense layer (batch norm, ReLU, dropout).
    dropout: dropout after each modality's layer.
    decoder_hidden: hidden width of the two decoders.
    modality_dropout: probability that a training example has one modality
      zeroed (image or text, equally likely).
    balance_modalities: reconstruction error as the mean over each modality's
      dimensions (each modality weighs the same) instead of the sum (a
      modality weighs by its dimension).
    supervised: add a label classifier on the code (a variant; the paper's
      method is unsupervised).
    label_weight: weight of the classifier's cross entropy (supervised only).
    optimizer: rmsprop (as a public implementation) or adam.
    training: learning rate, weight decay (an L2 term for rmsprop), the batch
      (items a step), validation cadence and patience.
    steps: training steps.
    prepare: the transform of both modalities' features and the validation
      split (the parameters are selected by the validation MAP of the sign
      codes).
  """

  bits: int = 64
  hashing_layer: Literal["plain", "linear", "nonlinear"] = "linear"
  alpha_penalty: float = 1e-3
  hidden: int = 512
  dropout: float = 0.2
  decoder_hidden: int = 512
  modality_dropout: float = 0.5
  balance_modalities: bool = False
  supervised: bool = False
  label_weight: float = 1.0
  optimizer: Literal["rmsprop", "adam"] = "rmsprop"
  training: configs.TrainingConfig = configs.TrainingConfig(weight_decay=0.0)
  steps: int = 3000
  prepare: configs.PrepareConfig = configs.PrepareConfig()

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(self, "bits", "hidden", "decoder_hidden", "steps")
    configs.check_non_negative(self, "alpha_penalty", "label_weight")
    configs.check_fraction(self, "dropout", "modality_dropout")


PRESETS = {
    "default": {},
    "plain": dict(hashing_layer="plain"),
    "nonlinear": dict(hashing_layer="nonlinear"),
    "balanced": dict(balance_modalities=True),
    "supervised": dict(supervised=True),
    "quick": {"bits": 16, "hidden": 64, "decoder_hidden": 64, "steps": 100,
              "training.eval_every": 50},
}


# What `python -m experiments.tune --method=dbrc` samples, over the default preset
# (the code length is the table's column, not tuned): training, widths, the
# adaptive tanh's penalty and the modality dropout of the reconstruction.
SEARCH_SPACES = {
    "dbrc": {
        "training.learning_rate": configs.Float(1e-4, 3e-3, log=True),
        "training.weight_decay": configs.Float(1e-7, 1e-3, log=True),
        "dropout": configs.Float(0.0, 0.5),
        "hidden": configs.Choice((256, 512, 1024)),
        "decoder_hidden": configs.Choice((256, 512, 1024)),
        "alpha_penalty": configs.Float(1e-5, 1e-1, log=True),
        "modality_dropout": configs.Float(0.0, 0.7),
        "steps": configs.Int(1000, 5000, step=500),
    },
}


def get_config(preset: str = "default"):
  return configs.preset_config(DBRCConfig, PRESETS, preset, __file__)
