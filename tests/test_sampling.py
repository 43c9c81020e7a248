"""Device-side pair and triplet sampling by label."""

import jax
import numpy as np

from cmjax import sampling


def test_positives_share_a_label_single_and_multi():
  labels = np.random.default_rng(0).integers(0, 5, 200)
  index = sampling.label_index(labels, 5)
  anchors = np.arange(200)
  pos = np.asarray(sampling.sample_positives(jax.random.key(0), index.labels[anchors], index))
  np.testing.assert_array_equal(labels[pos], labels[anchors])
  multi = (np.random.default_rng(1).random((200, 6)) < 0.3).astype(np.float32)
  multi[:, 0] = np.maximum(multi[:, 0], multi.sum(1) == 0)  # Every item has a label.
  index = sampling.label_index(multi, 6)
  pos = np.asarray(sampling.sample_positives(jax.random.key(1), index.labels, index))
  assert np.all((multi * multi[pos]).sum(1) > 0)


def test_negatives_flags_and_pairs_balance():
  labels = np.repeat(np.arange(10), 30)
  index = sampling.label_index(labels, 10)
  items, irrelevant = sampling.sample_negatives(jax.random.key(0), index.labels[:50], index, 8)
  np.testing.assert_array_equal(np.asarray(irrelevant),
                                labels[np.asarray(items)] != labels[:50, None])
  anchor, partner, relevant = map(np.asarray, sampling.sample_pairs(jax.random.key(1), 1000, index))
  np.testing.assert_array_equal(relevant, labels[anchor] == labels[partner])
  assert relevant[:500].all() and relevant[500:].sum() == 0  # 1:1 positives:negatives.
