r"""UNCSM presets (Qi, Huang, Peng 2017).

  python -m experiments.uncsm --config=cmjax/configs/uncsm.py:paper
  python -m experiments.uncsm --config.learning_rate=0.01   # the default preset, one field changed

- `default`: the recipe chosen on a validation split carved from train
  (reports/uncsm_wikipedia.md): sigmoid units, AdamW 1e-3, dropout 0.2, the
  Hellinger map, model selection and early stopping on validation.
- `paper`: the settings the paper states (SGD, lr 0.001, weight decay 0.004,
  10K iterations a stage, margins 1). The paper does not state the activation:
  with ReLU pathways the contrastive stage collapses to a constant
  representation on the Wikipedia features, so the preset uses sigmoid units.
- `quick`: the default recipe with tiny networks and budgets (smoke runs, the
  leaderboard's `--preset=quick`); not for reporting.
"""

from cmjax import configs
from cmjax.methods.uncsm import UNCSMConfig

_DEFAULT = dict(
    input_transform="sqrt_standardize", activation="sigmoid", optimizer="adam",
    learning_rate=1e-3, weight_decay=1e-4, dropout=0.2, pretrain_steps=3000,
    finetune_steps=3000, metric_pairs=300000, validation_fraction=0.15, eval_every=250,
    patience=4)

PRESETS = {
    "default": _DEFAULT,
    "paper": dict(activation="sigmoid"),
    "quick": dict(_DEFAULT, hidden=(64, 32, 16), branch_size=16, metric_hidden=(32, 32, 32),
                  pretrain_steps=100, finetune_steps=100, metric_pairs=12800, eval_every=50),
}


def get_config(preset: str = "default"):
  return configs.to_config_dict(UNCSMConfig(**PRESETS[preset]))
