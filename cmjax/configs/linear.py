r"""Presets of the closed-form baselines (cca, cfa, kcca_poly, kcca_rbf, sm, scm).

  python -m experiments.baselines --method=scm --config.dims=20

- `default`: 10 dimensions, the ridge chosen on a 15% validation split of train.
- `quick`: the same (closed-form methods are fast already); it exists so that
  `--preset=quick` names one preset for every method.
"""

from cmjax import configs
from cmjax.methods.baselines import LinearConfig

PRESETS = {"default": {}, "quick": {}}


def get_config(preset: str = "default"):
  return configs.to_config_dict(LinearConfig(**configs.preset_values(PRESETS, preset, __file__)))
