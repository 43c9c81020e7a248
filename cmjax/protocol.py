"""The method contract and the evaluation protocol, on device.

A fitted method is an encoder per modality and a block scorer (`Fitted`).
The runner encodes each split once and streams the evaluation over blocks of
queries (`evaluate`): every block is one jitted program of device arrays whose
query rows are sharded over the `'data'` mesh, so each device (and each
process) scores its share and only per-query results come back to the host.

Validation during training uses the same protocol (`Validation`,
`validation_map`): a stage names its model as pure functions of its
parameters (`Model`), and the validation of one set of parameters is one
jitted program (encode the validation split, score it, rank it), compiled
once per stage, that never builds a host matrix.

Where data crosses from the host (the only places, all explicit): a split's
inputs when they are encoded (`in_blocks`), the labels once per evaluation,
the indices of an evenly spaced subset of queries, and the validation split
once per stage.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cmjax import devices, evaluation, hashing

__all__ = [
    "Evaluation",
    "Fitted",
    "MAX_DENSE_PAIRS",
    "Model",
    "NonFiniteScores",
    "SELECT_METRIC",
    "Validation",
    "encode",
    "evaluate",
    "hashing_protocol",
    "in_blocks",
    "score_warnings",
    "validation_inputs",
    "validation_map",
]

# A block scorer: `(images [a, ...], texts [b, ...]) -> [a, b]` scores of every
# image/text pair of two blocks of encodings; higher = more similar. Traceable:
# the evaluation runs it inside the jitted program of each block.
ScoreFn = Callable[[Any, Any], jax.Array]
# An encoder: prepared inputs of one modality `[n, ...]` (host or device) ->
# encodings `[n, ...]` on device (embeddings, histograms, +-1 codes).
EncodeFn = Callable[[Any], Any]

# Score matrices of up to this many pairs are computed whole: kept, written to
# `test_scores.npy` and ranked for the exact ROC AUC. Larger ones are streamed.
MAX_DENSE_PAIRS = evaluation.MAX_DENSE_PAIRS
# The validation metric every stage selects its parameters by (the one place).
SELECT_METRIC = "avg"


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A fitted method: an encoder per modality and a block scorer.

  The runner encodes each prepared split once (`encode_image`, `encode_text`)
  and streams the evaluation over blocks of queries through `score`, so no
  `[n, n]` matrix exists unless it is small (`max_dense_pairs` of `evaluate`).
  Encoders and scorer close over device arrays (the trained parameters stay on
  the devices); the scorer must be traceable.

  Attributes:
    encode_image: prepared images `[n, ...]` -> encodings `[n, ...]`.
    encode_text: prepared texts `[n, ...]` -> encodings `[n, ...]`.
    score: the block scorer (`ScoreFn`) of those encodings.
    stages: training facts per stage (`runner.stage_facts`).
    alternatives: other scorers of the same encodings reported beside the main
      one (ablations of the same fitted model, e.g. UNCSM's cosine row).
    extras: further JSON-able facts (selected hyper-parameters...).
    parts: learned pieces worth looking at, not recorded (EMD-CNN's ground
      cost, FGL's pair weights...); see `runner.fit`.
  """

  encode_image: EncodeFn
  encode_text: EncodeFn
  score: ScoreFn
  stages: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  alternatives: Mapping[str, ScoreFn] = dataclasses.field(default_factory=dict)
  extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  parts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Model:
  """A model as pure functions of its parameters (what a stage validates).

  Attributes:
    encode_image: `(params, images [n, ...]) -> [n, ...]` encodings, traceable.
    encode_text: `(params, texts [n, ...]) -> [n, ...]` encodings, traceable.
    score: `(params, images [a, ...], texts [b, ...]) -> [a, b]`, traceable.
  """

  encode_image: Callable[[Any, jax.Array], Any]
  encode_text: Callable[[Any, jax.Array], Any]
  score: Callable[[Any, Any, Any], jax.Array]

  def bind(self, params: Any, **fields: Any) -> Fitted:
    """The `Fitted` of these functions at `params` (device arrays); `fields` are
    further `Fitted` fields. Inputs are encoded in blocks (`in_blocks`)."""
    encode = lambda fn: functools.partial(in_blocks, jax.jit(functools.partial(fn, params)))
    return Fitted(encode_image=encode(self.encode_image), encode_text=encode(self.encode_text),
                  score=functools.partial(self.score, params), **fields)


@dataclasses.dataclass(frozen=True)
class Validation:
  """Model selection on a validation split, through the evaluation protocol.

  Attributes:
    model: the stage's model as pure functions of the stage's parameters.
    image, text: the prepared validation inputs `[n, ...]` (uploaded once).
    labels: their labels `[n]` or `[n, C]`.
  """

  model: Model
  image: Any
  text: Any
  labels: np.ndarray


@functools.partial(jax.jit, static_argnums=(0,))
def _head(n: int, x: jax.Array) -> jax.Array:
  return x[:n]


def in_blocks(fn: Callable[[jax.Array], jax.Array], inputs: Any,
              block_size: int = 4096) -> jax.Array:
  """`fn` over consecutive row blocks of `inputs` `[n, ...]`, concatenated on device.

  For encoders: memory is that of one block, and every block (the last
  padded with copies of its last row, then cut) has one shape, so `fn`
  compiles once. Host inputs are uploaded a block at a time (explicitly: a
  data source), each block's rows split over the run's mesh, so every device
  encodes its share; device inputs stay where they are.
  """
  if isinstance(inputs, jax.Array):
    return fn(inputs)
  inputs = np.asarray(inputs)
  n = len(inputs)
  out = []
  for start in range(0, n, block_size):
    block = inputs[start:start + block_size]
    pad = block_size - len(block) if n > block_size else 0
    if pad:
      block = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)])
    rows, valid = devices.put_rows(block)
    encoded = fn(rows)
    out.append(_head(valid - pad, encoded) if valid - pad < encoded.shape[0] else encoded)
  return out[0] if len(out) == 1 else jnp.concatenate(out)


def encode(fitted: Fitted, image: Any, text: Any) -> tuple[Any, Any]:
  """The encodings of a split's prepared inputs, on device, replicated over the run's
  mesh (each device encoded its share of the rows, `in_blocks`; encodings are small,
  and every device scores its queries against all items). An encoder that computes
  on the host has its output uploaded here, explicitly."""
  return devices.replicated((fitted.encode_image(image), fitted.encode_text(text)))


# ---------------------------------------------------------------------------
# The test evaluation.
# ---------------------------------------------------------------------------


class NonFiniteScores(FloatingPointError):
  """Scores that are NaN or infinite, naming what was scored."""


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
             max_dense_pairs: int = MAX_DENSE_PAIRS,
             mesh: jax.sharding.Mesh | None = None) -> Evaluation:
  """Both retrieval directions of `score` over an encoded split, on device.

  Up to `max_dense_pairs` pairs the matrix is scored whole, beyond it is
  streamed over query blocks sharded over `mesh`
  (`cmjax.evaluation.scored_metrics`; a run always takes the same form for
  the same data and limit); then the ROC AUC ranks the pairs of an evenly
  spaced subset of image queries, at most `max_dense_pairs` pairs.

  Raises:
    NonFiniteScores: a score that is NaN or infinite (naming `what`).
  """
  try:
    metrics, matrix = evaluation.scored_metrics(score, images, texts, labels, labels,
                                                max_dense_pairs=max_dense_pairs, mesh=mesh)
  except evaluation.NonFiniteScoresError as e:
    raise NonFiniteScores(f"{what}: {e.count} of {e.total} test scores are not finite (NaN "
                          "or Inf); the model diverged or the input has extreme values") from None
  n_images, n_texts = len(labels), len(labels)
  if matrix is not None:
    rows, sample = np.arange(n_images), np.asarray(matrix)
  else:
    rows = np.unique(np.linspace(0, n_images - 1, max(1, max_dense_pairs // n_texts)).round()
                     .astype(np.int64))
    sample = np.asarray(evaluation.scored_rows(score, images, texts, rows))
  relevant = np.asarray(evaluation.relevance(labels[rows], labels))
  return Evaluation(metrics=metrics, roc_auc=evaluation.roc_auc(sample, relevant),
                    roc_auc_queries=len(rows), scores=None if matrix is None else sample)


def hashing_protocol(image_queries: Any, text_queries: Any, image_db: Any, text_db: Any,
                     query_labels: np.ndarray, db_labels: np.ndarray) -> dict:
  """The cross-modal hashing protocol: the test items query the training items.

  Image queries rank the training texts by Hamming distance and text queries
  the training images (MAP over the full ranking, MAP@50, tie-aware MAP,
  precision within radius 2, PR curves; `cmjax.hashing.hashing_metrics`).
  All codes are `[n, K]` +-1.
  """
  return {"bits": int(image_queries.shape[1]),
          "i2t": hashing.hashing_metrics(image_queries, text_db, query_labels, db_labels),
          "t2i": hashing.hashing_metrics(text_queries, image_db, query_labels, db_labels)}


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


# ---------------------------------------------------------------------------
# Validation: one jitted program per stage.
# ---------------------------------------------------------------------------


def _direction_aps(score: Callable, queries, items, query_labels, item_labels,
                   rows: np.ndarray, chunk: int) -> jax.Array:
  """`[len(rows)]` AP of the query `rows` (traced): blocks of `chunk` rows in a
  `lax.map`, the last padded with its last row."""
  padded = np.concatenate([rows, np.full((-len(rows)) % chunk, rows[-1])]).reshape(-1, chunk)
  levels = evaluation.DEFAULT_RECALL_LEVELS

  def block(r):  # Each device scores and ranks its rows of the block.
    r = devices.split_rows(r)
    scores = devices.split_rows(score(queries[r], items))
    return devices.split_rows(evaluation.block_metrics(scores, query_labels[r], item_labels,
                                                       (50,), levels)[0])

  return jax.lax.map(block, jnp.asarray(padded)).reshape(-1)[: len(rows)]


def validation_inputs(validation: Validation, mesh: jax.sharding.Mesh | None = None):
  """`(image, text, labels)` of a validation split on the devices of `mesh` (default:
  the current mesh): the inputs' rows split over `'data'` (padded with copies of the
  last row; each device encodes its share), the labels replicated."""
  rows = lambda tree: jax.tree.map(lambda x: devices.put_rows(x, mesh)[0], tree)
  return (rows(validation.image), rows(validation.text),
          devices.put(np.asarray(validation.labels), mesh))


@functools.partial(jax.jit, static_argnames=("model", "max_queries", "max_dense_pairs", "chunk"))
def _validation_aps(model: Model, params, image, text, labels, *, max_queries: int,
                    max_dense_pairs: int, chunk: int = 256):
  n = labels.shape[0]  # The inputs' rows may be padded (`validation_inputs`).
  fi, ft = model.encode_image(params, image)[:n], model.encode_text(params, text)[:n]
  rows = evaluation.evenly_spaced(n, max_queries)
  if n * n <= max_dense_pairs:  # The dense form, as the test evaluation takes it.
    matrix = model.score(params, fi, ft)
    take = lambda q, items: q
    return (_direction_aps(take, matrix, None, labels, labels, rows, chunk),
            _direction_aps(take, matrix.T, None, labels, labels, rows, chunk))
  i2t = lambda q, items: model.score(params, q, items)
  t2i = lambda q, items: model.score(params, items, q).T
  return (_direction_aps(i2t, fi, ft, labels, labels, rows, chunk),
          _direction_aps(t2i, ft, fi, labels, labels, rows, chunk))


def validation_map(validation: Validation, params: Any, data: Any = None,
                   max_queries: int = evaluation.VALIDATION_QUERIES,
                   max_dense_pairs: int = MAX_DENSE_PAIRS) -> dict[str, float]:
  """`{"i2t", "t2i", "avg"}` validation MAP of `validation.model` at `params`
  (device arrays), ranking the whole split for at most `max_queries` evenly spaced
  queries a direction.

  Args:
    data: `validation_inputs(validation)`, already on device (`train_stage` uploads
      them once a stage); None uploads them now.
  """
  if data is None:
    data = validation_inputs(validation)
  aps = jax.device_get(_validation_aps(validation.model, params, *data,
                                       max_queries=max_queries,
                                       max_dense_pairs=max_dense_pairs))
  mean = lambda ap: float(np.mean(ap[~np.isnan(ap)])) if np.any(~np.isnan(ap)) else float("nan")
  i2t, t2i = mean(aps[0]), mean(aps[1])
  return {"i2t": i2t, "t2i": t2i, "avg": (i2t + t2i) / 2}
