"""The Hamming index and the hashing metrics against brute-force references."""

import itertools

import jax
import numpy as np
import pytest

from cmjax import evaluation, hashing


def _codes(n, bits, seed):
  return np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, bits))


def _distances(q, db):
  """Hamming distances by counting differing signs: `[Q, N]`."""
  return (q[:, None, :] != db[None, :, :]).sum(-1)


def _assert_brute_force_top_k(q, db, k, distances, indices):
  """`top_k`'s output equals a full sort by distance, then database index."""
  full = _distances(q, db)
  expected = np.lexsort((np.broadcast_to(np.arange(len(db)), full.shape), full), axis=1)[:, :k]
  np.testing.assert_array_equal(indices, expected)
  np.testing.assert_array_equal(distances, np.take_along_axis(full, expected, 1))


@pytest.mark.parametrize("bits", [16, 32, 64, 128])
def test_packed_hamming_matches_counting_differences(bits):
  q, db = _codes(7, bits, 0), _codes(50, bits, 1)
  got = np.asarray(hashing.hamming(hashing.pack(q), hashing.pack(db)))
  np.testing.assert_array_equal(got, _distances(q, db))


def test_top_k_over_chunks_orders_by_distance_then_index():
  bits = 16
  q, db = _codes(5, bits, 2), _codes(300, bits, 3)
  db[17] = db[200] = q[0]  # Two exact matches: the lower index first.
  distances, indices = hashing.top_k(hashing.pack(q), hashing.pack(db), 20, bits, chunk_size=64)
  _assert_brute_force_top_k(q, db, 20, distances, indices)
  assert list(indices[0, :2]) == [17, 200]


@pytest.mark.parametrize("k, group, chunk_size",
                         [(3, 2, 256), (7, 4, 130), (1, 8, 1000), (2, 4, 700), (20, 4, 8)])
def test_top_k_group_selection_matches_brute_force(k, group, chunk_size):
  # Groups ranked by their minimum, recursively (k = 3, group 2, 256 items: four
  # levels), padded last chunks and query blocks, chunks smaller than k, with
  # many ties at 16 bits.
  bits = 16
  q, db = _codes(37, bits, 4), _codes(700, bits, 5)
  distances, indices = hashing.top_k(hashing.pack(q), hashing.pack(db), k, bits,
                                     chunk_size=chunk_size, query_block=8, group=group)
  _assert_brute_force_top_k(q, db, k, distances, indices)


def test_hamming_index_is_laid_out_once_and_searched_again():
  bits = 64
  q, db = _codes(11, bits, 6), _codes(500, bits, 7)
  index = hashing.HammingIndex(hashing.pack(db), bits, chunk_size=128, group=4)
  chunks = list(index._chunks)  # pylint: disable=protected-access
  assert len(chunks) == 4 and all(isinstance(c, jax.Array) for _, _, c in chunks)
  for k in (1, 9):
    distances, indices = index.search(hashing.pack(q), k, query_block=4)
    _assert_brute_force_top_k(q, db, k, distances, indices)
  assert index._chunks == chunks  # Searches reuse the device arrays.  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="k must be in"):
    index.search(hashing.pack(q), 501)


@pytest.mark.parametrize("shape", [(3, 1000), (2, 70_001), (1, 5)])
def test_running_count_equals_cumsum(shape):
  # Blocks of 32 counted by a matrix product, block totals by an int32 cumsum:
  # exact for long rows and for rows that are not whole blocks.
  mask = np.random.default_rng(7).random(shape) < 0.7
  got = np.asarray(hashing._running_count(mask))  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, np.cumsum(mask, axis=1))


@pytest.mark.parametrize("scatter", [True, False])  # CPU's bincount; accelerators' sums.
def test_distance_counts_match_brute_force_over_chunks(scatter):
  bits = 32
  rng = np.random.default_rng(8)
  q, db = _codes(9, bits, 9), _codes(250, bits, 10)
  q_labels, db_labels = rng.random((9, 5)) < 0.3, rng.random((250, 5)) < 0.3  # Multi-label.
  count, count_relevant = hashing.distance_counts(hashing.pack(q), hashing.pack(db), q_labels,
                                                  db_labels, bits, chunk_size=64,
                                                  scatter=scatter)
  distances = _distances(q, db)
  relevant = (q_labels.astype(int) @ db_labels.T.astype(int)) > 0
  for i in range(9):
    np.testing.assert_array_equal(count[i], np.bincount(distances[i], minlength=bits + 1))
    np.testing.assert_array_equal(
        count_relevant[i], np.bincount(distances[i][relevant[i]], minlength=bits + 1))


def _expected_ap_brute_force(distances, relevant):
  """Mean AP over every order of the tied items (small cases only)."""
  groups = [np.flatnonzero(distances == d) for d in np.unique(distances)]
  aps = []
  for orders in itertools.product(*[itertools.permutations(g) for g in groups]):
    ranking = np.concatenate(orders)
    rel = relevant[ranking]
    hits = np.cumsum(rel)
    aps.append(np.sum(hits / np.arange(1, len(rel) + 1) * rel) / rel.sum())
  return np.mean(aps)


def test_tie_aware_ap_is_the_mean_over_tie_orders():
  rng = np.random.default_rng(4)
  for _ in range(5):
    distances = rng.integers(0, 3, 7)
    relevant = rng.random(7) < 0.5
    relevant[0] = True
    count = np.bincount(distances, minlength=5)[None]
    count_relevant = np.bincount(distances, weights=relevant, minlength=5)[None].astype(int)
    got = hashing.tie_aware_average_precision(count, count_relevant)[0]
    assert got == pytest.approx(_expected_ap_brute_force(distances, relevant), rel=1e-9)


def test_hashing_metrics_match_the_score_evaluation_and_radius_precision():
  bits = 16
  q, db = _codes(30, bits, 5), _codes(200, bits, 6)
  q_labels, db_labels = np.arange(30) % 4, np.arange(200) % 4
  m = hashing.hashing_metrics(q, db, q_labels, db_labels)
  distances = _distances(q, db)
  assert m["map"] == pytest.approx(
      evaluation.mean_average_precision(-distances, q_labels, db_labels), abs=1e-6)
  within = distances <= 2
  hits = (within & (q_labels[:, None] == db_labels[None, :])).sum(1)
  precision = np.where(within.sum(1) > 0, hits / np.maximum(within.sum(1), 1), 0.0)
  assert m["precision_radius2"] == pytest.approx(precision.mean())
  assert 0 < m["map_tie_aware"] < 1


def test_packed_codes_of_another_width_or_length_are_refused():
  db64, q64 = hashing.pack(_codes(40, 64, 11)), hashing.pack(_codes(3, 64, 12))
  index = hashing.HammingIndex(db64, 64)
  with pytest.raises(ValueError, match="query codes have 1 words a row; 64-bit codes pack into 2"):
    index.search(q64[:, :1], 5)  # Queries packed to one word against two.
  with pytest.raises(ValueError, match="database codes have 2 words a row; 8-bit codes pack into 1"):
    hashing.HammingIndex(db64, 8)
  with pytest.raises(ValueError, match="bits set past bit 40"):
    hashing.top_k(q64, db64, 5, bits=40)
  with pytest.raises(ValueError, match="2-D uint32"):
    index.search(q64.astype(np.int64), 5)
  with pytest.raises(ValueError, match="bits must be a positive integer"):
    hashing.distance_counts(q64, db64, np.zeros(3), np.zeros(40), bits=64.0)
  # The same codes at their own length are searched.
  assert index.search(q64, 5)[0].shape == (3, 5)
