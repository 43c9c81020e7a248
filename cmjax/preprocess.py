"""Input transforms fitted on the training split and applied to every split."""

from __future__ import annotations

import dataclasses
import typing
from typing import Callable

from absl import logging
import numpy as np

from cmjax.checks import ConfigError
from cmjax.configs import InputTransform
from cmjax.data import DataError, Dataset, Split, View, validation_split

__all__ = [
    "INPUT_TRANSFORMS", "Prepared", "choose_transform", "fit_transform", "make_transform",
    "prepare",
]

INPUT_TRANSFORMS = typing.get_args(InputTransform)


def choose_transform(train: np.ndarray, kind: InputTransform, field: str) -> tuple[str, str]:
  """The transform that fits `[n, d]` train features: `(kind, reason it changed or "")`.

  `sqrt_standardize` is defined on non-negative features (histograms,
  counts); on features with negative values (log-probabilities, PCA'd or
  standardised features) it would zero them, so `standardize` is chosen
  instead, and the reason says so.
  """
  if kind not in INPUT_TRANSFORMS:
    raise ConfigError(f"unknown input transform {kind!r}; choose from {INPUT_TRANSFORMS}")
  if kind == "sqrt_standardize" and train.size and train.min() < 0:
    return "standardize", (f"{field} features have negative values (min {train.min():.4g}): "
                           "sqrt_standardize would zero them, standardize used instead")
  return kind, ""


def make_transform(train: np.ndarray, kind: InputTransform,
                   field: str = "features") -> Callable[[np.ndarray], np.ndarray]:
  """Fits `kind` on `[n, d]` train features; returns the map `[m, d] -> [m, d]`.

  - `none`: the identity.
  - `standardize`: zero mean, unit variance per dimension (train statistics).
  - `sqrt_standardize`: element-wise square root first (the Hellinger map, for
    histograms such as SIFT bags of words and topic proportions), then
    standardise. Fitted on non-negative train features only (see
    `choose_transform`); a negative value in a later split is a `DataError`,
    never silently zeroed.
  - `l2`: each row scaled to unit L2 norm.
  """
  if kind not in INPUT_TRANSFORMS:
    raise ConfigError(f"unknown input transform {kind!r}; choose from {INPUT_TRANSFORMS}")
  if kind == "none":
    return lambda x: x
  if kind == "l2":
    return lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  if kind == "sqrt_standardize":
    if train.size and train.min() < 0:
      raise DataError(f"{field}: sqrt_standardize needs non-negative training features "
                      f"(min {train.min():.4g})")

    def root(x):
      if x.size and x.min() < 0:
        raise DataError(f"{field}: a split has negative values (min {x.min():.4g}) but the "
                        "training features had none: the square root fitted on them cannot "
                        "take them; use --config.prepare.input_transform=standardize")
      return np.sqrt(x)
  else:
    root = lambda x: x
  fitted = root(train)
  mean, std = fitted.mean(0), fitted.std(0) + 1e-6
  return lambda x: ((root(x) - mean) / std).astype(np.float32)


def fit_transform(train: np.ndarray, others: list[np.ndarray], kind: InputTransform):
  """Fits `kind` on `[n, d]` train features; returns transformed `(train, others)`."""
  transform = make_transform(train, kind)
  return transform(train), [transform(x) for x in others]


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A dataset ready for training: everything a method's `fit` reads.

  Attributes:
    train, val, test: splits whose `image` and `text` are transformed (fitted
      on `train`); `val` is carved from the training split (may be empty).
    full_train: every training item (train and val, in the loaded order),
      transformed: what a method refits on after selection on `val`, and the
      database of the hashing protocol.
    raw: `train`, `val`, `test` untransformed (e.g. counts for RBMs).
    transform: the fitted transform of any untransformed split (new items).
    num_classes: the dataset's number of classes.
    view: the dataset's typed view (`cmjax.data.View`: its payload, e.g. the
      word graph).
    transforms: `{"image": kind, "text": kind}` the transforms applied.
    notes: why a transform differs from the one asked for (logged, and kept
      in the run's results).
  """

  train: Split
  val: Split
  test: Split
  full_train: Split
  raw: tuple[Split, Split, Split]
  transform: Callable[[Split], Split]
  num_classes: int
  view: View
  transforms: dict = dataclasses.field(default_factory=dict)
  notes: tuple[str, ...] = ()


def prepare(dataset: Dataset, transform: InputTransform, validation_fraction: float,
            seed: int, text_transform: InputTransform | None = None) -> Prepared:
  """Carves a stratified validation split (by `seed`) and applies `transform` (to the
  texts `text_transform`, if given); a transform that does not fit the
  training features is replaced by one that does (`choose_transform`, logged)."""
  train, val = validation_split(dataset.train, validation_fraction, seed)
  asked = {"image": transform, "text": transform if text_transform is None else text_transform}
  chosen, notes = {}, []
  for field, kind in asked.items():
    chosen[field], note = choose_transform(getattr(train, field), kind, field)
    if note:
      logging.warning("%s", note)
      notes.append(note)
  image_map = make_transform(train.image, chosen["image"], "image")
  text_map = make_transform(train.text, chosen["text"], "text")
  apply = lambda s: dataclasses.replace(s, image=image_map(s.image), text=text_map(s.text))
  return Prepared(train=apply(train), val=apply(val), test=apply(dataset.test),
                  full_train=apply(dataset.train), raw=(train, val, dataset.test),
                  transform=apply, num_classes=dataset.num_classes, view=dataset.view,
                  transforms=chosen, notes=tuple(notes))
