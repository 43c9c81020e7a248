"""Retrieval metrics against a brute-force reference written with Python loops."""

import numpy as np
import pytest

from cmjax import evaluation


def _relevant(q, items):
  if np.ndim(q) == 0:
    return np.array([q == i for i in items])
  return np.array([np.dot(q, i) > 0 for i in items])


def brute_force(scores, query_labels, item_labels, k, levels):
  """Per-query AP, AP@k, P@k and interpolated PR, ties by item index."""
  out = []
  for q in range(scores.shape[0]):
    order = sorted(range(scores.shape[1]), key=lambda n: (-scores[q, n], n))
    rel = _relevant(query_labels[q], item_labels)[order]
    m = rel.sum()
    precisions = [rel[: j + 1].sum() / (j + 1) for j in range(len(rel))]
    recalls = [rel[: j + 1].sum() / max(m, 1) for j in range(len(rel))]
    ap = sum(p for p, r in zip(precisions, rel) if r) / m if m else np.nan
    top = rel[:k]
    ap_k = sum(p for p, r in zip(precisions[:k], top) if r) / top.sum() if top.sum() else 0.0
    p_k = top.sum() / k
    curve = [max([p for p, rc in zip(precisions, recalls) if rc >= lv - 1e-6], default=0)
             for lv in levels]
    out.append((ap, ap_k, p_k, curve))
  return out


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("chunk_size", [3, 64])
def test_against_brute_force_with_ties(multi_label, chunk_size):
  rng = np.random.default_rng(0)
  q, n, c, k = 11, 17, 4, 5
  scores = rng.integers(0, 3, size=(q, n)).astype(np.float32)  # Many ties.
  if multi_label:
    query_labels = (rng.random((q, c)) < 0.3).astype(np.float32)
    item_labels = (rng.random((n, c)) < 0.3).astype(np.float32)
    query_labels[0] = 0  # A query with no label: nothing relevant.
  else:
    query_labels = rng.integers(0, c, q)
    item_labels = rng.integers(0, c - 1, n)
    query_labels[0] = c - 1  # No item has this class.
  levels = (0.0, 0.25, 0.5, 0.75, 1.0)
  got = evaluation.retrieval_metrics(scores, query_labels, item_labels, ks=(k,),
                                     recall_levels=levels, chunk_size=chunk_size)
  ref = brute_force(scores, query_labels, item_labels, k, levels)
  ap = np.array([r[0] for r in ref])
  np.testing.assert_allclose(got.average_precisions, ap, rtol=1e-5)
  valid = ~np.isnan(ap)
  assert got.num_queries_without_relevant == (~valid).sum() >= 1
  np.testing.assert_allclose(got.map, ap[valid].mean(), rtol=1e-5)
  np.testing.assert_allclose(got.map_at[k], np.mean([r[1] for r in ref if ~np.isnan(r[0])]), rtol=1e-5)
  np.testing.assert_allclose(got.precision_at[k], np.mean([r[2] for r in ref if ~np.isnan(r[0])]), rtol=1e-5)
  np.testing.assert_allclose(got.precision_curve,
                             np.mean([r[3] for r in ref if ~np.isnan(r[0])], 0), rtol=1e-5)


def test_hand_computed_example():
  scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
  items = np.array([1, 0, 0, 0])
  # Query 0 (label 0): ranking 0,1,2,3 -> relevant at ranks 2,3,4.
  # Query 1 (label 1): ranking 3,2,1,0 -> relevant at rank 4.
  ap = evaluation.average_precision(scores, np.array([0, 1]), items)
  np.testing.assert_allclose(ap, [(1 / 2 + 2 / 3 + 3 / 4) / 3, 1 / 4], rtol=1e-6)
  assert evaluation.mean_average_precision(scores, np.array([0, 1]), items) == pytest.approx(
      ((1 / 2 + 2 / 3 + 3 / 4) / 3 + 1 / 4) / 2, rel=1e-6)
  # Ties: items 1 and 2 score equal; the lower index ranks first, deterministically.
  tie = np.array([[0.5, 0.5]])
  assert evaluation.mean_average_precision(tie, np.array([0]), np.array([1, 0])) == pytest.approx(0.5)
  assert evaluation.mean_average_precision(tie, np.array([0]), np.array([0, 1])) == pytest.approx(1.0)


def test_score_function_matches_matrix_and_bounds_memory():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(300, 8)), rng.normal(size=(500, 8))
  qa, qb = rng.integers(0, 5, 300), rng.integers(0, 5, 500)
  full = evaluation.retrieval_metrics(a @ b.T, qa, qb, chunk_size=300)
  seen = []

  def score_fn(rows):
    seen.append(len(rows))
    return a[rows] @ b.T

  streamed = evaluation.retrieval_metrics(score_fn, qa, qb, chunk_size=64)
  assert max(seen) == 64  # Only [64, 500] blocks were ever built.
  np.testing.assert_allclose(streamed.average_precisions, full.average_precisions, rtol=1e-6)
  np.testing.assert_allclose(streamed.precision_curve, full.precision_curve, rtol=1e-6)


def test_perfect_and_random_rankings():
  labels = np.repeat(np.arange(10), 20)
  perfect = (labels[:, None] == labels[None, :]).astype(np.float32)
  assert evaluation.mean_average_precision(perfect, labels, labels) == pytest.approx(1.0)
  rng = np.random.default_rng(0)
  random = evaluation.mean_average_precision(rng.random((200, 200)), labels, labels)
  assert 0.08 < random < 0.14  # Chance level for 10 balanced classes is about 0.1.


def test_errors():
  with pytest.raises(ValueError, match="expected \\[2, 3\\]"):
    evaluation.retrieval_metrics(np.zeros((2, 4)), np.zeros(2), np.zeros(3))
  with pytest.raises(FloatingPointError, match="non-finite scores"):
    evaluation.retrieval_metrics(np.full((2, 3), np.nan), np.zeros(2), np.zeros(3))


def test_ranking_keeps_the_precision_of_the_scores():
  # float64 scores 1e-12 apart: a float32 cast would tie them and the tie would
  # go to the lower index (the irrelevant item).
  scores = np.array([[1.0, 1.0 + 1e-12, 0.5]])
  labels_q, labels_db = np.array([1]), np.array([0, 1, 0])
  assert evaluation.mean_average_precision(scores, labels_q, labels_db) == 1.0
  assert evaluation.mean_average_precision(scores.astype(np.float32), labels_q, labels_db) == 0.5
  # Real ties stay ties (broken by index) in any precision.
  tied = np.array([[2.0, 2.0, 1.0]])
  assert evaluation.mean_average_precision(tied, labels_q, labels_db) == 0.5
  big = np.array([[2**30, 2**30 + 1, 0]], np.int64)  # Equal in float32.
  assert evaluation.mean_average_precision(big, labels_q, labels_db) == 1.0


@pytest.fixture
def keyed_ranking(monkeypatch):
  """The keyed ranking for databases of any size (by default small ones use the
  argsort); each test jits a new function, so that the setting is traced."""
  monkeypatch.setattr(evaluation, "MIN_KEYED_ITEMS", 1)


def _keyed_order(scores):
  import jax
  return jax.jit(lambda s: evaluation.descending_order(s))(scores)


def _argsort_order(scores):
  import jax.numpy as jnp
  return jnp.argsort(scores, axis=1, stable=True, descending=True).astype(jnp.int32)


def _score_cases():
  rng = np.random.default_rng(3)
  shape = (16, 700)
  wide = rng.integers(-2**31, 2**31 - 1, shape, dtype=np.int64).astype(np.int32)
  signed_zeros = np.where(rng.random(shape) < 0.5, 0.0, -0.0) * rng.choice([-1.0, 1.0], shape)
  return {
      "untied float32": rng.normal(size=shape).astype(np.float32),
      "tied float32": np.round(rng.normal(size=shape) * 3).astype(np.float32),
      "signed zeros": signed_zeros.astype(np.float32),
      "extreme float32": (rng.normal(size=shape) * 1e37).astype(np.float32),
      "tied rows beside wide rows": np.concatenate(
          [np.round(rng.normal(size=(8, 700))), rng.normal(size=(8, 700)) * 1e30]
      ).astype(np.float32),
      "hamming": -rng.integers(0, 65, shape).astype(np.int32),
      "wide int32": wide,
      "uint32": rng.integers(0, 2**32, shape, dtype=np.uint64).astype(np.uint32),
      "bool": rng.random(shape) < 0.3,
      "float16": rng.normal(size=shape).astype(np.float16),
  }


@pytest.mark.parametrize("case", sorted(_score_cases()))
def test_descending_order_is_the_stable_argsort(case, keyed_ranking):
  import jax.numpy as jnp
  import jax
  scores = jnp.asarray(_score_cases()[case])
  program = str(jax.make_jaxpr(lambda s: evaluation.descending_order(s))(scores))
  assert "cond" in program  # The keyed path (the argsort has no branch).
  got = np.asarray(_keyed_order(scores))
  np.testing.assert_array_equal(got, np.asarray(_argsort_order(scores)))


def test_descending_order_beyond_the_keyed_size(keyed_ranking):
  # Past MAX_KEYED_ITEMS a narrow key still sorts once; a wide one falls back.
  import jax.numpy as jnp
  rng = np.random.default_rng(4)
  n = evaluation.MAX_KEYED_ITEMS + 11
  for scores in (-rng.integers(0, 33, (2, n)).astype(np.int32),
                 rng.normal(size=(2, n)).astype(np.float32)):
    scores = jnp.asarray(scores)
    np.testing.assert_array_equal(np.asarray(_keyed_order(scores)),
                                  np.asarray(_argsort_order(scores)))


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("case", ["untied float32", "tied float32", "hamming"])
def test_block_metrics_bit_identical_to_the_argsort_path(monkeypatch, multi_label, case,
                                                        keyed_ranking):
  import jax
  scores = _score_cases()[case]
  rng = np.random.default_rng(5)
  q, n = scores.shape
  if multi_label:
    query_labels = (rng.random((q, 5)) < 0.3).astype(np.float32)
    item_labels = (rng.random((n, 5)) < 0.3).astype(np.float32)
  else:
    query_labels, item_labels = rng.integers(0, 5, q), rng.integers(0, 5, n)
  args = (scores, query_labels, item_labels, (5, 50), evaluation.DEFAULT_RECALL_LEVELS)
  # A new function each time, so that jit traces it anew (under the patch).
  run = lambda: jax.jit(lambda *a: evaluation.block_metrics.__wrapped__(*a),
                        static_argnums=(3, 4))(*args)
  got = run()
  traced = []
  monkeypatch.setattr(evaluation, "descending_order",
                      lambda s: traced.append(1) or _argsort_order(s))
  want = run()
  assert traced, "the reference path was not traced"
  for g, w in zip(jax.device_get(got), jax.device_get(want)):
    np.testing.assert_array_equal(g, w)
