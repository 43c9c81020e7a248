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
  """Settings of the closed-form baselines."""

  dims: int = 10
  reg: float = 1e-3
  kcca_reg: float = 1e-2
  landmarks: int = 512
  degree: int = 2
  l2: float = 1e-3
  input_transform: str = "none"


def _fit_linear(method: str, prepared: preprocess.Prepared, num_classes: int,
                config: LinearConfig, seed: int) -> linear.Projection:
  x, z, y = prepared.train.image, prepared.train.text, prepared.train.labels
  if method == "cca":
    return linear.fit_cca(x, z, config.dims, config.reg)
  if method == "cfa":
    return linear.fit_cfa(x, z, config.dims)
  if method.startswith("kcca_"):
    return linear.fit_kcca(x, z, config.dims, method[len("kcca_"):], config.landmarks,
                           config.kcca_reg, config.degree, seed)
  if method == "sm":
    return linear.fit_sm(x, z, y, num_classes, config.l2)
  return linear.fit_scm(x, z, y, num_classes, config.dims, config.reg, config.l2)


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
  if method in LINEAR_METHODS:
    prepared = preprocess.prepare(dataset, linear_config.input_transform, 0.0, seed)
    projection = _fit_linear(method, prepared, dataset.num_classes, linear_config, seed)
    test, config = prepared.test, dataclasses.asdict(linear_config)
  elif method == "multimodal_dbn":
    prepared = preprocess.prepare(dataset, "none", deep_config.validation_fraction, seed)
    projection = deep.fit_multimodal_dbn(prepared, deep_config, workdir=workdir, seed=seed,
                                         mesh=mesh, loop=loop)
    test, config = prepared.raw[2], dataclasses.asdict(deep_config)
  else:
    prepared = preprocess.prepare(dataset, deep_config.input_transform,
                                  deep_config.validation_fraction, seed)
    projection, _ = deep.fit_deep(method, prepared, deep_config, workdir=workdir, seed=seed,
                                  mesh=mesh, loop=loop)
    test, config = prepared.test, dataclasses.asdict(deep_config)
  scores = linear.similarity(projection.image(test.image), projection.text(test.text),
                             projection.similarity)
  metrics = evaluation.cross_modal_metrics(scores, scores.T, test.labels, test.labels)
  return results.write_results(workdir, method=method, dataset=dataset.name, seed=seed,
                               metrics=metrics, wall_s=time.time() - start,
                               extra={"config": config})
