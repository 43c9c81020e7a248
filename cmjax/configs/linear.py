r"""Presets of the closed-form baselines (cca, cfa, kcca_poly, kcca_rbf, sm, scm).

  python -m experiments.baselines --method=scm --config.dims=20

- `default`: 10 dimensions, the ridge chosen on a 15% validation split of train.
- `quick`: the same (closed-form methods are fast already); it exists so that
  `--preset=quick` names one preset for every method.
"""

from __future__ import annotations

import dataclasses

from cmjax import configs


@dataclasses.dataclass(frozen=True)
class LinearConfig:
  """Settings of the closed-form baselines; presets in `cmjax/configs/linear.py`.

  The covariance ridge of cca, kcca and scm is chosen from `reg_grid` by the
  validation avg MAP on a stratified `prepare.validation_fraction` of train,
  then the method is refit on all of train.

  Attributes:
    dims: common-space dimension of cca, cfa, kcca, scm.
    reg_grid: covariance ridges (relative to the mean eigenvalue) tried by
      cca, kcca and scm; the best on validation is refit on all of train.
    landmarks: Nystroem landmarks of kcca (low-rank solution).
    degree: degree of kcca_poly's kernel (gamma x.y + 1)^degree.
    l2: L2 penalty of the logistic regressions of sm and scm.
    prepare: the feature transform (none: as published) and the validation
      split that chooses the ridge (0 takes the first of reg_grid).
  """

  dims: int = 10
  reg_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  landmarks: int = 512
  degree: int = 2
  l2: float = 1e-3
  prepare: configs.PrepareConfig = configs.PrepareConfig(input_transform="none")

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(self, "dims", "reg_grid", "landmarks", "degree")
    configs.check_non_negative(self, "l2")
    if not self.reg_grid:
      raise configs.ConfigError("config field 'reg_grid' needs at least one value")


PRESETS = {"default": {}, "quick": {}}


# What `python -m experiments.tune` samples, over the default preset. The ridge
# of cca, kcca and scm is chosen on validation inside every fit (`reg_grid`), so
# the spaces hold the other fields each method reads.
_DIMS = configs.Int(2, 64, log=True)
SEARCH_SPACES = {
    "cca": {"dims": _DIMS},
    "cfa": {"dims": _DIMS},
    "kcca_poly": {"dims": _DIMS, "landmarks": configs.Int(128, 2048, log=True),
                  "degree": configs.Int(2, 4)},
    "kcca_rbf": {"dims": _DIMS, "landmarks": configs.Int(128, 2048, log=True)},
    "sm": {"l2": configs.Float(1e-6, 1e-1, log=True)},
    "scm": {"dims": _DIMS, "l2": configs.Float(1e-6, 1e-1, log=True)},
}


def get_config(preset: str = "default"):
  return configs.preset_config(LinearConfig, PRESETS, preset, __file__)
