"""Input transforms fitted on the training split and applied to every split."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["INPUT_TRANSFORMS", "fit_transform"]

INPUT_TRANSFORMS = ("none", "standardize", "sqrt_standardize", "l2")
InputTransform = Literal["none", "standardize", "sqrt_standardize", "l2"]


def fit_transform(train: np.ndarray, others: list[np.ndarray], kind: InputTransform):
  """Fits `kind` on `[n, d]` train features; returns transformed `(train, others)`.

  - `standardize`: zero mean, unit variance per dimension (train statistics).
  - `sqrt_standardize`: element-wise square root first (the Hellinger map, for
    histograms such as SIFT bags of words and topic proportions), then standardise.
  - `l2`: each row scaled to unit L2 norm.
  """
  if kind not in INPUT_TRANSFORMS:
    raise ValueError(f"unknown input transform {kind!r}; choose from {INPUT_TRANSFORMS}")
  if kind == "none":
    return train, others
  if kind == "l2":
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return unit(train), [unit(x) for x in others]
  if kind == "sqrt_standardize":
    root = lambda x: np.sqrt(np.maximum(x, 0))
    train, others = root(train), [root(x) for x in others]
  mean, std = train.mean(0), train.std(0) + 1e-6
  scale = lambda x: ((x - mean) / std).astype(np.float32)
  return scale(train), [scale(x) for x in others]
