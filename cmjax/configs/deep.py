r"""Presets of the deep baselines (dcca, dccae, corr_ae, corr_cross_ae,
corr_full_ae, bimodal_ae, multimodal_dbn).

  python -m experiments.baselines --method=corr_full_ae --config.steps=5000

- `default`: one 512-unit hidden layer, 3,000 AdamW steps with model
  selection and early stopping on a 15% validation split of train.
- `quick`: tiny networks and 100 steps (smoke runs); not for reporting.
"""

from cmjax import configs
from cmjax.methods.deep import DeepConfig

PRESETS = {
    "default": {},
    "quick": dict(hidden=(32,), code_dim=8, dcca_dim=8, steps=100, eval_every=50,
                  dcca_batch_size=256, mdbn_steps=100, mdbn_image_hidden=(32, 16),
                  mdbn_text_hidden=(16, 16), mdbn_joint_hidden=32),
}


def get_config(preset: str = "default"):
  return configs.to_config_dict(DeepConfig(**configs.preset_values(PRESETS, preset, __file__)))
