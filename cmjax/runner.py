"""The one runner of cmjax: prepare, claim the workdir, fit, evaluate, write.

Every registered method (`cmjax.methods.registry`) runs through `run`:

1. prepare, before anything is written: the seed and the test labels are
   checked (`check_seed`, `cmjax.data.check_evaluable`), then the method's
   `prepare` runs (default: a stratified validation split carved from train,
   then the config's `prepare.input_transform` fitted on train, or a transform that
   fits the data, `cmjax.preprocess.choose_transform`).
2. claim: the workdir is created and locked (a second concurrent run in it
   stops with one line; a folder other users could write to or own is
   refused, `cmjax.files.check_private`); its identity (method, config,
   dataset, data fingerprint, seed) is recorded in `config.json`, and a
   workdir made for another identity is refused, so a run never resumes
   checkpoints trained on other data or with other settings. A finished
   workdir (a `results.json`) is reported as it is: nothing is retrained or
   rewritten.
3. fit: the method's `fit(config, prepared, context) -> Fitted`, training
   through `cmjax.train.train_stage` (checkpoints and resume are per stage;
   the parameters stay on the devices).
4. evaluate: the fitted encoders encode the prepared test split once; the
   block scorer `Fitted.score` ranks every test text for blocks of image
   queries and the reverse, on device, each block's queries sharded over the
   `'data'` mesh (`cmjax.protocol.evaluate`: the matrix is computed whole only
   when small, `MAX_DENSE_PAIRS`); MAP, MAP@50, PR curves both ways and the
   ROC AUC of pair classification, by `cmjax.evaluation`. Hashing methods
   (encodings are +-1 codes) add the hashing protocol: test queries against
   the training items as database.
5. write (process 0 only, atomically, never through a symlink):
   `results.json` (one schema for every method, see `RESULT_KEYS`; suspect
   scores are named in its `warnings`), `pr_curves.png`, and `test_scores.npy`
   when the matrix was computed whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np

from cmjax import data as data_lib
from cmjax import evaluation, files, plotting, preprocess, protocol, train
from cmjax import workdir as workdir_lib
from cmjax.checks import ConfigError
from cmjax.files import RunError
# The contract and the protocol (`cmjax.protocol`), the workdir and provenance
# (`cmjax.workdir`) and the seeds (`cmjax.train`), re-exported: methods and
# notebooks know them as `runner.*`.
from cmjax.protocol import (MAX_DENSE_PAIRS, EncodeFn, Evaluation, Fitted, Model, ScoreFn,
                            Validation, evaluate, hashing_protocol, in_blocks, score_warnings,
                            validation_map)
from cmjax.train import MAX_SEED, check_seed
from cmjax.workdir import Workdir, data_fingerprint, read_results, to_builtin, write_json

__all__ = [
    "ConfigError",
    "EncodeFn",
    "Evaluation",
    "FitContext",
    "Fitted",
    "MAX_DENSE_PAIRS",
    "MAX_SEED",
    "Model",
    "NonFiniteScoresError",
    "RESULT_KEYS",
    "RunError",
    "ScoreFn",
    "Validation",
    "Workdir",
    "check_seed",
    "data_fingerprint",
    "default_prepare",
    "evaluate",
    "fit",
    "hashing_protocol",
    "in_blocks",
    "per_query_ap",
    "read_results",
    "run",
    "score_warnings",
    "stage_facts",
    "validation_map",
    "write_json",
]

# The keys of every results.json.
RESULT_KEYS = (
    "method", "preset", "dataset", "view", "seed", "fixed_shards", "map", "map@50", "roc_auc",
    "roc_auc_queries", "per_query_ap", "alternatives",
    "hashing", "pr_curve", "wall_s", "stages", "num_train", "num_val", "num_test", "config",
    "data", "extras", "environment", "warnings",
)

@dataclasses.dataclass(frozen=True)
class FitContext:
  """What a method's `fit` gets besides its config and the prepared data (a method
  never sees the dataset as loaded: `Prepared` holds all it reads).

  Attributes:
    workdir: the run's folder (stages checkpoint and log below it).
    seed: the run's seed.
    mesh: device mesh with a `'data'` axis.
    loop: loop settings of `cmjax.train`.
  """

  workdir: str
  seed: int
  mesh: jax.sharding.Mesh
  loop: train.LoopConfig

  def train(self, stage: train.Stage, params: Any, data: Any, seed: int,
            context: Any = None) -> train.StageResult:
    """`cmjax.train.train_stage` in this run's workdir, mesh and loop."""
    return train.train_stage(stage, params, data, workdir=self.workdir, seed=seed,
                             context=context, mesh=self.mesh, loop=self.loop)


def stage_facts(result: train.StageResult) -> dict:
  """The JSON-able facts of a trained stage."""
  return {"steps": result.steps, "best_val_avg_map": result.best_score,
          "wall_s": result.wall_s, "resumed_from": result.resumed_from}


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------


def _identity(spec: Any, config: Any, dataset: data_lib.Dataset, seed: int,
              loop: train.LoopConfig) -> dict:
  """What a workdir belongs to (`Workdir.claim`): method, data, config, seed, and the
  loop's `fixed_shards` where set (it changes the numbers)."""
  data_lib.check_evaluable(dataset.test, dataset.metadata.get("source", dataset.name))
  identity = {"method": spec.name, "dataset": dataset.name, "view": dataset.view.name,
              "seed": seed, "config": dataclasses.asdict(config),
              "data": {"fingerprint": data_fingerprint(dataset),
                       "num_train": len(dataset.train), "num_test": len(dataset.test)}}
  if loop.fixed_shards:
    identity["fixed_shards"] = loop.fixed_shards
  return identity


def fit(spec: Any, config: Any, dataset: data_lib.Dataset, workdir: str, seed: int = 0, *,
        mesh: jax.sharding.Mesh | None = None,
        loop: train.LoopConfig = train.LoopConfig()) -> tuple[Fitted, preprocess.Prepared]:
  """Fits one method in its workdir and returns the fitted model with the data as
  it saw it, for looking inside (encodings, codes, transport plans) in a notebook.

  The same workdir as `run` (same identity): the stages resume from their
  checkpoints, so on a finished run nothing is trained again.

  Returns:
    `(fitted, prepared)`: encode `prepared.test.image` with `fitted.encode_image`.
  """
  seed = check_seed(seed)
  dataset = data_lib.check_dataset(dataset)
  identity = _identity(spec, config, dataset, seed, loop)
  prepared = spec.prepare(config, dataset, seed)
  mesh = mesh or train.data_mesh()
  with Workdir(workdir) as wd, jax.set_mesh(mesh):
    wd.claim(identity, dataclasses.asdict(type(config)()))
    context = FitContext(workdir=wd.path, seed=seed, mesh=mesh, loop=loop)
    return spec.fit(config, prepared, context), prepared


def run(
    spec: Any,
    config: Any,
    dataset: data_lib.Dataset,
    workdir: str,
    seed: int = 0,
    *,
    preset: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    loop: train.LoopConfig = train.LoopConfig(),
    max_dense_pairs: int = MAX_DENSE_PAIRS,
) -> dict:
  """Runs one method on one dataset view; returns its `results.json` dict.

  Args:
    spec: the method's `registry.MethodSpec`.
    config: its typed config.
    dataset: the data view the method reads (`registry.load_data`).
    workdir: the run's folder; a finished run there is returned as it is.
    seed: the run's seed.
    preset: the name of the preset the config came from (recorded only).
    mesh: device mesh; default every device of every process.
    loop: loop settings.
    max_dense_pairs: test score matrices up to this many pairs are computed
      whole (written to `test_scores.npy`, exact ROC AUC); larger ones are
      streamed over query blocks (`evaluate`).

  Raises:
    RunError: a workdir of another run or in use, non-finite scores.
    cmjax.train.NonFiniteError: training diverged.
  """
  start = time.time()
  seed = check_seed(seed)
  dataset = data_lib.check_dataset(dataset)  # A hand-built one passes the loaders' checks.
  mesh = mesh or train.data_mesh()
  identity = _identity(spec, config, dataset, seed, loop)
  # Before the workdir is touched: data the method cannot take leaves nothing behind.
  prepared = spec.prepare(config, dataset, seed)
  with Workdir(workdir) as wd, jax.set_mesh(mesh):  # Host arrays go onto this mesh.
    wd.claim(identity, dataclasses.asdict(type(config)()))
    done = read_results(wd.path)
    if done is not None:
      logging.info("%s: finished run found in %s; nothing to do", spec.name, wd.path)
      return done
    context = FitContext(workdir=wd.path, seed=seed, mesh=mesh, loop=loop)
    fitted = spec.fit(config, prepared, context)
    test = prepared.test
    images, texts = protocol.encode(fitted, test.image, test.text)
    main = _evaluate(fitted.score, images, texts, test.labels, spec.name, max_dense_pairs, mesh)
    metrics, i2t = main.metrics, main.metrics["i2t"]
    alternative_metrics = {
        name: _evaluate(score, images, texts, test.labels, f"{spec.name}/{name}",
                        max_dense_pairs, mesh).metrics
        for name, score in fitted.alternatives.items()}
    alternatives = {name: evaluation.map_summary(m) for name, m in alternative_metrics.items()}
    hashing_results = None
    if spec.hashing:  # The encodings are +-1 codes; the training items are the database.
      database = protocol.encode(fitted, prepared.full_train.image, prepared.full_train.text)
      hashing_results = hashing_protocol(images, texts, *database, test.labels,
                                         dataset.train.labels)
    results = {
        "method": spec.name,
        "preset": preset,
        "dataset": dataset.name,
        "view": identity["view"],
        "seed": seed,
        "fixed_shards": loop.fixed_shards,
        "map": evaluation.map_summary(metrics),
        **{f"map@{k}": evaluation.map_summary(metrics, k) for k in i2t.map_at},
        "roc_auc": main.roc_auc,
        "roc_auc_queries": main.roc_auc_queries,
        "per_query_ap": {**per_query_ap(metrics), "alternatives": {
            name: per_query_ap(m) for name, m in alternative_metrics.items()}},
        "alternatives": alternatives,
        "hashing": hashing_results,
        "pr_curve": {"recall": i2t.recall_levels, "i2t": i2t.precision_curve,
                     "t2i": metrics["t2i"].precision_curve},
        "wall_s": time.time() - start,
        "stages": dict(fitted.stages),
        "num_train": len(prepared.train),
        "num_val": len(prepared.val),
        "num_test": len(prepared.test),
        "config": identity["config"],
        "data": {**identity["data"], "metadata": _json_safe(dataset.metadata),
                 "input_transforms": dict(prepared.transforms),
                 "input_transform_notes": list(prepared.notes)},
        "extras": dict(fitted.extras),
        "environment": workdir_lib.environment(mesh),
        "warnings": score_warnings(i2t.score_range),
    }
    for warning in results["warnings"]:
      logging.warning("%s on %s (seed %d): %s", spec.name, dataset.name, seed, warning)
    if jax.process_index() == 0:
      if main.scores is not None:
        files.write_atomic(os.path.join(wd.path, "test_scores.npy"),
                           lambda f: np.save(f, main.scores), binary=True)
      plotting.plot_pr_curves(
          {d: {spec.name: (m.recall_levels, m.precision_curve)} for d, m in metrics.items()},
          os.path.join(wd.path, "pr_curves.png"),
          title=f"{spec.name} on {dataset.name} (seed {seed}): MAP i2t {i2t.map:.3f}, "
                f"t2i {metrics['t2i'].map:.3f}")
      write_json(os.path.join(wd.path, "results.json"), results)  # Last: marks the run done.
  logging.info("%s on %s (seed %d): MAP i2t %.4f t2i %.4f avg %.4f in %.0fs", spec.name,
               dataset.name, seed, *results["map"].values(), results["wall_s"])
  return json.loads(json.dumps(results, default=to_builtin))


def per_query_ap(metrics: Mapping[str, evaluation.RetrievalMetrics]) -> dict[str, list]:
  """`{"i2t": [AP of each test query], "t2i": [...]}`, None where a query has no
  relevant item: what the paired significance tests of `cmjax.significance` read
  (`results.json` holds them under `per_query_ap`, with those of each
  alternative scorer under its `alternatives`)."""
  return {direction: [None if np.isnan(ap) else float(ap) for ap in m.average_precisions]
          for direction, m in metrics.items()}


class NonFiniteScoresError(RunError, FloatingPointError):
  """The fitted model's test scores are NaN or infinite (it diverged)."""


def _evaluate(score, images, texts, labels, what, max_dense_pairs, mesh) -> Evaluation:
  """`protocol.evaluate`, its non-finite scores a `NonFiniteScoresError`."""
  try:
    return evaluate(score, images, texts, labels, what, max_dense_pairs, mesh)
  except protocol.NonFiniteScores as e:
    raise NonFiniteScoresError(str(e)) from None


def _json_safe(metadata: Mapping[str, Any]) -> dict:
  """The entries of a dataset's metadata that are plain JSON (no arrays, no objects)."""
  def scalar(value):
    if isinstance(value, np.generic):
      return value.item()
    raise TypeError
  out = {}
  for k, v in metadata.items():
    try:
      json.dumps(v, default=scalar)
      out[k] = json.loads(json.dumps(v, default=scalar))
    except TypeError:
      continue
  return out


def default_prepare(config: Any, dataset: data_lib.Dataset, seed: int) -> preprocess.Prepared:
  """A stratified validation split of `config.prepare.validation_fraction`, then
  `config.prepare.input_transform` fitted on train."""
  return preprocess.prepare(dataset, config.prepare.input_transform,
                            config.prepare.validation_fraction, seed)
