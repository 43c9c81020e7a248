"""A method in one file, registered with no edit elsewhere: random projections.

Run it: `python -m experiments.run --import_modules=toy_method --method=random_projection`
(with this folder on PYTHONPATH), or through the leaderboard the same way.
"""

import dataclasses

import numpy as np

from cmjax import configs, runner, similarity
from cmjax.methods import registry


@dataclasses.dataclass(frozen=True)
class RandomProjectionConfig:
  """Settings of the toy method.

  Attributes:
    dims: width of the random projections.
    prepare: feature transform fitted on train; no validation split.
    nan_scores: return NaN scores (exercises the runner's check).
  """

  dims: int = 16
  prepare: configs.PrepareConfig = configs.PrepareConfig("standardize", 0.0)
  nan_scores: bool = False

  def __post_init__(self):
    configs.check_positive(self, "dims")


PRESETS = {"default": {}, "quick": {"dims": 8}}


def get_config(preset="default"):
  values = configs.preset_values(PRESETS, preset, __file__)
  return configs.to_config_dict(RandomProjectionConfig(**values))


def fit(config, prepared, context):
  rng = np.random.default_rng(context.seed)
  a = rng.normal(size=(prepared.train.image.shape[1], config.dims))
  b = rng.normal(size=(prepared.train.text.shape[1], config.dims))
  nan = np.nan if config.nan_scores else 1.0
  return runner.Fitted(encode_image=lambda x: x @ a, encode_text=lambda z: z @ b,
                       score=lambda fi, ft: similarity.cosine(fi, ft) * nan)

registry.register(registry.MethodSpec(
    name="random_projection", description="Toy: random projections, cosine similarity.",
    config_class=RandomProjectionConfig, config_module=__name__, fit=fit))
