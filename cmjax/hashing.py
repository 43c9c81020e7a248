"""Binary codes, a Hamming index and the hashing evaluation protocol, in JAX.

- `pack`: `[n, K]` codes (signs, 0/1 or bool) -> `[n, ceil(K/32)]` uint32 words.
- `hamming`: XOR and popcount of packed words: `[Q, W] x [N, W] -> [Q, N]` int32.
- `HammingIndex` (`top_k` for one search): the k nearest database items of
  each query, ties by database index, over database chunks laid out on the
  device once (a running merge), so the database need not fit in one block;
  within a chunk, groups ranked by their minimum distance and radix selects on
  the distance replace a sort.
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

from cmjax import devices, evaluation

__all__ = [
    "HammingIndex",
    "check_packed",
    "codes_score",
    "distance_counts",
    "hamming",
    "hashing_metrics",
    "pack",
    "pack_on_device",
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


def check_packed(words, bits: int, what: str) -> np.ndarray:
  """`words` as `pack` gives them for `bits`-bit codes, or a ValueError naming `what`:
  a 2-D uint32 array of `ceil(bits / 32)` words a row, no bit set past `bits`
  (codes packed at another length would be scored on part of their bits)."""
  if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) or bits < 1:
    raise ValueError(f"bits must be a positive integer, got {bits!r}")
  words = np.asarray(words)
  if words.ndim != 2 or words.dtype != np.uint32:
    raise ValueError(f"{what} must be packed codes, a 2-D uint32 array (cmjax.hashing.pack), "
                     f"got {words.dtype} of shape {words.shape}")
  width = -(-int(bits) // 32)
  if words.shape[1] != width:
    raise ValueError(f"{what} have {words.shape[1]} words a row; {bits}-bit codes pack into "
                     f"{width}")
  if bits % 32 and words.size and np.any(words[:, -1] >> np.uint32(bits % 32)):
    raise ValueError(f"{what} have bits set past bit {bits}: codes longer than bits={bits}")
  return words


def _word_major_hamming(query_words: jax.Array, words: jax.Array) -> jax.Array:
  """`[Q, W]` queries, `[W, Q or 1, M]` items stored word-major -> `[Q, M]`
  int32 distances: one XOR + popcount pass per word, vectorised along items."""
  return sum(jax.lax.population_count(query_words[:, w, None] ^ words[w]).astype(jnp.int32)
             for w in range(query_words.shape[1]))


@jax.jit
def hamming(query_words: jax.Array, database_words: jax.Array) -> jax.Array:
  """`[Q, W] x [N, W]` packed codes -> `[Q, N]` int32 Hamming distances."""
  return _word_major_hamming(query_words, database_words.T[:, None])


def _kth_smallest(values: jax.Array, k: int, largest: int) -> jax.Array:
  """`[Q, M]` int32 values in [0, largest] -> `[Q, 1]` the k-th smallest of each row.

  A radix select: the answer's bits are set from the top one down, each
  after counting the values at or below a candidate, so bit_length(largest)
  vectorised counting passes (7 for 64-bit codes) where `lax.top_k` sorts
  (and is slow on CPU).
  """
  def set_bit(i, threshold):
    step = jnp.left_shift(jnp.int32(1), int(largest).bit_length() - 1 - i)
    too_few = jnp.sum(values <= threshold + (step - 1), axis=1, keepdims=True) < k
    return jnp.where(too_few, threshold + step, threshold)

  return jax.lax.fori_loop(0, int(largest).bit_length(), set_bit,
                           jnp.zeros((values.shape[0], 1), jnp.int32))


def _running_count(mask: jax.Array, block: int = 32) -> jax.Array:
  """`[Q, M]` bool -> `[Q, M]` int32 inclusive running count along each row.

  `jnp.cumsum` is slow on CPU (a few ns per element); this one counts
  within blocks of `block` by a matrix product with a triangle of ones
  (exact: sums of at most `block` zeros and ones) and runs `cumsum` only
  over the block totals.
  """
  rows, m = mask.shape
  blocks = jnp.pad(mask.astype(jnp.float32), ((0, 0), (0, -m % block))).reshape(rows, -1, block)
  triangle = jnp.triu(jnp.ones((block, block), jnp.float32))
  within = jnp.matmul(blocks, triangle, precision=jax.lax.Precision.HIGHEST).astype(jnp.int32)
  before = jnp.cumsum(within[:, :, -1], axis=1) - within[:, :, -1]   # [Q, M / block]
  return (within + before[:, :, None]).reshape(rows, -1)[:, :m]


def _smallest(values: jax.Array, k: int, largest: int) -> jax.Array:
  """`[Q, M]` int32 values in [0, largest] -> `[Q, k]` positions of the k
  smallest, ties by lower position, in increasing position order."""
  kth = _kth_smallest(values, k, largest)
  below, at = values < kth, values == kth
  room = k - jnp.sum(below, axis=1, keepdims=True)
  chosen = below | (at & (_running_count(at) <= room))   # Exactly k per row.
  # The j-th chosen position is where the running count first reaches j.
  ranks = jnp.arange(1, k + 1, dtype=jnp.int32)
  return jax.vmap(lambda count: jnp.searchsorted(count, ranks, side="left", method="scan"))(
      _running_count(chosen)).astype(jnp.int32)


def _smallest_groups(values: jax.Array, k: int, group: int, largest: int) -> jax.Array:
  """`[Q, C]` values in [0, largest] -> `[Q, k]` indices of the k groups (of
  `group` consecutive values) with the smallest minima, ties by lower group,
  in increasing order: they hold the k smallest values, ties by position.

  (If one of those lay in another group, each chosen group would hold a
  value that precedes it: smaller, or equal at a lower position; that makes
  k values before it.) Applied recursively to the minima while they are
  many, so the selection only ever sees a few thousand values per query.
  """
  minima = jnp.min(values.reshape(values.shape[0], -1, group), axis=2)   # [Q, C / group]
  if minima.shape[1] < 4 * k * group:
    return _smallest(minima, k, largest)
  # Pad the minima to whole groups with the largest value (after every real one).
  minima = jnp.pad(minima, ((0, 0), (0, -minima.shape[1] % group)), constant_values=largest)
  outer = _smallest_groups(minima, k, group, largest)               # [Q, k] groups of minima
  candidates = (outer[:, :, None] * group + jnp.arange(group)).reshape(values.shape[0], -1)
  picked = _smallest(jnp.take_along_axis(minima, candidates, axis=1), k, largest)
  return jnp.take_along_axis(candidates, picked, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "bits", "group"))
def _merge_chunk(best_distances, best_indices, queries, chunk, offset, valid, k, bits, group):
  """Merges a chunk into every query block's k nearest items.

  The best items are kept in database-index order, and every selection
  breaks ties by position, so ties fall to the lower database index.

  Args:
    best_distances, best_indices: `[B, q, k]` the k nearest so far of B
      blocks of q queries, in index order.
    queries: `[B, q, W]` packed queries.
    chunk: `[W, C]` packed items, word-major, C a multiple of `group`;
      items at or past `valid` are padding.
    offset: the chunk's first database index.

  Returns:
    The merged `(best_distances, best_indices)`, `[B, q, k]` each, in index order.
  """
  padding = bits + 1
  position = jnp.arange(chunk.shape[1], dtype=jnp.int32)[None]

  def merge_block(block):
    best_d, best_i, query_words = block
    # Only reduced to group minima, so XLA fuses the distances into the
    # reduction and never stores them ([q, C] int32 cost more than computing them).
    distances = jnp.where(position < valid, _word_major_hamming(query_words, chunk[:, None]),
                          padding)
    take = jnp.broadcast_to(position, distances.shape)
    if chunk.shape[1] >= k * group:  # Score the k best groups' items again, and only them.
      groups = _smallest_groups(distances, k, group, padding)
      take = (groups[:, :, None] * group + jnp.arange(group)).reshape(len(query_words), -1)
      distances = jnp.where(take < valid, _word_major_hamming(query_words, chunk[:, take]),
                            padding)
    merged_d = jnp.concatenate([best_d, distances], axis=1)
    merged_i = jnp.concatenate([best_i, offset + take], axis=1)
    picked = _smallest(merged_d, k, padding)
    return (jnp.take_along_axis(merged_d, picked, axis=1),
            jnp.take_along_axis(merged_i, picked, axis=1))

  return jax.lax.map(merge_block, (best_distances, best_indices, queries))


class HammingIndex:
  """A database of packed codes laid out on the device once, for k-nearest searches.

  The database is split into chunks of `chunk_size` items, each padded to a
  multiple of `group`, transposed word-major and placed on the default device
  when the index is built; `search` scores blocks of queries against the
  chunks (`_merge_chunk`): groups of `group` items are ranked by their minimum
  distance, recursively (`_smallest_groups`), then only the k best groups'
  items are scored again and merged; every selection is a radix select on the
  distance (reports/benchmark_hamming.md). No distance matrix is stored.

  Attributes:
    bits: code length K (distances are 0..K).
    size: database items N.
  """

  def __init__(self, database_words: np.ndarray, bits: int, chunk_size: int = 1 << 20,
               group: int = 32):
    """Args:
      database_words: packed codes `[N, W]` (`pack`).
      bits: code length K.
      chunk_size: database items scored at a time.
      group: items per group of the selection.
    """
    database_words = check_packed(database_words, bits, "database codes")
    self.bits, self.size, self.group = int(bits), database_words.shape[0], group
    if self.size == 0:
      raise ValueError("an empty database")
    self._chunk = -(-min(chunk_size, self.size) // group) * group  # The last one is padded.
    # XLA:CPU's pass over one-word codes measured about 2x slower than over two:
    # on CPU they get a zero second word (no distance changes).
    self._extra_word = max(0, 2 - database_words.shape[1]) if _on_cpu() else 0
    self._chunks = []
    for start in range(0, self.size, self._chunk):
      words = database_words[start:start + self._chunk]
      word_major = np.pad(words, ((0, self._chunk - len(words)), (0, self._extra_word))).T
      self._chunks.append((start, len(words), jax.device_put(np.ascontiguousarray(word_major))))
    jax.block_until_ready([chunk for _, _, chunk in self._chunks])  # Built = on the device.

  def query_block(self, num_queries: int, query_block: int | None = None) -> int:
    """Queries scored together: `query_block` if given, else 32 on CPU and 256 on
    accelerators, at most `num_queries`."""
    return min(query_block or (32 if _on_cpu() else 256), num_queries)

  def search(self, query_words: np.ndarray, k: int,
             query_block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database items of each query, ties by lower database index.

    Args:
      query_words: packed queries `[Q, W]`.
      k: neighbours per query (<= N).
      query_block: queries scored together (default: 32 on CPU, 256 on
        accelerators); memory is O(query_block * chunk_size / group) int32.

    Returns:
      `(distances, indices)`, both `[Q, k]` int32, nearest first.
    """
    if not 0 < k <= self.size:
      raise ValueError(f"k must be in [1, {self.size}], got {k}")
    query_words = check_packed(query_words, self.bits, "query codes")
    num_q = query_words.shape[0]
    block = self.query_block(num_q, query_block)
    queries = np.pad(query_words, ((0, -num_q % block), (0, self._extra_word)))
    queries = jnp.asarray(queries.reshape(-1, block, queries.shape[1]))
    distances = jnp.full(queries.shape[:2] + (k,), self.bits + 1, jnp.int32)
    indices = jnp.zeros_like(distances)
    for start, valid, chunk in self._chunks:
      distances, indices = _merge_chunk(distances, indices, queries, chunk, start, valid, k,
                                        self.bits, self.group)
    distances = np.asarray(distances).reshape(-1, k)[:num_q]
    indices = np.asarray(indices).reshape(-1, k)[:num_q]
    order = np.argsort(distances, axis=1, kind="stable")  # Index order within a distance.
    return np.take_along_axis(distances, order, 1), np.take_along_axis(indices, order, 1)


def _on_cpu() -> bool:
  return jax.default_backend() == "cpu"


def top_k(query_words: np.ndarray, database_words: np.ndarray, k: int, bits: int,
          chunk_size: int = 1 << 20, query_block: int | None = None,
          group: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest database items of each query, ties by lower database index:
  a one-off `HammingIndex(database_words, bits, chunk_size, group).search(...)`
  (build the index once to search the same database again).

  Returns:
    `(distances, indices)`, both `[Q, k]` int32, nearest first.
  """
  return HammingIndex(database_words, bits, chunk_size, group).search(query_words, k,
                                                                       query_block)


@functools.partial(jax.jit, static_argnames=("bits", "scatter"))
def _counts_block(query_words, chunk_words, relevant, bits, scatter):
  """`[Q, W]` queries, `[C, W]` items, `[Q, C]` bool relevance ->
  `(count, count_relevant)`, `[Q, bits + 1]` int32 each.

  On CPU one bincount over bins (query, distance, relevant) gives both
  counts (two vmapped bincounts, one per count, cost 2.6x as much). Off CPU,
  where a bincount is a contended scatter of atomic adds, each distance's
  count is a comparison summed over the items (O(Q C K), no scatter).
  """
  distances = hamming(query_words, chunk_words)  # [Q, C]
  if not scatter:
    at = distances[:, :, None] == jnp.arange(bits + 1, dtype=jnp.int32)  # [Q, C, K + 1]
    return (jnp.sum(at, axis=1, dtype=jnp.int32),
            jnp.sum(at & relevant[:, :, None], axis=1, dtype=jnp.int32))
  bins = 2 * (bits + 1)
  keys = (distances * 2 + relevant.astype(jnp.int32)
          + bins * jnp.arange(query_words.shape[0], dtype=jnp.int32)[:, None])
  both = jnp.bincount(keys.ravel(), length=bins * query_words.shape[0]).reshape(-1, bits + 1, 2)
  return both.sum(axis=2), both[:, :, 1]


def distance_counts(query_words: np.ndarray, database_words: np.ndarray,
                    query_labels: np.ndarray, database_labels: np.ndarray, bits: int,
                    chunk_size: int = 65536,
                    scatter: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Per query, database items (and relevant ones) at each Hamming distance.

  `scatter`: count with one bincount (default on CPU) or with comparisons
  (default elsewhere; see `_counts_block`); both give the same counts.

  Returns:
    `(count, count_relevant)`, both `[Q, bits + 1]` int64.
  """
  query_words = check_packed(query_words, bits, "query codes")
  database_words = check_packed(database_words, bits, "database codes")
  queries, query_labels = devices.put((query_words, np.asarray(query_labels)))
  count = np.zeros((queries.shape[0], bits + 1), np.int64)
  count_relevant = np.zeros_like(count)
  for start in range(0, database_words.shape[0], chunk_size):
    labels = devices.put(np.asarray(database_labels[start:start + chunk_size]))
    relevant = evaluation.relevance(query_labels, labels)
    c, r = _counts_block(queries, devices.put(database_words[start:start + chunk_size]),
                         relevant, bits, _on_cpu() if scatter is None else scatter)
    count += np.asarray(c).astype(np.int64)
    count_relevant += np.asarray(r).astype(np.int64)
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


def hashing_metrics(query_codes: jax.Array, database_codes: jax.Array,
                    query_labels: np.ndarray, database_labels: np.ndarray,
                    ks: tuple[int, ...] = (50,)) -> dict:
  """One direction of the hashing protocol: queries rank the database by Hamming distance.

  The codes (`[n, K]`, device or host) are packed on device; the ranking is
  streamed over blocks of queries there (`cmjax.evaluation.streamed_metrics`).

  Returns:
    `{"map", "map@k"..., "map_tie_aware", "precision_radius2", "pr_curve"}`; MAP
    means leave out queries without a relevant item (as `cmjax.evaluation`).
  """
  bits = query_codes.shape[1]
  q, db = pack_on_device(devices.put(query_codes)), pack_on_device(devices.put(database_codes))
  deterministic = evaluation.streamed_metrics(_minus_hamming, q, db, query_labels,
                                              devices.put(np.asarray(database_labels)), ks=ks)
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


def _minus_hamming(query_words: jax.Array, database_words: jax.Array) -> jax.Array:
  """Scores of packed codes: minus their Hamming distances (int32: an exact order)."""
  return -hamming(query_words, database_words)


@jax.jit
def pack_on_device(codes: jax.Array) -> jax.Array:
  """`pack` on device: `[n, K]` codes (> 0 is a 1 bit) -> `[n, ceil(K / 32)]` uint32."""
  n, k = codes.shape
  bits = jnp.pad(codes > 0, ((0, 0), (0, -k % 32))).reshape(n, -1, 32).astype(jnp.uint32)
  return jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def codes_score(image_codes: jax.Array, text_codes: jax.Array) -> jax.Array:
  """`[a, K] x [b, K]` +-1 codes -> `[a, b]` minus their Hamming distances (a block
  scorer, `cmjax.runner.ScoreFn`), exact: the products are summed in float32
  at full precision (not TF32 or bfloat16), integers up to 2^24."""
  inner = jnp.matmul(image_codes, text_codes.T, precision=jax.lax.Precision.HIGHEST)
  return -(image_codes.shape[1] - inner) / 2
