r"""Presets of the deep baselines (dcca, dccae, corr_ae, corr_cross_ae,
corr_full_ae, bimodal_ae, multimodal_dbn).

  python -m experiments.baselines --method=corr_full_ae --config.steps=5000

- `default`: one 512-unit hidden layer, 3,000 AdamW steps with model
  selection and early stopping on a 15% validation split of train.
- `quick`: tiny networks and 100 steps (smoke runs); not for reporting.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from cmjax import configs


@dataclasses.dataclass(frozen=True)
class DeepConfig:
  """Settings of the deep baselines; presets in `cmjax/configs/deep.py`.

  Attributes:
    hidden: hidden layer widths of the encoders (bimodal_ae: its modality layer
      width is the first).
    code_dim: code width of the autoencoders.
    dcca_dim: output and CCA dimension of dcca/dccae.
    activation: hidden activation.
    training: AdamW learning rate and weight decay, the batch of the
      autoencoders and the DBNs, validation cadence and patience.
    dcca_batch_size: batch of dcca/dccae (the correlation needs large batches).
    dcca_reg: covariance ridge inside the DCCA objective.
    dccae_reconstruction: lambda: weight of DCCAE's reconstruction term.
    corr_alpha: alpha of Corr-AE: (1 - alpha) reconstruction + alpha code distance.
    steps: training steps of the deep methods.
    prepare: the feature transform (multimodal_dbn reads untransformed
      features) and the validation split.
    mdbn_image_hidden: multimodal_dbn: image DBN layer widths.
    mdbn_text_hidden: multimodal_dbn: text DBN layer widths.
    mdbn_joint_hidden: multimodal_dbn: joint RBM hidden units.
    mdbn_steps: multimodal_dbn: CD-1 steps per RBM.
    mdbn_learning_rate: multimodal_dbn: RBM learning rate.
    mdbn_doc_length: multimodal_dbn: non-negative text features are scaled to
      this many 'words' for the replicated softmax.
    mdbn_mean_field_steps: multimodal_dbn: mean-field updates that infer the
      missing modality at query time.
  """

  hidden: tuple[int, ...] = (512,)
  code_dim: int = 32
  dcca_dim: int = 10
  activation: Literal["relu", "sigmoid", "tanh"] = "sigmoid"
  training: configs.TrainingConfig = configs.TrainingConfig(batch_size=256)
  dcca_batch_size: int = 1024
  dcca_reg: float = 1e-3
  dccae_reconstruction: float = 0.1
  corr_alpha: float = 0.2
  steps: int = 3000
  prepare: configs.PrepareConfig = configs.PrepareConfig()
  mdbn_image_hidden: tuple[int, int] = (512, 256)
  mdbn_text_hidden: tuple[int, int] = (256, 256)
  mdbn_joint_hidden: int = 512
  mdbn_steps: int = 2000
  mdbn_learning_rate: float = 1e-3
  mdbn_doc_length: float = 100.0
  mdbn_mean_field_steps: int = 5

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(
        self, "hidden", "code_dim", "dcca_dim", "dcca_batch_size", "dcca_reg", "steps",
        "mdbn_image_hidden",
        "mdbn_text_hidden", "mdbn_joint_hidden", "mdbn_steps", "mdbn_learning_rate",
        "mdbn_doc_length", "mdbn_mean_field_steps")
    configs.check_non_negative(self, "dccae_reconstruction")
    configs.check_batch_size(self, "dcca_batch_size")
    configs.check_nonempty(self, "hidden")
    if not 0.0 <= self.corr_alpha <= 1.0:
      raise configs.ConfigError(f"config field 'corr_alpha' must be in [0, 1], "
                                f"got {self.corr_alpha}")


PRESETS = {
    "default": {},
    "quick": {"hidden": (32,), "code_dim": 8, "dcca_dim": 8, "steps": 100,
              "training.eval_every": 50, "dcca_batch_size": 256, "mdbn_steps": 100,
              "mdbn_image_hidden": (32, 16), "mdbn_text_hidden": (16, 16),
              "mdbn_joint_hidden": 32},
}


# What `python -m experiments.tune` samples, over the default preset: training,
# widths, the shared code, and each variant's own weights.
_DEEP_SPACE = {
    "training.learning_rate": configs.Float(1e-4, 3e-3, log=True),
    "training.weight_decay": configs.Float(1e-6, 1e-2, log=True),
    "hidden": configs.Choice(((256,), (512,), (1024,), (512, 256))),
    "activation": configs.Choice(("relu", "sigmoid", "tanh")),
    "code_dim": configs.Int(8, 128, log=True),
    "steps": configs.Int(1000, 5000, step=500),
}
_CORR = {**_DEEP_SPACE, "corr_alpha": configs.Float(0.01, 0.9, log=True)}
_DCCA = {**{k: v for k, v in _DEEP_SPACE.items() if k != "code_dim"},
         "dcca_dim": configs.Int(4, 32, log=True),
         "dcca_reg": configs.Float(1e-5, 1e-1, log=True)}
SEARCH_SPACES = {
    "dcca": _DCCA,
    "dccae": {**_DCCA, "code_dim": _DEEP_SPACE["code_dim"],
              "dccae_reconstruction": configs.Float(0.01, 1.0, log=True)},
    "corr_ae": _CORR,
    "corr_cross_ae": _CORR,
    "corr_full_ae": _CORR,
    "bimodal_ae": _DEEP_SPACE,
    "multimodal_dbn": {"mdbn_learning_rate": configs.Float(1e-4, 1e-2, log=True),
                       "mdbn_steps": configs.Int(500, 4000, step=500),
                       "mdbn_joint_hidden": configs.Choice((256, 512, 1024))},
}


def get_config(preset: str = "default"):
  return configs.preset_config(DeepConfig, PRESETS, preset, __file__)
