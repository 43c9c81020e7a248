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

from cmjax import configs
from cmjax.methods.dbrc import DBRCConfig

PRESETS = {
    "default": {},
    "plain": dict(hashing_layer="plain"),
    "nonlinear": dict(hashing_layer="nonlinear"),
    "balanced": dict(balance_modalities=True),
    "supervised": dict(supervised=True),
    "quick": dict(bits=16, hidden=64, decoder_hidden=64, steps=100, eval_every=50),
}


def get_config(preset: str = "default"):
  return configs.to_config_dict(DBRCConfig(**configs.preset_values(PRESETS, preset, __file__)))
