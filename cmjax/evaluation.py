"""Retrieval metrics over a score matrix, in JAX, chunked over queries.

Protocol (UNCSM paper, eq. 6): every query ranks the whole database by score
(higher = more similar); an item is relevant when it shares a label with the
query. Ties are broken deterministically by database index (lower first), so
the same scores always give the same numbers.

Conventions:
- AP over all returned results: (1/M) sum_k P(k) rel(k), M = number of relevant
  items in the database. A query with no relevant item has no defined AP: it is
  left out of the mean and counted in `num_queries_without_relevant`.
- AP@k (the "MAP@50" of Corr-AE/DCMH code): sum_{j<=k} P(j) rel(j) divided by
  the number of relevant items within the top k; 0 if there is none.
- precision@k: relevant items in the top k over k.
- PR curve: for each query the interpolated precision
  p(r) = max_{j: recall(j) >= r} precision(j), at fixed recall levels, averaged
  over queries with at least one relevant item.

Memory: only a `[chunk, num_items]` block of scores and ranks exists at a time,
and scores may come from a function of the query rows (`score_fn`), so a
100k x 100k evaluation never holds the full matrix. Blocks a function returns
on device stay there: ranking, the finiteness check and each query's score
range are computed in one jitted function per block.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from cmjax import devices
from cmjax.precision import float32_matmuls

__all__ = [
    "MAX_DENSE_PAIRS",
    "VALIDATION_QUERIES",
    "NonFiniteScoresError",
    "RetrievalMetrics",
    "average_precision",
    "block_metrics",
    "descending_order",
    "evenly_spaced",
    "cross_modal_map",
    "cross_modal_metrics",
    "map_summary",
    "mean_average_precision",
    "relevance",
    "retrieval_metrics",
    "roc_auc",
    "scored_metrics",
    "scored_rows",
    "streamed_metrics",
    "top_k",
]

DEFAULT_RECALL_LEVELS = tuple(np.linspace(0.0, 1.0, 21).tolist())


@dataclasses.dataclass(frozen=True)
class RetrievalMetrics:
  """Metrics of one retrieval direction.

  Attributes:
    map: mean AP over all returned results.
    map_at: `{k: MAP@k}`.
    precision_at: `{k: precision@k}`.
    recall_levels: `[R]` recall levels of the PR curve.
    precision_curve: `[R]` mean interpolated precision at those levels.
    average_precisions: `[num_queries]` AP per query (NaN: no relevant item).
    num_queries_without_relevant: queries left out of the means.
    score_range: `[num_queries, 2]` lowest and highest score of each query
      (a query whose two are equal ranks by database order alone).
  """

  map: float
  map_at: dict[int, float]
  precision_at: dict[int, float]
  recall_levels: np.ndarray
  precision_curve: np.ndarray
  average_precisions: np.ndarray
  num_queries_without_relevant: int
  score_range: np.ndarray

  def summary(self) -> dict[str, float]:
    out = {"map": self.map}
    out.update({f"map@{k}": v for k, v in self.map_at.items()})
    out.update({f"p@{k}": v for k, v in self.precision_at.items()})
    return out


@float32_matmuls
def relevance(query_labels: jax.Array, item_labels: jax.Array) -> jax.Array:
  """`[Q, N]` bool: does query q share a label with item n.

  Args:
    query_labels: `[Q]` class ids or `[Q, C]` multi-hot.
    item_labels: `[N]` class ids or `[N, C]` multi-hot (same kind as queries).
  """
  if query_labels.ndim == 1:
    return query_labels[:, None] == item_labels[None, :]
  return (query_labels.astype(jnp.float32) @ item_labels.astype(jnp.float32).T) > 0


class NonFiniteScoresError(FloatingPointError):
  """Scores that are NaN or infinite: `count` of `total` (a ranking of them means nothing)."""

  def __init__(self, count: int, total: int, first_query: int):
    super().__init__(f"non-finite scores: {count} of {total}, the first for query {first_query}")
    self.count, self.total = count, total


# Largest database whose (compressed key, index) pairs fit one int32 sort key.
MAX_KEYED_ITEMS = 46340  # floor(sqrt(2^31 - 1))
# Smaller databases rank by the argsort: its program compiles in half the time
# (0.3 s against 0.9 s) and a block of them sorts in milliseconds either way.
MIN_KEYED_ITEMS = 4096


def _ascending_key(scores: jax.Array) -> jax.Array | None:
  """`[B, N]` int32 keys, ascending as the scores descend and equal exactly where the
  scores are equal; None for dtypes that do not fit 32 bits.

  A float's bits read as a sign-magnitude integer; flipping the magnitude bits
  of negatives makes them two's complement, so integer order is float order
  (-0 is first made +0, which it equals). NaNs get some key: they are counted
  as non-finite and raise, so where they rank does not matter.
  """
  dtype = scores.dtype
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize <= 4:
    scores = scores.astype(jnp.float32)
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)
    bits = jax.lax.bitcast_convert_type(scores, jnp.int32)
    ascending = bits ^ ((bits >> 31) & 0x7FFFFFFF)
  elif dtype == jnp.uint32:
    ascending = jax.lax.bitcast_convert_type(scores ^ jnp.uint32(1 << 31), jnp.int32)
  elif (jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_) and dtype.itemsize <= 4:
    ascending = scores.astype(jnp.int32)
  else:
    return None
  return ~ascending  # ~x = -x - 1: reverses the order, never overflows.


def descending_order(scores: jax.Array) -> jax.Array:
  """`[B, N]` -> `[B, N]` int32 item indices by descending score, equal scores by lower
  index: exactly `jnp.argsort(scores, axis=1, stable=True, descending=True)`.

  A sort that carries indices beside the values is several times slower on
  XLA:CPU than a sort of one int32 array (1.9 s against 0.29 s for 256 x
  33,955 scores), so the order is built from values-only sorts of int32 keys
  (`_ascending_key`):
  - keys of few distinct values (integer scores, Hamming distances): one sort
    of `(key - row minimum) * N + index`, read back `% N`;
  - else each item's position is the number of keys below its own (a sort and
    a binary search) plus, for tied items, the number of equal ones of lower
    index (`_place_ties`), and the order is that permutation inverted.
  Rows with more tied items than `_place_ties` holds take the one-sort path
  with the count below as the key (up to `MAX_KEYED_ITEMS` items), and
  beyond that, like 64-bit scores, the argsort. Below `MIN_KEYED_ITEMS` items
  the argsort is as fast and compiles faster.
  """
  num_items = scores.shape[1]
  key = _ascending_key(scores)
  argsort = lambda: jnp.argsort(scores, axis=1, stable=True, descending=True).astype(jnp.int32)
  if key is None or num_items < MIN_KEYED_ITEMS:
    return argsort()
  index = jnp.broadcast_to(jnp.arange(num_items, dtype=jnp.int32), key.shape)
  by_key = lambda compressed: jnp.sort(compressed * num_items + index, axis=1) % num_items
  lowest = jnp.min(key, axis=1, keepdims=True)
  # The span in float32 may be off by 2^8 (keys up to 2^31): a bound of 2^30 is safe.
  span = jnp.max(key, axis=1).astype(jnp.float32) - lowest[:, 0].astype(jnp.float32) + 1
  narrow = jnp.all(span * num_items < 2.0**30)

  def wide():
    sorted_keys = jnp.sort(key, axis=1)
    first = _count_below(sorted_keys, key)
    fallback = (lambda: by_key(first)) if num_items <= MAX_KEYED_ITEMS else argsort
    position, fits = _place_ties(sorted_keys, key, first, index)
    return jax.lax.cond(fits, lambda: _rows_scatter(position, index), fallback)

  return jax.lax.cond(narrow, lambda: by_key(key - lowest), wide)


def _flat(row_values: jax.Array, columns: jax.Array) -> jax.Array:
  """Indices of `[B, N]` `columns` into `row_values` flattened (`[B * M]`, M columns a
  row): one-dimensional gathers and scatters, whose index arrays are `[B, N]` (XLA's
  row-wise ones build `[B, N, 2]` index arrays)."""
  return columns + (jnp.arange(row_values.shape[0], dtype=jnp.int32) * row_values.shape[1]
                    )[:, None]


def _take_columns(values: jax.Array, columns: jax.Array) -> jax.Array:
  """`take_along_axis(values, columns, axis=1)` through a flat gather."""
  return values.reshape(-1)[_flat(values, columns)]


def _rows_scatter(columns: jax.Array, values: jax.Array) -> jax.Array:
  """`out[b, columns[b, n]] = values[b, n]`, `columns` a permutation of each row."""
  out = jnp.zeros(values.size, values.dtype).at[_flat(values, columns).reshape(-1)].set(
      values.reshape(-1), unique_indices=True, indices_are_sorted=False)
  return out.reshape(values.shape)


def _count_below(sorted_keys: jax.Array, keys: jax.Array) -> jax.Array:
  """`[B, N]` int32: for each key, how many of its row's `sorted_keys` are smaller (a
  binary search, ceil(log2(N + 1)) steps of flat gathers)."""
  num = sorted_keys.shape[1]

  def step(_, bounds):
    low, high = bounds
    middle = (low + high) // 2
    smaller = _take_columns(sorted_keys, jnp.minimum(middle, num - 1)) < keys
    searching = low < high
    return (jnp.where(searching & smaller, middle + 1, low),
            jnp.where(searching & ~smaller, middle, high))

  start = (jnp.zeros(keys.shape, jnp.int32), jnp.full(keys.shape, num, jnp.int32))
  return jax.lax.fori_loop(0, max(1, int(num).bit_length()), step, start)[0]


def _place_ties(sorted_keys, key, first, index):
  """`([B, N] position of each item, all rows fit)`: `first` plus, for an item whose
  key others share, the number of those of lower index.

  Tied items are gathered, in index order, into `max(256, N // 64)` slots a
  row (random float32 scores tie about 140 items a row at N = 100,000); a
  stable sort of the slots by `first` puts each tie's items side by side by
  index. `fits` is False when some row has more tied items than slots.
  """
  num_rows, num_items = key.shape
  slots = max(256, num_items // 64)
  rows = jnp.arange(num_rows)[:, None]
  after = jnp.minimum(first + 1, num_items - 1)
  tied = (_take_columns(sorted_keys, after) == key) & (first + 1 < num_items)
  slot = jnp.where(tied, jnp.cumsum(tied, axis=1, dtype=jnp.int32) - 1, slots)
  fits = jnp.all(jnp.sum(tied, axis=1) <= slots)
  tie_index = jnp.full((num_rows, slots), num_items, jnp.int32).at[rows, slot].set(
      index, mode="drop")  # Past the tied items: N.
  tie_first = jnp.where(tie_index < num_items, jnp.take_along_axis(
      first, jnp.minimum(tie_index, num_items - 1), axis=1), num_items)
  tie_first, tie_index = jax.lax.sort((tie_first, tie_index), dimension=1, num_keys=1,
                                      is_stable=True)
  run_start = jax.vmap(lambda row: jnp.searchsorted(row, row, side="left"))(tie_first)
  earlier = jnp.arange(slots, dtype=jnp.int32) - run_start.astype(jnp.int32)
  earlier = jnp.zeros_like(first).at[rows, tie_index].set(earlier, mode="drop")  # [B, slots]
  return first + earlier, fits


@functools.partial(jax.jit, static_argnames=("ks", "recall_levels"))
def block_metrics(scores, query_labels, item_labels, ks, recall_levels):
  """Per-query metrics of a `[B, N]` score block; see module docstring.

  Any real dtype ranks exactly in its own precision (no cast). Returns AP,
  AP@k, P@k, the PR curve, the number of non-finite scores and the score
  range of each query.
  """
  num_items = scores.shape[1]
  nonfinite = (jnp.sum(~jnp.isfinite(scores), axis=1) if jnp.issubdtype(scores.dtype, jnp.inexact)
               else jnp.zeros(scores.shape[0], jnp.int32))
  score_range = jnp.stack([jnp.min(scores, axis=1), jnp.max(scores, axis=1)], axis=1)
  order = descending_order(scores)
  rel = jnp.take_along_axis(relevance(query_labels, item_labels), order, axis=1)
  rel = rel.astype(jnp.float32)
  hits = jnp.cumsum(rel, axis=1)
  ranks = jnp.arange(1, num_items + 1, dtype=jnp.float32)
  precision = hits / ranks
  num_relevant = hits[:, -1]
  ap_terms = jnp.cumsum(precision * rel, axis=1)
  ap = jnp.where(num_relevant > 0, ap_terms[:, -1] / jnp.maximum(num_relevant, 1), jnp.nan)
  ap_at, p_at = [], []
  for k in ks:
    k = min(k, num_items)
    hits_k = hits[:, k - 1]
    ap_at.append(jnp.where(hits_k > 0, ap_terms[:, k - 1] / jnp.maximum(hits_k, 1), 0.0))
    p_at.append(hits_k / k)
  recall = hits / jnp.maximum(num_relevant, 1)[:, None]
  # Interpolated precision: max precision at any rank at or after j.
  best_after = jax.lax.cummax(precision, axis=1, reverse=True)
  levels = jnp.asarray(recall_levels, jnp.float32)
  first = jax.vmap(lambda r: jnp.searchsorted(r, levels - 1e-6, side="left"))(recall)
  first = jnp.minimum(first, num_items - 1)
  curve = jnp.take_along_axis(best_after, first, axis=1)
  return ap, jnp.stack(ap_at, 1), jnp.stack(p_at, 1), curve, nonfinite, score_range


def _float32_order(scores: np.ndarray) -> np.ndarray:
  """`[B, N]` float32 scores ranking exactly as `scores` do, ties included.

  Scores that float32 holds exactly (float32 or narrower, integers of up to 16
  bits) are only cast. Wider ones (float64, int32, int64) would merge
  near-ties when cast, so they become their dense ranks
  per row (0 for the lowest score, equal scores equal ranks), exact in
  float32 up to 2^24 distinct values per row; a non-finite score stays NaN
  (so it is counted, not ranked).
  """
  kind, size = scores.dtype.kind, scores.dtype.itemsize
  if (kind == "f" and size <= 4) or (kind in "iub" and size <= 2):
    return scores.astype(np.float32)
  order = np.argsort(scores, axis=1, kind="stable")
  ordered = np.take_along_axis(scores, order, axis=1)
  dense = np.concatenate([np.zeros((scores.shape[0], 1)), np.diff(ordered, axis=1) > 0], 1)
  ranks = np.empty(scores.shape, np.float32)
  np.put_along_axis(ranks, order, np.cumsum(dense, axis=1).astype(np.float32), axis=1)
  if kind == "f":
    ranks[~np.isfinite(scores)] = np.nan
  return ranks


def retrieval_metrics(
    score_fn: Callable[[np.ndarray], jax.Array] | jax.Array | np.ndarray,
    query_labels: np.ndarray,
    item_labels: np.ndarray,
    *,
    ks: Sequence[int] = (50,),
    recall_levels: Sequence[float] = DEFAULT_RECALL_LEVELS,
    chunk_size: int = 256,
) -> RetrievalMetrics:
  """All metrics of one retrieval direction.

  Args:
    score_fn: either a `[Q, N]` score matrix, or a function mapping an array
      of query row indices `[B]` to their `[B, N]` scores (so the full matrix
      never exists), on host or on device. Higher score = more similar.
    query_labels: `[Q]` ids or `[Q, C]` multi-hot.
    item_labels: `[N]` ids or `[N, C]` multi-hot.
    ks: cut-offs for MAP@k and precision@k.
    recall_levels: recall levels of the PR curve.
    chunk_size: queries per block; memory is O(chunk_size * N).

  Raises:
    NonFiniteScoresError: some score is NaN or infinite (all blocks are
      scored first, so the count is complete).
    ValueError: a block of the wrong shape.
  """
  query_labels = np.asarray(query_labels)
  item_labels = jnp.asarray(item_labels)
  num_queries = query_labels.shape[0]
  if callable(score_fn):
    get_scores = score_fn
  else:
    matrix = score_fn
    if matrix.shape != (num_queries, item_labels.shape[0]):
      raise ValueError(
          f"scores have shape {matrix.shape}, expected "
          f"[{num_queries}, {item_labels.shape[0]}] (queries x items)"
      )
    get_scores = lambda rows: matrix[rows]
  ks = tuple(int(k) for k in ks)
  levels = tuple(float(r) for r in recall_levels)
  results = []
  for start in range(0, num_queries, chunk_size):
    rows = np.arange(start, min(start + chunk_size, num_queries))
    padded = np.concatenate([rows, np.full(chunk_size - len(rows), rows[-1])])
    scores = get_scores(padded)
    if scores.shape != (chunk_size, item_labels.shape[0]):
      raise ValueError(f"a block of scores has shape {scores.shape}, expected "
                       f"[{chunk_size}, {item_labels.shape[0]}] (queries x items)")
    if isinstance(scores, np.ndarray):  # Host scores rank exactly as float32 on device.
      scores = _float32_order(scores)
    block = block_metrics(scores, query_labels[padded], item_labels, ks, levels)
    results.append(block)
  return _summarize(jax.device_get(results), num_queries, int(item_labels.shape[0]), ks,
                    levels)


def average_precision(scores, query_labels, item_labels) -> np.ndarray:
  """`[Q]` AP over all returned results per query (NaN: no relevant item)."""
  return retrieval_metrics(scores, query_labels, item_labels).average_precisions


def mean_average_precision(scores, query_labels, item_labels, *, k: int | None = None) -> float:
  """MAP of a `[num_queries, num_items]` score matrix (higher = more similar).

  Args:
    scores: `[Q, N]` scores.
    query_labels: `[Q]` ids or `[Q, C]` multi-hot.
    item_labels: `[N]` ids or `[N, C]` multi-hot.
    k: if given, MAP@k; else MAP over all returned results (eq. 6).
  """
  metrics = retrieval_metrics(scores, query_labels, item_labels, ks=(k or 1,))
  return metrics.map_at[k] if k else metrics.map


def cross_modal_metrics(
    i2t_scores, t2i_scores, image_labels, text_labels, **kwargs
) -> dict[str, RetrievalMetrics]:
  """Both directions: `{"i2t": ..., "t2i": ...}`.

  Args:
    i2t_scores: `[num_images, num_texts]` matrix or row function (see
      `retrieval_metrics`): image queries against the text database.
    t2i_scores: `[num_texts, num_images]` likewise.
    image_labels, text_labels: labels of the two sides.
  """
  return {
      "i2t": retrieval_metrics(i2t_scores, image_labels, text_labels, **kwargs),
      "t2i": retrieval_metrics(t2i_scores, text_labels, image_labels, **kwargs),
  }


# Score matrices of up to this many pairs are computed whole by `scored_metrics`.
MAX_DENSE_PAIRS = 2**24
# Queries of a validation evaluation during training (each direction), so that
# model selection costs the same whatever the size of the validation split.
VALIDATION_QUERIES = 2000


def scored_metrics(score: Callable, images, texts, image_labels, text_labels, *,
                   max_dense_pairs: int = MAX_DENSE_PAIRS, max_queries: int | None = None,
                   mesh: jax.sharding.Mesh | None = None, chunk_size: int = 256,
                   ks: Sequence[int] = (50,),
                   recall_levels: Sequence[float] = DEFAULT_RECALL_LEVELS):
  """Both directions of a block scorer over encoded items, on device: `(metrics, matrix)`.

  Args:
    score: `(images [a, ...], texts [b, ...]) -> [a, b]` scores; traceable
      (it runs inside the jitted program of each block).
    images, texts: `[n_images, ...]`, `[n_texts, ...]` encodings (device arrays; host
      ones are uploaded once).
    image_labels, text_labels: their labels (host; uploaded once).
    max_dense_pairs: up to this many pairs the matrix is scored in one call
      and both directions read it (`matrix` is returned, on device); beyond,
      each direction streams blocks of queries against the whole other side
      and `matrix` is None. The two forms rank alike, but a float score can
      differ in its last bit between them (XLA's matrix products are not
      invariant to the block shape).
    max_queries: if given, each direction ranks the whole other side for at
      most this many queries, evenly spaced; the metrics are then over those.
    mesh: the `'data'` mesh: each block's query rows are sharded over it (every
      device, and so every process, scores its share; the per-query results
      are gathered). None: the default device.
    chunk_size: queries per block (at most the number of queries, rounded up to a
      multiple of the mesh size).
    ks, recall_levels: of `retrieval_metrics`.

  Every block is one jitted program of device arrays: the query rows are
  generated on device from the previous block's end, so nothing but the labels
  (once) and the dense/streamed choice crosses from the host.
  """
  image_labels, text_labels = np.asarray(image_labels), np.asarray(text_labels)
  n_images, n_texts = len(image_labels), len(text_labels)
  image_rows, text_rows = (evenly_spaced(n, max_queries) for n in (n_images, n_texts))
  # No block larger than the queries (so every device gets rows), a multiple of the mesh.
  chunk_size = min(chunk_size, max(len(image_rows), len(text_rows)))
  if mesh is not None:
    chunk_size = -(-chunk_size // mesh.size) * mesh.size
  # Host encodings are uploaded once, here; device ones stay where they are.
  images, texts, image_labels_dev, text_labels_dev = devices.put(
      (images, texts, image_labels, text_labels))
  matrix = None
  if n_images * n_texts <= max_dense_pairs:
    matrix = _score_whole(score, images, texts)
    if matrix.shape != (n_images, n_texts):
      raise ValueError(f"scores of shape {matrix.shape}, expected [{n_images}, {n_texts}] "
                       "(images x texts)")
    i2t = (_rows_scorer, _take(matrix, image_rows), None)
    t2i = (_rows_scorer, _take(_transpose(matrix), text_rows), None)
  else:
    i2t = (score, _take(images, image_rows), texts)
    t2i = (functools.partial(_transposed, score), _take(texts, text_rows), images)
  ks = tuple(int(k) for k in ks)
  levels = tuple(float(r) for r in recall_levels)
  run = lambda direction, rows, query_labels, item_labels: streamed_metrics(
      *direction, query_labels[rows], item_labels, mesh=mesh, chunk_size=chunk_size, ks=ks,
      recall_levels=levels)
  return {"i2t": run(i2t, image_rows, image_labels, text_labels_dev),
          "t2i": run(t2i, text_rows, text_labels, image_labels_dev)}, matrix


@jax.jit
def _transpose(matrix: jax.Array) -> jax.Array:
  return matrix.T


def _take(array: jax.Array, rows: np.ndarray) -> jax.Array:
  """`array[rows]` on device (the index uploaded explicitly), for `evenly_spaced` rows:
  the array itself when they are all of its rows."""
  if len(rows) == array.shape[0]:
    return array
  return _gather(array, devices.put(rows))


@jax.jit
def _gather(array: jax.Array, rows: jax.Array) -> jax.Array:
  return array[rows]


@functools.partial(jax.jit, static_argnums=(0,))
def _score_whole(score: Callable, images: jax.Array, texts: jax.Array) -> jax.Array:
  return score(images, texts)


def scored_rows(score: Callable, images: jax.Array, texts: jax.Array,
                rows: np.ndarray) -> jax.Array:
  """`[len(rows), n_texts]` scores of the image query `rows` (uploaded explicitly)."""
  return _score_whole(score, _take(images, rows), texts)


def _rows_scorer(rows: jax.Array, items: None) -> jax.Array:
  """The scorer of a dense matrix's rows: the query block is its own scores."""
  del items
  return rows


def _transposed(score: Callable, texts: jax.Array, images: jax.Array) -> jax.Array:
  """Text queries against images: `score(images, texts).T`."""
  return score(images, texts).T


# Pairs one block's scorer call may see: beyond it the items are split into tiles
# (`_tiled`), so no call scores a whole large database at once.
MAX_BLOCK_PAIRS = 2**24


def _tiled(score: Callable, queries: jax.Array, items, tile: int) -> jax.Array:
  """`score(queries, items)` `[B, N]`, one `lax.map` step a tile of at most `tile` items
  (equal tiles, the last item repeated to fill the last), when N is larger."""
  if items is None or jax.tree.leaves(items)[0].shape[0] <= tile:
    return score(queries, items)
  n = jax.tree.leaves(items)[0].shape[0]
  tiles = -(-n // tile)
  size = -(-n // tiles)
  pad = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], tiles * size - n, axis=0)]).reshape(
      tiles, size, *x.shape[1:])
  out = jax.lax.map(lambda t: score(queries, t), jax.tree.map(pad, items))  # [T, B, size]
  return jnp.moveaxis(out, 0, 1).reshape(out.shape[1], tiles * size)[:, :n]


@functools.partial(jax.jit, static_argnames=("score", "chunk", "ks", "recall_levels", "mesh"))
def _scored_block(score, queries, items, query_labels, item_labels, start, *, chunk, ks,
                  recall_levels, mesh):
  """Per-query metrics of the `chunk` queries from `start` (the last row repeated past
  the end), and the next block's start."""
  rows = jnp.minimum(start + jnp.arange(chunk), queries.shape[0] - 1)
  by_rows = lambda x: x
  if mesh is not None:  # Each device scores, ranks and summarises its rows of the block.
    by_rows = lambda x: jax.lax.with_sharding_constraint(
        x, NamedSharding(mesh, PartitionSpec("data")))
  rows = by_rows(rows)
  scores = by_rows(_tiled(score, queries[rows], items, max(1, MAX_BLOCK_PAIRS // chunk)))
  out = jax.tree.map(by_rows, block_metrics(scores, query_labels[rows], item_labels, ks,
                                            recall_levels))
  return out, start + chunk


def streamed_metrics(score: Callable, queries: jax.Array, items, query_labels: np.ndarray,
                     item_labels: jax.Array, *, mesh: jax.sharding.Mesh | None = None,
                     chunk_size: int = 256, ks: Sequence[int] = (50,),
                     recall_levels: Sequence[float] = DEFAULT_RECALL_LEVELS
                     ) -> RetrievalMetrics:
  """One retrieval direction of `score(queries[block], items) -> [block, N]`, streamed
  over blocks of `chunk_size` query rows, each block one jitted program on device
  (rows sharded over `mesh` when given).

  Raises:
    NonFiniteScoresError: some score is NaN or infinite.
  """
  num_queries = len(query_labels)
  query_labels_dev = devices.put(np.asarray(query_labels))
  start = devices.put(np.int32(0))
  blocks, local_rows = [], 0
  # Parameters and encodings are on the devices already: a block that uploads
  # anything from the host is an error.
  with jax.transfer_guard_host_to_device("disallow"):
    for first in range(0, num_queries, chunk_size):
      block, start = _scored_block(score, queries, items, query_labels_dev, item_labels, start,
                                   chunk=chunk_size, ks=tuple(ks),
                                   recall_levels=tuple(recall_levels), mesh=mesh)
      blocks.append(block)
      local_rows += _local_rows(block[0], first, num_queries)
  if jax.process_count() > 1:
    logging.info("streamed evaluation: process %d of %d scored %d of %d query rows",
                 jax.process_index(), jax.process_count(), local_rows, num_queries)
  return _summarize([_gather_to_host(b) for b in blocks], num_queries,
                    int(item_labels.shape[0]), tuple(ks), tuple(recall_levels))


def _local_rows(block_ap: jax.Array, first: int, num_queries: int) -> int:
  """Rows of a block (beginning at query `first`, padding excluded) whose results were
  computed on this process's devices (the shards it holds; replicated shards once)."""
  rows = set()
  for shard in block_ap.addressable_shards:
    start, stop, _ = shard.index[0].indices(block_ap.shape[0])
    rows.update(range(first + start, min(first + stop, num_queries)))
  return len(rows)


def _gather_to_host(tree):
  """Host copies of a block's results, from every process (an all-gather when the
  rows of the block are spread over several processes)."""
  leaves = jax.tree.leaves(tree)
  if all(leaf.is_fully_addressable for leaf in leaves):
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _summarize(blocks, num_queries: int, num_items: int, ks: tuple, levels: tuple
               ) -> RetrievalMetrics:
  """`RetrievalMetrics` of per-block `block_metrics` outputs (host arrays, the
  blocks' padding rows cut at `num_queries`)."""
  ap, ap_at, p_at, curve, nonfinite, score_range = (
      np.concatenate(part)[:num_queries] for part in zip(*blocks))
  if nonfinite.any():
    raise NonFiniteScoresError(int(nonfinite.sum()), num_queries * num_items,
                               int(np.flatnonzero(nonfinite)[0]))
  valid = ~np.isnan(ap)
  mean = lambda x: float(np.mean(x[valid])) if valid.any() else float("nan")
  return RetrievalMetrics(
      map=mean(ap),
      map_at={k: mean(ap_at[:, i]) for i, k in enumerate(ks)},
      precision_at={k: mean(p_at[:, i]) for i, k in enumerate(ks)},
      recall_levels=np.asarray(levels),
      precision_curve=curve[valid].mean(0) if valid.any() else np.full(len(levels), np.nan),
      average_precisions=ap,
      num_queries_without_relevant=int((~valid).sum()),
      score_range=score_range,
  )


def evenly_spaced(n: int, most: int | None) -> np.ndarray:
  """`[min(n, most)]` evenly spaced indices of n items (all of them if `most` is None)."""
  if most is None or most >= n:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))


def map_summary(metrics: dict[str, RetrievalMetrics], k: int | None = None) -> dict[str, float]:
  """`{"i2t", "t2i", "avg"}` MAP (or MAP@k) of `cross_modal_metrics`' output; avg is
  the mean of the two directions."""
  get = (lambda m: m.map) if k is None else (lambda m: m.map_at[k])
  i2t, t2i = get(metrics["i2t"]), get(metrics["t2i"])
  return {"i2t": i2t, "t2i": t2i, "avg": (i2t + t2i) / 2}


def cross_modal_map(scores, image_labels, text_labels) -> dict[str, float]:
  """`map_summary` of one `[num_images, num_texts]` score matrix, both directions."""
  scores = np.asarray(scores)
  return map_summary(cross_modal_metrics(scores, scores.T, image_labels, text_labels))


def top_k(scores, k: int) -> np.ndarray:
  """`[Q, N]` scores -> `[Q, k]` indices of the best items, ties by lower index."""
  return np.asarray(descending_order(jnp.asarray(scores))[:, :k])


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Area under the ROC curve of `scores` (higher = positive) for boolean labels.

  The Mann-Whitney statistic with average ranks for tied scores: the
  probability that a random positive outscores a random negative (ties count
  one half). Any shapes; `scores` and `positive` are flattened together.
  """
  scores, positive = np.asarray(scores, np.float64).ravel(), np.asarray(positive, bool).ravel()
  num_pos, num_neg = int(positive.sum()), int((~positive).sum())
  if num_pos == 0 or num_neg == 0:
    raise ValueError("ROC AUC needs both positive and negative examples")
  ranks = scipy.stats.rankdata(scores)  # Average ranks, 1-based.
  return float((ranks[positive].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))
