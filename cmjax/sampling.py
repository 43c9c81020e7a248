"""Device-side sampling of cross-modal pairs and triplets by label.

All functions are pure and jittable. Labels are multi-hot `[n, C]` float rows
(single-label ids are turned into one-hot rows by `label_index`), so the same
code serves single- and multi-label data: two items are relevant when they
share a label.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LabelIndex",
    "label_index",
    "multi_hot",
    "sample_negatives",
    "sample_pairs",
    "sample_positives",
    "sample_rows",
]


class LabelIndex(NamedTuple):
  """Which items carry which label, as flat arrays for device-side sampling.

  Attributes:
    labels: `[n, C]` multi-hot float labels.
    members: `[sum_c count_c]` item indices grouped by label.
    offsets: `[C]` start of each label's group in `members`.
    counts: `[C]` size of each label's group.
  """

  labels: jax.Array
  members: jax.Array
  offsets: jax.Array
  counts: jax.Array


def multi_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """`[n]` ids or `[n, C]` rows -> `[n, C]` float32 multi-hot rows."""
  labels = np.asarray(labels)
  if labels.ndim == 2:
    return labels.astype(np.float32)
  return np.eye(num_classes, dtype=np.float32)[labels]


def label_index(labels: np.ndarray, num_classes: int) -> LabelIndex:
  """Builds the `LabelIndex` of `[n]` ids or `[n, C]` multi-hot labels (host side)."""
  rows = multi_hot(labels, num_classes)
  groups = [np.flatnonzero(rows[:, c]) for c in range(num_classes)]
  counts = np.array([len(g) for g in groups], np.int32)
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
  return LabelIndex(
      labels=jnp.asarray(rows),
      members=jnp.asarray(np.concatenate(groups).astype(np.int32)),
      offsets=jnp.asarray(offsets),
      counts=jnp.asarray(counts),
  )


def sample_positives(rng: jax.Array, anchor_labels: jax.Array, index: LabelIndex) -> jax.Array:
  """For each anchor, a random item sharing one of its labels.

  Args:
    rng: key.
    anchor_labels: `[B, C]` multi-hot labels of the anchors (each with >= 1 label).
    index: the database's label index.

  Returns:
    `[B]` item indices: a label drawn uniformly among the anchor's, then an
    item drawn uniformly among that label's members.
  """
  label_rng, member_rng = jax.random.split(rng)
  usable = anchor_labels * (index.counts > 0)
  label = jax.random.categorical(label_rng, jnp.log(usable))
  count = index.counts[label]
  offset = jax.random.randint(member_rng, label.shape, 0, jnp.iinfo(jnp.int32).max) % count
  return index.members[index.offsets[label] + offset]


def sample_negatives(
    rng: jax.Array, anchor_labels: jax.Array, index: LabelIndex, num_candidates: int
) -> tuple[jax.Array, jax.Array]:
  """For each anchor, `num_candidates` random items and which are irrelevant.

  Returns:
    `(items [B, K], irrelevant [B, K] bool)`. A loss uses the irrelevant ones
    (the first for random negatives, the closest for hard negatives); with 10
    balanced classes and K = 8, an anchor has no irrelevant candidate with
    probability 1e-8, and then contributes nothing.
  """
  n = index.labels.shape[0]
  items = jax.random.randint(rng, (anchor_labels.shape[0], num_candidates), 0, n)
  shared = jnp.einsum("bc,bkc->bk", anchor_labels, index.labels[items])
  return items, shared == 0


def sample_rows(rng: jax.Array, data: dict, batch_size: int) -> dict:
  """The same `batch_size` random rows (with replacement) of every array in `data`."""
  n = next(iter(data.values())).shape[0]
  rows = jax.random.randint(rng, (batch_size,), 0, n)
  return {key: value[rows] for key, value in data.items()}


def sample_pairs(
    rng: jax.Array, batch_size: int, index: LabelIndex, positive_fraction: float = 0.5
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Image/text pairs with about `positive_fraction` relevant ones.

  Anchors are uniform over the items; the first `positive_fraction` of the
  batch gets a relevant partner, the rest an irrelevant one (from 8 candidates).

  Returns:
    `(anchor [B], partner [B], relevant [B] float)` with the true relevance.
  """
  anchor_rng, pos_rng, neg_rng = jax.random.split(rng, 3)
  n = index.labels.shape[0]
  anchor = jax.random.randint(anchor_rng, (batch_size,), 0, n)
  anchor_labels = index.labels[anchor]
  positive = sample_positives(pos_rng, anchor_labels, index)
  candidates, irrelevant = sample_negatives(neg_rng, anchor_labels, index, 8)
  negative = jnp.take_along_axis(candidates, jnp.argmax(irrelevant, 1)[:, None], 1)[:, 0]
  num_positive = int(round(positive_fraction * batch_size))
  partner = jnp.where(jnp.arange(batch_size) < num_positive, positive, negative)
  relevant = (jnp.sum(anchor_labels * index.labels[partner], 1) > 0).astype(jnp.float32)
  return anchor, partner, relevant
