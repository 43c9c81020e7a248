"""The one data interface of cmjax: paired image/text arrays with labels.

Every dataset loader returns a `Dataset` with a train and a test `Split`. A split
holds row-aligned arrays: row i of `image`, `text` and `labels` describe the same
image/text document. Labels are either integer class ids `[n]` (single label) or
multi-hot rows `[n, num_classes]` (two items are relevant when they share a label).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "validate_split",
    "validation_split",
]


class DataError(ValueError):
  """Bad input data. The message names the file, the field and the problem."""


@dataclasses.dataclass(frozen=True)
class Split:
  """Row-aligned image/text pairs.

  Attributes:
    image: `[n, ...]` image inputs (feature vectors `[n, d_image]` or pixels).
    text: `[n, ...]` text inputs (feature vectors `[n, d_text]` or token ids).
    labels: `[n]` integer class ids, or `[n, num_classes]` multi-hot rows.
    ids: optional `[n]` document ids (strings), for showing retrieved items.
  """

  image: np.ndarray
  text: np.ndarray
  labels: np.ndarray
  ids: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def take(self, index: np.ndarray) -> "Split":
    """Returns the rows `index` of every array."""
    return Split(
        image=self.image[index],
        text=self.text[index],
        labels=self.labels[index],
        ids=None if self.ids is None else self.ids[index],
    )

  @property
  def multi_label(self) -> bool:
    return self.labels.ndim == 2


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A cross-modal dataset: train and test splits plus metadata.

  Attributes:
    name: dataset name, e.g. "wikipedia".
    train: training pairs.
    test: test pairs (queries and database of the evaluation protocol).
    class_names: one name per class id.
    metadata: free-form facts about the load (source files, dropped pairs...).
  """

  name: str
  train: Split
  test: Split
  class_names: tuple[str, ...]
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _check_finite(array: np.ndarray, source: str, field: str) -> None:
  if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
    bad = np.argwhere(~np.isfinite(array))[0]
    raise DataError(
        f"{source}: field '{field}' has a non-finite value (NaN or Inf) at "
        f"index {tuple(int(i) for i in bad)}"
    )


def validate_split(split: Split, num_classes: int, source: str, name: str) -> Split:
  """Checks a split's shapes, values and labels; returns it with canonical dtypes.

  Args:
    split: the split to check.
    num_classes: labels must be ids in `[0, num_classes)` or rows of that width.
    source: the file the split came from, named in errors.
    name: the split's name ("train" or "test"), named in errors.

  Raises:
    DataError: on mismatched row counts, NaN/Inf, labels out of range.
  """
  n = split.labels.shape[0] if split.labels.ndim else -1
  for field, array in (("image", split.image), ("text", split.text)):
    if array.ndim < 2:
      raise DataError(
          f"{source}: field '{field}_{name}' must be 2-D [rows, dims] or more, "
          f"got shape {array.shape}"
      )
    if array.shape[0] != n:
      raise DataError(
          f"{source}: field '{field}_{name}' has {array.shape[0]} rows but "
          f"'label_{name}' has {n}: mismatched row counts"
      )
    _check_finite(array, source, f"{field}_{name}")
  labels = split.labels
  if labels.ndim == 1:
    if not np.issubdtype(labels.dtype, np.integer):
      if not np.all(np.mod(labels, 1) == 0):
        raise DataError(f"{source}: field 'label_{name}' has non-integer class ids")
    labels = labels.astype(np.int32)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise DataError(
          f"{source}: field 'label_{name}' has class ids in "
          f"[{labels.min()}, {labels.max()}], outside [0, {num_classes})"
      )
  elif labels.ndim == 2:
    if labels.shape[1] != num_classes:
      raise DataError(
          f"{source}: field 'label_{name}' has {labels.shape[1]} columns, "
          f"expected {num_classes}"
      )
    if not np.all((labels == 0) | (labels == 1)):
      raise DataError(f"{source}: field 'label_{name}' multi-hot rows must be 0/1")
    labels = labels.astype(np.float32)
  else:
    raise DataError(
        f"{source}: field 'label_{name}' must be [n] ids or [n, classes] "
        f"multi-hot, got shape {labels.shape}"
    )
  image = split.image.astype(np.float32) if split.image.dtype != np.uint8 else split.image
  return dataclasses.replace(split, image=image, text=split.text, labels=labels)


def validation_split(
    split: Split, fraction: float, seed: int
) -> tuple[Split, Split]:
  """Carves a stratified validation set out of a training split.

  Args:
    split: training pairs.
    fraction: share of each class that goes to validation (0 disables).
    seed: seed of the permutation; the same seed gives the same carve.

  Returns:
    `(train, validation)`, disjoint, together every row of `split`.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
  rng = np.random.default_rng(seed)
  n = len(split)
  if fraction == 0.0:
    return split, split.take(np.arange(0))
  strata = split.labels if split.labels.ndim == 1 else np.argmax(split.labels, 1)
  val = []
  for c in np.unique(strata):
    members = rng.permutation(np.flatnonzero(strata == c))
    val.append(members[: int(round(fraction * len(members)))])
  val_index = np.sort(np.concatenate(val))
  train_index = np.setdiff1d(np.arange(n), val_index)
  return split.take(train_index), split.take(val_index)
