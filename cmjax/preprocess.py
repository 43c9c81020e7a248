"""Input transforms fitted on the training split and applied to every split."""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import numpy as np

from cmjax.data import Dataset, Split, validation_split

__all__ = ["INPUT_TRANSFORMS", "Prepared", "fit_transform", "make_transform", "prepare"]

INPUT_TRANSFORMS = ("none", "standardize", "sqrt_standardize", "l2")
InputTransform = Literal["none", "standardize", "sqrt_standardize", "l2"]


def make_transform(train: np.ndarray, kind: InputTransform) -> Callable[[np.ndarray], np.ndarray]:
  """Fits `kind` on `[n, d]` train features; returns the map `[m, d] -> [m, d]`.

  - `none`: the identity.
  - `standardize`: zero mean, unit variance per dimension (train statistics).
  - `sqrt_standardize`: element-wise square root first (the Hellinger map, for
    histograms such as SIFT bags of words and topic proportions), then standardise.
  - `l2`: each row scaled to unit L2 norm.
  """
  if kind not in INPUT_TRANSFORMS:
    raise ValueError(f"unknown input transform {kind!r}; choose from {INPUT_TRANSFORMS}")
  if kind == "none":
    return lambda x: x
  if kind == "l2":
    return lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  root = (lambda x: np.sqrt(np.maximum(x, 0))) if kind == "sqrt_standardize" else (lambda x: x)
  fitted = root(train)
  mean, std = fitted.mean(0), fitted.std(0) + 1e-6
  return lambda x: ((root(x) - mean) / std).astype(np.float32)


def fit_transform(train: np.ndarray, others: list[np.ndarray], kind: InputTransform):
  """Fits `kind` on `[n, d]` train features; returns transformed `(train, others)`."""
  transform = make_transform(train, kind)
  return transform(train), [transform(x) for x in others]


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A dataset ready for training: train/validation/test with transformed inputs.

  Attributes:
    train, val, test: splits whose `image` and `text` are transformed (fitted
      on `train`); `val` is carved from the training split (may be empty).
    raw: the same three splits untransformed (e.g. counts for RBMs).
    transform: the fitted transform of any untransformed split (new items).
  """

  train: Split
  val: Split
  test: Split
  raw: tuple[Split, Split, Split]
  transform: Callable[[Split], Split]


def prepare(dataset: Dataset, transform: InputTransform, validation_fraction: float,
            seed: int, text_transform: InputTransform | None = None) -> Prepared:
  """Carves a stratified validation split (by `seed`) and applies `transform` (to the
  texts `text_transform`, if given)."""
  train, val = validation_split(dataset.train, validation_fraction, seed)
  image_map = make_transform(train.image, transform)
  text_map = make_transform(train.text, transform if text_transform is None else text_transform)
  apply = lambda s: dataclasses.replace(s, image=image_map(s.image), text=text_map(s.text))
  return Prepared(train=apply(train), val=apply(val), test=apply(dataset.test),
                  raw=(train, val, dataset.test), transform=apply)
