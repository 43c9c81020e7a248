"""Every baseline of the UNCSM paper's comparison behind one call, `run_baseline`.

Closed-form methods (`cmjax.methods.linear`): cca, cfa, kcca_poly, kcca_rbf,
sm, scm. Deep methods (`cmjax.methods.deep`): dcca, dccae, bimodal_ae,
multimodal_dbn, corr_ae, corr_cross_ae, corr_full_ae. All read the same data,
are trained by the same loop where they train, and are evaluated by the same
code, writing the same `results.json` as UNCSM.
"""

from __future__ import annotations

import dataclasses
import time

from cmjax import data as data_lib
from cmjax import evaluation, preprocess, results, train
from cmjax.methods import deep, linear

__all__ = ["BASELINES", "LinearConfig", "run_baseline"]

LINEAR_METHODS = ("cca", "cfa", "kcca_poly", "kcca_rbf", "sm", "scm")
BASELINES = LINEAR_METHODS + deep.AUTOENCODER_METHODS + ("multimodal_dbn",)


@dataclasses.dataclass(frozen=True)
class LinearConfig:
  """Settings of the closed-form baselines.

  The covariance ridge of cca, kcca and scm is chosen from `reg_grid` by the
  validation avg MAP (cosine or normalised correlation) on a stratified
  `validation_fraction` of train, then the method is refit on all of train.
  """

  dims: int = 10
  reg_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  landmarks: int = 512
  degree: int = 2
  l2: float = 1e-3
  input_transform: str = "none"
  validation_fraction: float = 0.15


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


def _projection_map(projection: linear.Projection, split: data_lib.Split) -> dict:
  scores = linear.similarity(projection.image(split.image), projection.text(split.text),
                             projection.similarity)
  return evaluation.cross_modal_metrics(scores, scores.T, split.labels, split.labels)


def _select_reg(method: str, prepared: preprocess.Prepared, num_classes: int,
                config: LinearConfig, seed: int) -> tuple[float, dict[float, float]]:
  """The ridge of `reg_grid` with the best validation avg MAP (and all scores)."""
  if method in ("cfa", "sm") or len(config.reg_grid) == 1:
    return config.reg_grid[0], {}
  scores = {}
  for reg in config.reg_grid:
    m = _projection_map(_fit_linear(method, prepared.train, num_classes, config, reg, seed),
                        prepared.val)
    scores[reg] = (m["i2t"].map + m["t2i"].map) / 2
  return max(scores, key=scores.get), scores


def run_baseline(
    method: str,
    dataset: data_lib.Dataset,
    workdir: str,
    seed: int = 0,
    *,
    linear_config: LinearConfig = LinearConfig(),
    deep_config: deep.DeepConfig = deep.DeepConfig(),
    mesh=None,
    loop: train.LoopConfig = train.LoopConfig(),
) -> dict:
  """Fits `method` on `dataset.train`, evaluates on `dataset.test`, writes the workdir."""
  if method not in BASELINES:
    raise ValueError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
  start = time.time()
  config = linear_config if method in LINEAR_METHODS else deep_config
  results.claim_workdir(workdir, {"method": method, "dataset": dataset.name, "seed": seed,
                                  "config": dataclasses.asdict(config)})
  if method in LINEAR_METHODS:
    carved = preprocess.prepare(dataset, linear_config.input_transform,
                                linear_config.validation_fraction, seed)
    reg, val_scores = _select_reg(method, carved, dataset.num_classes, linear_config, seed)
    prepared = preprocess.prepare(dataset, linear_config.input_transform, 0.0, seed)
    projection = _fit_linear(method, prepared.train, dataset.num_classes, linear_config, reg,
                             seed)
    test = prepared.test
    selection = {"selected_reg": reg,
                 "val_avg_map_by_reg": {str(k): v for k, v in val_scores.items()}}
  elif method == "multimodal_dbn":
    prepared = preprocess.prepare(dataset, "none", deep_config.validation_fraction, seed)
    projection = deep.fit_multimodal_dbn(prepared, deep_config, workdir=workdir, seed=seed,
                                         mesh=mesh, loop=loop)
    test, selection = prepared.raw[2], {}
  else:
    prepared = preprocess.prepare(dataset, deep_config.input_transform,
                                  deep_config.validation_fraction, seed)
    projection, _ = deep.fit_deep(method, prepared, deep_config, workdir=workdir, seed=seed,
                                  mesh=mesh, loop=loop)
    test, selection = prepared.test, {}
  metrics = _projection_map(projection, test)
  return results.write_results(workdir, method=method, dataset=dataset.name, seed=seed,
                               metrics=metrics, wall_s=time.time() - start,
                               extra={"config": {**dataclasses.asdict(config), **selection}})
