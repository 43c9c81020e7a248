"""Input transforms fitted on the training split and applied to every split."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from cmjax.data import Dataset, Split, validation_split

__all__ = ["INPUT_TRANSFORMS", "Prepared", "fit_transform", "prepare"]

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


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A dataset ready for training: train/validation/test with transformed inputs.

  Attributes:
    train, val, test: splits whose `image` and `text` are transformed (fitted
      on `train`); `val` is carved from the training split (may be empty).
    raw: the same three splits untransformed (e.g. counts for RBMs).
  """

  train: Split
  val: Split
  test: Split
  raw: tuple[Split, Split, Split]


def prepare(dataset: Dataset, transform: InputTransform, validation_fraction: float,
            seed: int) -> Prepared:
  """Carves a stratified validation split (by `seed`) and applies `transform`."""
  train, val = validation_split(dataset.train, validation_fraction, seed)
  raw = (train, val, dataset.test)
  image, (image_val, image_te) = fit_transform(train.image, [val.image, dataset.test.image],
                                               transform)
  text, (text_val, text_te) = fit_transform(train.text, [val.text, dataset.test.text], transform)
  with_inputs = lambda s, x, z: dataclasses.replace(s, image=x, text=z)
  return Prepared(train=with_inputs(train, image, text), val=with_inputs(val, image_val, text_val),
                  test=with_inputs(dataset.test, image_te, text_te), raw=raw)
