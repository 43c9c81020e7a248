"""Binary codes, a Hamming index and the hashing evaluation protocol, in JAX.

- `pack`: `[n, K]` codes (signs, 0/1 or bool) -> `[n, ceil(K/32)]` uint32 words.
- `hamming`: XOR and popcount of packed words: `[Q, W] x [N, W] -> [Q, N]` int32.
- `top_k`: the k nearest database items of each query, ties by database index,
  over database chunks (a running merge), so the database need not fit in one
  block; within a chunk, groups ranked by their minimum key replace a sort.
- `distance_counts`: per query and Hamming distance b = 0..K, how many database
  items (and how many relevant ones) lie at distance b; O(N) per query, no sort.
- Metrics (`hashing_metrics`), both ways of breaking Hamming ties:
  - deterministic: items at equal distance ranked by database index (lower
    first), as `cmjax.evaluation` does; MAP over the full ranking, MAP@k, PR
    curve;
  - tie-aware: the expected AP over all orders of the tied items (McSherry &
    Najork 2008), exact from the per-distance counts: within a group of n
    items, r relevant, preceded by N items of which R relevant, the item at
    position j is relevant with probability r/n, and then R + 1 + (j-1)(r-1)/(n-1)
    relevant items are expected at or before it, so the group adds
    (r/n) sum_j (R + 1 + (j-1)(r-1)/(n-1)) / (N + j), a harmonic-number sum;
  - precision within Hamming radius 2 (0 for a query that retrieves nothing).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from cmjax import evaluation

__all__ = [
    "codes_similarity",
    "distance_counts",
    "hamming",
    "hashing_metrics",
    "pack",
    "precision_within_radius",
    "tie_aware_average_precision",
    "top_k",
]


def pack(codes: np.ndarray) -> np.ndarray:
  """`[n, K]` codes (> 0 is a 1 bit) -> `[n, ceil(K / 32)]` uint32 words."""
  bits = np.asarray(codes) > 0
  n, k = bits.shape
  padded = np.zeros((n, -(-k // 32) * 32), bool)
  padded[:, :k] = bits
  as_bytes = np.packbits(padded.reshape(n, -1, 8), axis=-1, bitorder="little")[..., 0]
  return np.ascontiguousarray(as_bytes).view(np.uint32).reshape(n, -1)


@jax.jit
def hamming(query_words: jax.Array, database_words: jax.Array) -> jax.Array:
  """`[Q, W] x [N, W]` packed codes -> `[Q, N]` int32 Hamming distances."""
  xor = jnp.bitwise_xor(query_words[:, None, :], database_words[None, :, :])
  return jnp.sum(jax.lax.population_count(xor).astype(jnp.int32), axis=-1)


def _smallest_groups(keys: jax.Array, k: int, group: int) -> jax.Array:
  """`[Q, C]` distinct keys -> `[Q, k]` indices of the k groups (of `group`
  consecutive keys) with the smallest minima, which hold the k smallest keys.

  (Each of the k smallest keys lies in a group whose minimum is at most the
  k-th smallest key, and at most k groups have such a minimum.) Applied
  recursively to the minima while they are many, so `lax.top_k`, slow on
  CPU, only ever sees a few thousand values per query.
  """
  minima = jnp.min(keys.reshape(keys.shape[0], -1, group), axis=2)   # [Q, C / group]
  if minima.shape[1] < 4 * k * group:
    return jax.lax.top_k(-minima, k)[1]
  # Pad the minima to whole groups with the largest key (never selected first).
  minima = jnp.pad(minima, ((0, 0), (0, -minima.shape[1] % group)),
                   constant_values=np.iinfo(np.int32).max)
  outer = _smallest_groups(minima, k, group)                        # [Q, k] groups of minima
  candidates = (outer[:, :, None] * group + jnp.arange(group)).reshape(keys.shape[0], -1)
  picked = jax.lax.top_k(-jnp.take_along_axis(minima, candidates, axis=1), k)[1]
  return jnp.take_along_axis(candidates, picked, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "index_bits", "group"))
def _merge_top_k(best_keys, query_words, chunk_words, offset, valid, k, index_bits, group):
  """`[Q, k]` best keys merged with a chunk's; items at or past `valid` are padding."""
  distances = hamming(query_words, chunk_words)
  position = jnp.arange(chunk_words.shape[0], dtype=jnp.int32)
  # One int32 key that orders by distance, then by database index.
  keys = jnp.where(position < valid, (distances << index_bits) + offset + position,
                   np.iinfo(np.int32).max)
  if keys.shape[1] >= k * group:  # Keep only the groups that can hold the k best.
    groups = _smallest_groups(keys, k, group)
    take = (groups[:, :, None] * group + jnp.arange(group)).reshape(keys.shape[0], -1)
    keys = jnp.take_along_axis(keys, take, axis=1)
  merged = jnp.concatenate([best_keys, keys], axis=1)
  return -jax.lax.top_k(-merged, k)[0]


def top_k(query_words: np.ndarray, database_words: np.ndarray, k: int, bits: int,
          chunk_size: int = 1 << 20, query_block: int = 32,
          group: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest database items of each query, ties by lower database index.

  The database is scored `chunk_size` items at a time against `query_block`
  queries; the k best keys of a chunk are found without sorting it: groups
  of `group` items are ranked by their minimum, recursively
  (`_smallest_groups`), and only the k best groups' items are merged
  (reports/benchmark_hamming.md).

  Args:
    query_words, database_words: packed codes `[Q, W]`, `[N, W]`.
    k: neighbours per query (<= N).
    bits: code length K (distances are 0..K).
    chunk_size: database items scored at a time; memory is
      O(query_block * chunk_size) int32.
    query_block: queries scored together.
    group: items per group of the selection.

  Returns:
    `(distances, indices)`, both `[Q, k]` int32, nearest first.

  Raises:
    ValueError: a database too large for the int32 sort key (2^31 / (K + 1)
      items: 16.7M at 64 bits, 8.4M at 128).
  """
  n = database_words.shape[0]
  index_bits = 31 - int(bits).bit_length()
  if n > (1 << index_bits):
    raise ValueError(f"top_k handles up to {1 << index_bits} items at {bits} bits; got {n}")
  if not 0 < k <= n:
    raise ValueError(f"k must be in [1, {n}], got {k}")
  chunk = -(-min(chunk_size, n) // group) * group  # One shape: the last chunk is padded.
  num_q = query_words.shape[0]
  block = min(query_block, num_q)
  queries = np.pad(query_words, ((0, -num_q % block), (0, 0)))
  best = []
  for q_start in range(0, len(queries), block):
    query_chunk = jnp.asarray(queries[q_start:q_start + block])
    keys = jnp.full((block, k), np.iinfo(np.int32).max, jnp.int32)
    for start in range(0, n, chunk):
      words = database_words[start:start + chunk]
      padded = jnp.asarray(np.pad(words, ((0, chunk - len(words)), (0, 0))))
      keys = _merge_top_k(keys, query_chunk, padded, start, len(words), k, index_bits, group)
    best.append(np.asarray(keys))
  best = np.concatenate(best)[:num_q]
  return best >> index_bits, best & ((1 << index_bits) - 1)


@functools.partial(jax.jit, static_argnames=("bits",))
def _counts_block(query_words, chunk_words, relevant, bits):
  distances = hamming(query_words, chunk_words)
  count = jax.vmap(lambda d: jnp.bincount(d, length=bits + 1))(distances)
  count_relevant = jax.vmap(lambda d, r: jnp.bincount(d, weights=r, length=bits + 1))(
      distances, relevant.astype(jnp.float32))
  return count, count_relevant


def distance_counts(query_words: np.ndarray, database_words: np.ndarray,
                    query_labels: np.ndarray, database_labels: np.ndarray, bits: int,
                    chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """Per query, database items (and relevant ones) at each Hamming distance.

  Returns:
    `(count, count_relevant)`, both `[Q, bits + 1]` int64.
  """
  queries, query_labels = jnp.asarray(query_words), jnp.asarray(query_labels)
  count = np.zeros((queries.shape[0], bits + 1), np.int64)
  count_relevant = np.zeros_like(count)
  for start in range(0, database_words.shape[0], chunk_size):
    labels = jnp.asarray(database_labels[start:start + chunk_size])
    relevant = evaluation.relevance(query_labels, labels)
    c, r = _counts_block(queries, jnp.asarray(database_words[start:start + chunk_size]),
                         relevant, bits)
    count += np.asarray(c).astype(np.int64)
    count_relevant += np.rint(np.asarray(r)).astype(np.int64)
  return count, count_relevant


def _harmonic(m: np.ndarray) -> np.ndarray:
  """H(m) = sum_{i<=m} 1/i for real m >= 0."""
  return scipy.special.digamma(m + 1.0) + np.euler_gamma


def tie_aware_average_precision(count: np.ndarray, count_relevant: np.ndarray) -> np.ndarray:
  """`[Q]` expected AP over random orders of tied items (NaN: no relevant item)."""
  n = count.astype(np.float64)
  r = count_relevant.astype(np.float64)
  before_n = np.cumsum(n, 1) - n
  before_r = np.cumsum(r, 1) - r
  slope = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
  a = before_r + 1
  group_sum = n * slope + (a - slope * (1 + before_n)) * (_harmonic(before_n + n)
                                                          - _harmonic(before_n))
  contribution = np.where(r > 0, r / np.maximum(n, 1) * group_sum, 0.0)
  total = r.sum(1)
  return np.where(total > 0, contribution.sum(1) / np.maximum(total, 1), np.nan)


def precision_within_radius(count: np.ndarray, count_relevant: np.ndarray,
                            radius: int = 2) -> np.ndarray:
  """`[Q]` precision of the items within Hamming distance `radius` (0 if none)."""
  retrieved = count[:, :radius + 1].sum(1)
  hits = count_relevant[:, :radius + 1].sum(1)
  return np.where(retrieved > 0, hits / np.maximum(retrieved, 1), 0.0)


def hashing_metrics(query_codes: np.ndarray, database_codes: np.ndarray,
                    query_labels: np.ndarray, database_labels: np.ndarray,
                    ks: tuple[int, ...] = (50,)) -> dict:
  """One direction of the hashing protocol: queries rank the database by Hamming distance.

  Returns:
    `{"map", "map@k"..., "map_tie_aware", "precision_radius2", "pr_curve"}`; MAP
    means leave out queries without a relevant item (as `cmjax.evaluation`).
  """
  bits = query_codes.shape[1]
  q, db = pack(query_codes), pack(database_codes)
  db_jax = jnp.asarray(db)
  scores = lambda rows: -hamming(jnp.asarray(q[rows]), db_jax)  # int32: exact order.
  deterministic = evaluation.retrieval_metrics(scores, query_labels, database_labels, ks=ks)
  count, count_relevant = distance_counts(q, db, query_labels, database_labels, bits)
  valid = count_relevant.sum(1) > 0
  return {
      "map": deterministic.map,
      **{f"map@{k}": deterministic.map_at[k] for k in ks},
      "map_tie_aware": float(np.nanmean(tie_aware_average_precision(count, count_relevant))),
      "precision_radius2": float(precision_within_radius(count, count_relevant)[valid].mean()),
      "pr_curve": {"recall": deterministic.recall_levels,
                   "precision": deterministic.precision_curve},
  }


def codes_similarity(codes_fn):
  """A hashing method's test-vs-test similarity: -Hamming distance of its +-1 codes.

  `codes_fn(split) -> (image codes, text codes)`, both `[n, K]` +-1; the
  result maps a split to `[n_images, n_texts]` (exact in float32).
  """
  def similarity(split) -> np.ndarray:
    image, text = codes_fn(split)
    return -(image.shape[1] - image @ text.T) / 2
  return similarity
