"""The baselines of the UNCSM paper's comparison, registered as methods.

Closed-form methods (`cmjax.methods.linear`): cca, cfa, kcca_poly, kcca_rbf,
sm, scm. Deep methods (`cmjax.methods.deep`): dcca, dccae, bimodal_ae,
multimodal_dbn, corr_ae, corr_cross_ae, corr_full_ae. All read the same data
through the same runner, train with the same loop where they train, and rank
by the similarity of their common space.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from cmjax import configs, evaluation, preprocess, runner
from cmjax import data as data_lib
from cmjax.methods import deep, linear, registry

__all__ = ["BASELINES", "LinearConfig"]

LINEAR_METHODS = ("cca", "cfa", "kcca_poly", "kcca_rbf", "sm", "scm")
BASELINES = LINEAR_METHODS + deep.AUTOENCODER_METHODS + ("multimodal_dbn",)


@dataclasses.dataclass(frozen=True)
class LinearConfig:
  """Settings of the closed-form baselines; presets in `cmjax/configs/linear.py`.

  The covariance ridge of cca, kcca and scm is chosen from `reg_grid` by the
  validation avg MAP on a stratified `validation_fraction` of train, then the
  method is refit on all of train.

  Attributes:
    dims: common-space dimension of cca, cfa, kcca, scm.
    reg_grid: covariance ridges (relative to the mean eigenvalue) tried by
      cca, kcca and scm; the best on validation is refit on all of train.
    landmarks: Nystroem landmarks of kcca (low-rank solution).
    degree: degree of kcca_poly's kernel (gamma x.y + 1)^degree.
    l2: L2 penalty of the logistic regressions of sm and scm.
    input_transform: feature transform (none: as published).
    validation_fraction: share of train carved out (stratified) to choose the
      ridge; 0 takes the first of reg_grid.
  """

  dims: int = 10
  reg_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  landmarks: int = 512
  degree: int = 2
  l2: float = 1e-3
  input_transform: preprocess.InputTransform = "none"
  validation_fraction: float = 0.15

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(self, "dims", "reg_grid", "landmarks", "degree")
    configs.check_non_negative(self, "l2")
    configs.check_fraction(self, "validation_fraction")
    if not self.reg_grid:
      raise configs.ConfigError("config field 'reg_grid' needs at least one value")


def _fit_linear(method: str, split: data_lib.Split, num_classes: int, config: LinearConfig,
                reg: float, seed: int) -> linear.Projection:
  x, z, y = split.image, split.text, split.labels
  if method == "cca":
    return linear.fit_cca(x, z, config.dims, reg)
  if method == "cfa":
    return linear.fit_cfa(x, z, config.dims)
  if method.startswith("kcca_"):
    return linear.fit_kcca(x, z, config.dims, method[len("kcca_"):], config.landmarks, reg,
                           config.degree, seed)
  if method == "sm":
    return linear.fit_sm(x, z, y, num_classes, config.l2)
  return linear.fit_scm(x, z, y, num_classes, config.dims, reg, config.l2)


def _projected_similarity(projection: linear.Projection, split: data_lib.Split) -> np.ndarray:
  """`[n, n]` similarity of a (prepared) split's items in the common space."""
  return linear.similarity(projection.image(split.image), projection.text(split.text),
                           projection.similarity)


def _select_reg(method: str, prepared: preprocess.Prepared, num_classes: int,
                config: LinearConfig, seed: int) -> tuple[float, dict[float, float]]:
  """The ridge of `reg_grid` with the best validation avg MAP (and all scores)."""
  if method in ("cfa", "sm") or len(config.reg_grid) == 1:
    return config.reg_grid[0], {}
  scores = {}
  for reg in config.reg_grid:
    projection = _fit_linear(method, prepared.train, num_classes, config, reg, seed)
    scores[reg] = evaluation.cross_modal_map(_projected_similarity(projection, prepared.val),
                                             prepared.val.labels, prepared.val.labels)["avg"]
  return max(scores, key=scores.get), scores


def _fitted(projection: linear.Projection, prepared: preprocess.Prepared,
            **kwargs) -> runner.Fitted:
  return runner.Fitted(
      similarity=lambda raw: _projected_similarity(projection, prepared.transform(raw)),
      **kwargs)


def fit_linear(method: str, config: LinearConfig, prepared: preprocess.Prepared,
               context: runner.FitContext) -> runner.Fitted:
  """Chooses the ridge on a validation split of train, then refits on all of train."""
  carved = preprocess.prepare(context.dataset, config.input_transform,
                              config.validation_fraction, context.seed)
  num_classes = context.dataset.num_classes
  reg, val_scores = _select_reg(method, carved, num_classes, config, context.seed)
  projection = _fit_linear(method, prepared.train, num_classes, config, reg, context.seed)
  return _fitted(projection, prepared, extras={
      "selected_reg": reg, "val_avg_map_by_reg": {str(k): v for k, v in val_scores.items()}})


def prepare_linear(config: LinearConfig, dataset: data_lib.Dataset,
                   seed: int) -> preprocess.Prepared:
  """All of train (the ridge's validation split is carved inside `fit_linear`)."""
  return preprocess.prepare(dataset, config.input_transform, 0.0, seed)


def fit_autoencoder(method: str, config: deep.DeepConfig, prepared: preprocess.Prepared,
                    context: runner.FitContext) -> runner.Fitted:
  projection, result = deep.fit_deep(method, prepared, config, context)
  return _fitted(projection, prepared, stages={method: runner.stage_facts(result)})


def fit_multimodal_dbn(config: deep.DeepConfig, prepared: preprocess.Prepared,
                       context: runner.FitContext) -> runner.Fitted:
  return _fitted(deep.fit_multimodal_dbn(prepared, config, context), prepared)


def prepare_untransformed(config: deep.DeepConfig, dataset: data_lib.Dataset,
                          seed: int) -> preprocess.Prepared:
  """The Multimodal DBN models raw features (it standardises or scales them itself)."""
  return preprocess.prepare(dataset, "none", config.validation_fraction, seed)


_DESCRIPTIONS = {
    "cca": "CCA (Hotelling 1936), ridge chosen on validation.",
    "cfa": "Cross-modal factor analysis (Li et al. 2003).",
    "kcca_poly": "Kernel CCA, polynomial kernel, Nystroem low-rank.",
    "kcca_rbf": "Kernel CCA, RBF kernel, Nystroem low-rank.",
    "sm": "Semantic matching (Rasiwasia et al. 2010).",
    "scm": "Semantic correlation matching (Rasiwasia et al. 2010).",
    "dcca": "Deep CCA (Andrew et al. 2013).",
    "dccae": "Deep canonically correlated autoencoders (Wang et al. 2015).",
    "corr_ae": "Correspondence autoencoder (Feng et al. 2014).",
    "corr_cross_ae": "Correspondence cross-modal autoencoder (Feng et al. 2014).",
    "corr_full_ae": "Correspondence full-modal autoencoder (Feng et al. 2014).",
    "bimodal_ae": "Bimodal autoencoder (Ngiam et al. 2011).",
    "multimodal_dbn": "Multimodal DBN (Srivastava & Salakhutdinov 2012).",
}
# Published MAP (I->T, T->I) on the Wikipedia release features; see ANCHORS.md.
_PUBLISHED = {"cca": (0.2549, 0.1846), "sm": (0.225, 0.223), "scm": (0.277, 0.226)}

for _method in LINEAR_METHODS:
  registry.register(registry.MethodSpec(
      name=_method, description=_DESCRIPTIONS[_method], config_class=LinearConfig,
      config_module="cmjax.configs.linear", fit=functools.partial(fit_linear, _method),
      prepare=prepare_linear,
      published={"wikipedia": _PUBLISHED[_method]} if _method in _PUBLISHED else {}))
for _method in deep.AUTOENCODER_METHODS:
  registry.register(registry.MethodSpec(
      name=_method, description=_DESCRIPTIONS[_method], config_class=deep.DeepConfig,
      config_module="cmjax.configs.deep", fit=functools.partial(fit_autoencoder, _method),
      family="Corr-AE" if _method.startswith("corr_") else None))
registry.register(registry.MethodSpec(
    name="multimodal_dbn", description=_DESCRIPTIONS["multimodal_dbn"],
    config_class=deep.DeepConfig, config_module="cmjax.configs.deep", fit=fit_multimodal_dbn,
    prepare=prepare_untransformed))
