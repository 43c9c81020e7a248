r"""EMD-CNN presets (Zuo et al. 2020) and of its control rows.

  python -m experiments.emd_cnn --dataset=web_news
  python -m experiments.emd_cnn --method=emd_cnn_cosine --config=cmjax/configs/emd_cnn.py:quick

- `default`: 16 image bins, 8 text bins, a learned cost matrix, triplet loss
  with margin 0.1, epsilon 0.1 (reports/emd_cnn.md holds the variants tried
  on validation).
- `quick`: tiny networks and 100 steps (smoke runs); not for reporting.

The `distance` field is fixed by the method name (emd_cnn: emd,
emd_cnn_cosine: cosine, emd_cnn_euclidean: euclidean).
"""

from cmjax import configs
from cmjax.methods.emd_cnn import EMDCNNConfig

PRESETS = {
    "default": {},
    "quick": dict(hidden=(32,), image_channels=(8, 16), text_filters=16, steps=100,
                  eval_every=50),
}


def get_config(preset: str = "default"):
  return configs.to_config_dict(EMDCNNConfig(**configs.preset_values(PRESETS, preset, __file__)))
