"""The one runner of cmjax: prepare, claim the workdir, fit, evaluate, write.

Every registered method (`cmjax.methods.registry`) runs through `run`:

1. prepare, before anything is written: the seed and the test labels are
   checked (`check_seed`, `cmjax.data.check_evaluable`), then the method's
   `prepare` runs (default: a stratified validation split carved from train,
   then the config's `input_transform` fitted on train, or a transform that
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
   through `cmjax.train.train_stage` (checkpoints and resume are per stage).
4. evaluate: the fitted encoders encode the prepared test split once; the
   block scorer `Fitted.score` ranks every test text for blocks of image
   queries and the reverse, on device (`evaluate`: the matrix is computed whole
   only when small, `MAX_DENSE_PAIRS`); MAP, MAP@50, PR curves both ways and
   the ROC AUC of pair classification, by `cmjax.evaluation`. Hashing methods
   (encodings are +-1 codes) add the hashing protocol: test queries against
   the training items as database.
5. write (process 0 only, atomically, never through a symlink):
   `results.json` (one schema for every method, see `RESULT_KEYS`; suspect
   scores are named in its `warnings`), `pr_curves.png`, and `test_scores.npy`
   when the matrix was computed whole.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import os
import subprocess
import time
from typing import Any, Callable, Mapping

from absl import logging
import jax
import numpy as np

from cmjax import data as data_lib
from cmjax import evaluation, files, hashing, plotting, preprocess, train
from cmjax.configs import ConfigError
from cmjax.files import RunError

__all__ = [
    "FitContext",
    "Fitted",
    "RESULT_KEYS",
    "MAX_SEED",
    "RunError",
    "Workdir",
    "data_fingerprint",
    "evaluate",
    "fit",
    "in_blocks",
    "read_results",
    "check_seed",
    "run",
    "score_warnings",
    "stage_facts",
    "write_json",
]

# The keys of every results.json.
RESULT_KEYS = (
    "method", "preset", "dataset", "view", "seed", "map", "map@50", "roc_auc", "roc_auc_queries",
    "alternatives",
    "hashing", "pr_curve", "wall_s", "stages", "num_train", "num_val", "num_test", "config",
    "data", "extras", "environment", "warnings",
)

# A block scorer: `(images [a, ...], texts [b, ...]) -> [a, b]` scores of every
# image/text pair of two blocks of encodings, on device; higher = more similar.
ScoreFn = Callable[[Any, Any], jax.Array]
# An encoder: prepared inputs of one modality `[n, ...]` -> encodings `[n, ...]`
# (embeddings, histograms, +-1 codes).
EncodeFn = Callable[[np.ndarray], Any]


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


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A fitted method: an encoder per modality and a block scorer.

  The runner encodes each prepared split once (`encode_image`, `encode_text`)
  and streams the evaluation over blocks of queries through `score`, so no
  `[n, n]` matrix exists unless it is small (`max_dense_pairs` of `run`).

  Attributes:
    encode_image: prepared images `[n, ...]` -> encodings `[n, ...]`.
    encode_text: prepared texts `[n, ...]` -> encodings `[n, ...]`.
    score: the block scorer (`ScoreFn`) of those encodings.
    stages: training facts per stage (`stage_facts`).
    alternatives: other scorers of the same encodings reported beside the main
      one (ablations of the same fitted model, e.g. UNCSM's cosine row).
    extras: further JSON-able facts (selected hyper-parameters...).
    parts: learned pieces worth looking at, not recorded (EMD-CNN's ground
      cost, FGL's pair weights...); see `fit`.
  """

  encode_image: EncodeFn
  encode_text: EncodeFn
  score: ScoreFn
  stages: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  alternatives: Mapping[str, ScoreFn] = dataclasses.field(default_factory=dict)
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  parts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def in_blocks(fn: Callable[[jax.Array], jax.Array], inputs: np.ndarray,
              block_size: int = 4096) -> jax.Array:
  """`fn` over consecutive row blocks of `inputs` `[n, ...]`, concatenated on device.

  For encoders: memory is that of one block, and every block (the last
  padded with copies of its last row, then cut) has one shape, so `fn`
  compiles once.
  """
  inputs = np.asarray(inputs)
  n = len(inputs)
  if n <= block_size:
    return fn(jax.device_put(inputs))
  out = []
  for start in range(0, n, block_size):
    block = inputs[start:start + block_size]
    pad = block_size - len(block)
    if pad:
      block = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)])
    out.append(fn(jax.device_put(block))[: block_size - pad])
  return jax.numpy.concatenate(out)


# Stages seed their keys with seed * 1000 + a small offset, and JAX keys hold 32
# bits: a larger seed would wrap onto another seed's keys.
MAX_SEED = (2**32 - 1000) // 1000


def check_seed(seed: Any) -> int:
  """`seed` if it is an int in [0, MAX_SEED], else a `ConfigError`."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ConfigError(f"seed must be an integer, got {seed!r}")
  if not 0 <= seed <= MAX_SEED:
    raise ConfigError(f"seed must be in [0, {MAX_SEED}] (stage keys are seed * 1000 + k in "
                      f"JAX's 32 bits), got {seed}")
  return int(seed)


def hashing_protocol(image_queries: np.ndarray, text_queries: np.ndarray,
                     image_db: np.ndarray, text_db: np.ndarray, query_labels: np.ndarray,
                     db_labels: np.ndarray) -> dict:
  """The cross-modal hashing protocol: the test items query the training items.

  Image queries rank the training texts by Hamming distance and text queries
  the training images (MAP over the full ranking, MAP@50, tie-aware MAP,
  precision within radius 2, PR curves; `cmjax.hashing.hashing_metrics`).
  All codes are `[n, K]` +-1.
  """
  return {"bits": int(image_queries.shape[1]),
          "i2t": hashing.hashing_metrics(image_queries, text_db, query_labels, db_labels),
          "t2i": hashing.hashing_metrics(text_queries, image_db, query_labels, db_labels)}


def stage_facts(result: train.StageResult) -> dict:
  """The JSON-able facts of a trained stage."""
  return {"steps": result.steps, "best_val_avg_map": result.best_score,
          "wall_s": result.wall_s, "resumed_from": result.resumed_from}


# ---------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------


def _to_builtin(value):
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: str, payload: Mapping[str, Any]) -> None:
  """Writes JSON atomically, never through a symlink (`cmjax.files.write_atomic`)."""
  text = json.dumps(payload, indent=2, default=_to_builtin)
  files.write_atomic(path, lambda f: f.write(text))


def _read_json_object(path: str, keys: tuple[str, ...]) -> dict:
  """A JSON object holding `keys`, or `RunError` naming the file and the problem."""
  try:
    with open(path) as f:
      found = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise RunError(f"{path}: not valid JSON ({e}); the workdir is damaged: remove the file "
                   "or use another --workdir") from None
  except OSError as e:
    raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
  missing = [k for k in keys if not isinstance(found, dict) or k not in found]
  if missing:
    raise RunError(f"{path}: not a cmjax {os.path.basename(path)} (no "
                   f"{', '.join(missing)}); remove the file or use another --workdir")
  return found


def read_results(workdir: str) -> dict | None:
  """The `results.json` of a finished run, or None.

  Raises:
    RunError: the file exists but is not a run's results (damaged or foreign).
  """
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return None
  return _read_json_object(path, ("method", "map", "dataset", "seed"))


def data_fingerprint(dataset: data_lib.Dataset) -> str:
  """sha256 of the dataset's arrays, labels and class names (not its location)."""
  digest = hashlib.sha256(dataset.name.encode())
  for split in (dataset.train, dataset.test):
    for array in (split.image, split.text, split.labels):
      array = np.ascontiguousarray(array)
      digest.update(f"{array.dtype}{array.shape}".encode())
      digest.update(array.tobytes())
  digest.update("\n".join(dataset.class_names).encode())
  return digest.hexdigest()


def _flatten(d: Mapping, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


class Workdir:
  """A run's folder, locked for the life of this object (use as a context manager).

  Raises:
    RunError: the path cannot be a folder (a file, read-only) or another
      process holds its lock.
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self._lock = None

  def __enter__(self) -> "Workdir":
    try:
      os.makedirs(self.path, mode=0o700, exist_ok=True)
    except OSError as e:
      raise RunError(f"workdir {self.path}: cannot be used ({e.strerror or e})") from None
    if not os.path.isdir(self.path):
      raise RunError(f"workdir {self.path}: cannot be used (not a folder)")
    files.check_private(self.path)
    if jax.process_index() != 0:  # The first process holds the lock for all of them.
      return self
    fd = files.open_private(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT)
    self._lock = os.fdopen(fd, "a+")
    try:
      fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      self._lock.close()
      self._lock = None
      if e.errno in (errno.EAGAIN, errno.EACCES):
        raise RunError(f"workdir {self.path}: another run is using it right now; wait "
                       "for it or use another --workdir") from None
      raise
    if not os.access(self.path, os.W_OK):
      self.__exit__()
      raise RunError(f"workdir {self.path}: not writable")
    return self

  def __exit__(self, *exc) -> None:
    if self._lock:
      fcntl.flock(self._lock, fcntl.LOCK_UN)
      self._lock.close()
      self._lock = None

  def claim(self, identity: Mapping[str, Any],
            config_defaults: Mapping[str, Any] | None = None) -> None:
    """Records `identity` in `config.json`, or checks that it matches.

    A config field added to the code after the workdir was made (absent from
    its `config.json`) matches when this run keeps the field's default
    (`config_defaults`): new fields default to the old behaviour.

    Raises:
      RunError: naming the entries that differ.
    """
    path = os.path.join(self.path, "config.json")
    wanted = json.loads(json.dumps(identity, default=_to_builtin))
    if not os.path.isfile(path):
      if jax.process_index() == 0:
        write_json(path, wanted)
      return
    found = _read_json_object(path, ("method", "config"))
    if not isinstance(found["config"], dict):
      raise RunError(f"{path}: not a cmjax config.json (its config is not an object); remove "
                     "the file or use another --workdir")
    defaults = json.loads(json.dumps(config_defaults or {}, default=_to_builtin))
    added = [k for k in wanted.get("config", {}) if k not in found.get("config", {})
             and k in defaults and wanted["config"][k] == defaults[k]]
    if added:
      logging.info("%s: config fields added since (%s) keep their defaults", path,
                   ", ".join(added))
      found = dict(found, config={**found["config"], **{k: wanted["config"][k] for k in added}})
    if found != wanted:
      a, b = _flatten(found), _flatten(wanted)
      diff = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
                       for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
      raise RunError(f"{path}: the workdir holds another run ({diff}); use a new --workdir")


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------


def _git_commit() -> str | None:
  """The commit of the cmjax checkout this code runs from (None outside one), with
  `+changes` when the checkout has uncommitted changes."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    run = lambda *args: subprocess.run(["git", "-C", root, *args], capture_output=True,
                                       text=True, timeout=10, check=True).stdout.strip()
    commit = run("rev-parse", "HEAD")
    return commit + ("+changes" if run("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.SubprocessError):
    return None


def _environment(mesh: jax.sharding.Mesh) -> dict:
  versions = {}
  for package in ("cmjax", "jax", "jaxlib", "flax", "optax", "ott-jax", "numpy"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  return {"versions": versions, "backend": jax.default_backend(),
          "device_kind": mesh.devices.flat[0].device_kind, "num_devices": mesh.size,
          "num_processes": jax.process_count(), "git_commit": _git_commit(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


# Score matrices of up to this many pairs are computed whole: kept, written to
# `test_scores.npy` and ranked for the exact ROC AUC. Larger ones are streamed.
MAX_DENSE_PAIRS = evaluation.MAX_DENSE_PAIRS


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The test evaluation of one scorer.

  Attributes:
    metrics: `cmjax.evaluation.cross_modal_metrics` (`"i2t"`, `"t2i"`).
    roc_auc: ROC AUC of pair classification by score.
    roc_auc_queries: the image queries whose pairs the ROC AUC ranks (all of
      them when the matrix is dense, else an evenly spaced subset).
    scores: the `[n_images, n_texts]` matrix on host when it was dense, else None.
  """

  metrics: Mapping[str, evaluation.RetrievalMetrics]
  roc_auc: float
  roc_auc_queries: int
  scores: np.ndarray | None


def evaluate(score: ScoreFn, images: Any, texts: Any, labels: np.ndarray, what: str,
             max_dense_pairs: int = MAX_DENSE_PAIRS) -> Evaluation:
  """Both retrieval directions of `score` over the encoded test split.

  Up to `max_dense_pairs` pairs the matrix is scored whole, beyond it is
  streamed over query blocks (`cmjax.evaluation.scored_metrics`; a run always
  takes the same form for the same data and limit); then the ROC AUC ranks
  the pairs of an evenly spaced subset of image queries, at most
  `max_dense_pairs` pairs.

  Raises:
    RunError: a score that is NaN or infinite (naming `what`).
  """
  try:
    metrics, matrix = evaluation.scored_metrics(score, images, texts, labels, labels,
                                                max_dense_pairs=max_dense_pairs)
  except evaluation.NonFiniteScoresError as e:
    raise RunError(f"{what}: {e.count} of {e.total} test scores are not finite (NaN or Inf); "
                   "the model diverged or the input has extreme values") from None
  n_images, n_texts = len(labels), len(labels)
  if matrix is not None:
    rows, sample = np.arange(n_images), np.asarray(matrix)
  else:
    rows = np.unique(np.linspace(0, n_images - 1, max(1, max_dense_pairs // n_texts)).round()
                     .astype(np.int64))
    sample = np.asarray(score(images[rows], texts))
  relevant = np.asarray(evaluation.relevance(labels[rows], labels))
  return Evaluation(metrics=metrics, roc_auc=evaluation.roc_auc(sample, relevant),
                    roc_auc_queries=len(rows), scores=None if matrix is None else sample)


def _encode(fitted: Fitted, split: data_lib.Split) -> tuple[Any, Any]:
  """A prepared split's encodings, on device."""
  return (jax.device_put(fitted.encode_image(split.image)),
          jax.device_put(fitted.encode_text(split.text)))


def _identity(spec: Any, config: Any, dataset: data_lib.Dataset, seed: int) -> dict:
  """What a workdir belongs to (`Workdir.claim`): method, data, config, seed."""
  data_lib.check_evaluable(dataset.test, dataset.metadata.get("source", dataset.name))
  return {"method": spec.name, "dataset": dataset.name, "view": dataset.view.name,
          "seed": seed, "config": dataclasses.asdict(config),
          "data": {"fingerprint": data_fingerprint(dataset),
                   "num_train": len(dataset.train), "num_test": len(dataset.test)}}


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
  identity = _identity(spec, config, dataset, seed)
  prepared = spec.prepare(config, dataset, seed)
  with Workdir(workdir) as wd:
    wd.claim(identity, dataclasses.asdict(type(config)()))
    context = FitContext(workdir=wd.path, seed=seed, mesh=mesh or train.data_mesh(), loop=loop)
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
  mesh = mesh or train.data_mesh()
  identity = _identity(spec, config, dataset, seed)
  # Before the workdir is touched: data the method cannot take leaves nothing behind.
  prepared = spec.prepare(config, dataset, seed)
  with Workdir(workdir) as wd:
    wd.claim(identity, dataclasses.asdict(type(config)()))
    done = read_results(wd.path)
    if done is not None:
      logging.info("%s: finished run found in %s; nothing to do", spec.name, wd.path)
      return done
    context = FitContext(workdir=wd.path, seed=seed, mesh=mesh, loop=loop)
    fitted = spec.fit(config, prepared, context)
    test = prepared.test
    images, texts = _encode(fitted, test)
    main = evaluate(fitted.score, images, texts, test.labels, spec.name, max_dense_pairs)
    metrics, i2t = main.metrics, main.metrics["i2t"]
    alternatives = {
        name: evaluation.map_summary(
            evaluate(score, images, texts, test.labels, f"{spec.name}/{name}",
                     max_dense_pairs).metrics)
        for name, score in fitted.alternatives.items()}
    hashing_results = None
    if spec.hashing:  # The encodings are +-1 codes; the training items are the database.
      database = _encode(fitted, prepared.full_train)
      hashing_results = hashing_protocol(np.asarray(images), np.asarray(texts),
                                         *map(np.asarray, database), test.labels,
                                         dataset.train.labels)
    results = {
        "method": spec.name,
        "preset": preset,
        "dataset": dataset.name,
        "view": identity["view"],
        "seed": seed,
        "map": evaluation.map_summary(metrics),
        **{f"map@{k}": evaluation.map_summary(metrics, k) for k in i2t.map_at},
        "roc_auc": main.roc_auc,
        "roc_auc_queries": main.roc_auc_queries,
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
        "environment": _environment(mesh),
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
  return json.loads(json.dumps(results, default=_to_builtin))


def score_warnings(score_range: np.ndarray) -> list[str]:
  """What makes a run's test scores suspect (empty: nothing), from the `[n_images, 2]`
  lowest and highest score of each image query (`RetrievalMetrics.score_range`).

  Constant scores (every pair equal) rank by database index alone: the
  MAP is that of a fixed order and the ROC AUC exactly 0.5, whatever the
  labels. The model learned nothing, or collapsed.
  """
  low, high = np.asarray(score_range).T
  if low.size and np.all(low == high) and np.all(low == low[0]):
    return [f"constant test scores: every pair scores {low[0]:.6g}, so the ranking is "
            "the database order and ROC AUC is 0.5; the model learned nothing"]
  constant_rows = int(np.sum(low == high))
  if constant_rows:
    return [f"{constant_rows} of {len(low)} image queries score every text equally "
            "(ranked by database order)"]
  return []


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
  """A stratified validation split of `config.validation_fraction`, then
  `config.input_transform` fitted on train."""
  return preprocess.prepare(dataset, config.input_transform, config.validation_fraction, seed)
