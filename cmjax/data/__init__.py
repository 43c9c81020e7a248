"""Datasets of cmjax, all behind one interface: `load_dataset(name, data_dir, view)`.

A view is how a method reads a dataset:

- `features`: feature vectors `[n, d]` for both modalities (every dataset;
  web_news features are computed by cmjax from the raw release).
- `pixels_chars`: decoded pixels `[n, H, W, 3]` and caption character ids
  `[n, L]` (datasets with raw images and captions: web_news).
- `words_graph`: image feature vectors, and captions as `[n, V]` signals on a
  word graph built from the training captions (`cmjax.text_graph`; datasets
  with raw captions: web_news).

A loaded dataset carries its view as a typed value (`Dataset.view`: `Features`,
`PixelsChars` with the character vocabulary's size, `WordsGraph` with the
graph): a method reads its payload from there, never from the free-form
metadata.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable

import numpy as np

from cmjax.data.arrays import load_arrays
from cmjax.data.core import (MAX_CLASSES, DataError, Dataset, FeatureChoice, Features,
                             FeaturesOptions,
                             PixelsChars, PixelsCharsOptions, Split, View, ViewOptions,
                             WordsGraph, WordsGraphOptions, check_evaluable,
                             check_splits_agree, validate_split, validation_split,
                             with_features)
from cmjax.data.hashing_sets import load_mirflickr, load_nus_wide
from cmjax.data.synthetic import make_synthetic
from cmjax.data.web_news import (load_web_news, load_web_news_pixels, load_web_news_raw,
                                  load_web_news_words)
from cmjax.data.wikipedia import load_wikipedia

__all__ = [
    "DATASETS",
    "DataError",
    "MAX_CLASSES",
    "VIEWS",
    "Dataset",
    "FeatureChoice",
    "Features",
    "FeaturesOptions",
    "PixelsChars",
    "PixelsCharsOptions",
    "Split",
    "View",
    "ViewOptions",
    "WordsGraph",
    "WordsGraphOptions",
    "check_evaluable",
    "check_dataset",
    "check_splits_agree",
    "default_data_dir",
    "find_release",
    "load_arrays",
    "load_dataset",
    "load_mirflickr",
    "load_nus_wide",
    "load_web_news",
    "load_web_news_pixels",
    "load_web_news_raw",
    "load_web_news_words",
    "load_wikipedia",
    "make_synthetic",
    "validate_split",
    "validation_split",
    "with_features",
]

# name -> loader(data_dir). `synthetic` needs no files.
DATASETS: dict[str, Callable[[str | None], Dataset]] = {
    "synthetic": lambda data_dir: make_synthetic(),
    "wikipedia": load_wikipedia,
    "web_news": load_web_news,
    "arrays": load_arrays,
    "mirflickr": load_mirflickr,
    "nus_wide": load_nus_wide,
}


def default_data_dir(name: str) -> str | None:
  """Where a dataset's files are looked for when no `data_dir` is given.

  `$CMJAX_DATA_DIR/<name>` if that variable is set, else `../shared/data/<name>`
  relative to the working directory (the layout of the cmjax checkout).
  """
  if name in ("synthetic", "arrays"):
    return None
  root = os.environ.get("CMJAX_DATA_DIR", os.path.join("..", "shared", "data"))
  return os.path.join(root, name)


def find_release(name: str, folder: str = "", repository: str = "") -> str:
  """The folder of dataset `name`'s release, for a notebook's data setting; "" if none.

  Looked for, in order: `<folder>/<name>` (a folder of one's own, e.g. a mounted
  Drive folder), `$CMJAX_DATA_DIR/<name>`, and `<repository>/../shared/data/<name>`
  (the checkout's layout, resolved against the checkout, not the working
  directory; `repository` may be a URL, then it is skipped).
  """
  roots = [folder, os.environ.get("CMJAX_DATA_DIR", "")]
  if repository and os.path.isdir(repository):
    roots.append(os.path.join(repository, "..", "shared", "data"))
  for root in roots:
    path = os.path.join(os.path.expanduser(root), name) if root else ""
    if path and os.path.isdir(path):
      return os.path.abspath(path)
  return ""


# view -> {dataset name -> loader(data_dir, **options)}.
VIEWS: dict[str, dict[str, Callable[..., Dataset]]] = {
    "features": DATASETS,
    "pixels_chars": {"web_news": load_web_news_pixels},
    "words_graph": {"web_news": load_web_news_words},
}


def _options_taken(loader: Callable[..., Dataset], options: dict[str, Any],
                   defaults: dict[str, Any], name: str) -> dict[str, Any]:
  """The view options `loader` takes. One it does not take (a dataset released as
  features has no `image_features`) is dropped at its default, else an error."""
  parameters = inspect.signature(loader).parameters
  if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
    return options
  refused = {k: v for k, v in options.items()
             if k not in parameters and (k not in defaults or v != defaults[k])}
  if refused:
    raise DataError(f"dataset {name!r} takes no view option "
                    f"{', '.join(f'{k}={v!r}' for k, v in refused.items())} (it comes with its "
                    "own features; image and text feature choices apply to web_news)")
  return {k: v for k, v in options.items() if k in parameters}


def check_dataset(dataset: Dataset, source: str | None = None) -> Dataset:
  """The checks every loader's data passes, for any `Dataset` (one built by hand in
  a notebook included); returns it with canonical dtypes.

  Args:
    dataset: the dataset.
    source: named in errors (default: its metadata's "source", else "dataset
      '<name>'").

  Raises:
    DataError: naming the split and field: a missing or non-numeric array,
      NaN/Inf, mismatched row counts, labels out of range, fractional or not
      0/1, an empty split, splits that disagree, a test split that makes no
      retrieval task.
  """
  if not isinstance(dataset, Dataset):
    raise DataError(f"expected a cmjax.data.Dataset, got {type(dataset).__name__}")
  source = source or dataset.metadata.get("source") or f"dataset {dataset.name!r}"
  splits = {}
  for name in ("train", "test"):
    split = getattr(dataset, name)
    if not isinstance(split, Split):
      raise DataError(f"{source}: the {name} split is a {type(split).__name__}, not a "
                      "cmjax.data.Split")
    for field in ("image", "text", "labels"):
      if getattr(split, field) is None:
        raise DataError(f"{source}: field '{field}_{name}' is missing (None)")
    split = dataclasses.replace(split, **{f: np.asarray(getattr(split, f))
                                          for f in ("image", "text", "labels")})
    splits[name] = validate_split(split, dataset.num_classes, source, name)
    if len(splits[name]) == 0:
      raise DataError(f"{source}: the {name} split is empty")
  check_splits_agree(splits["train"], splits["test"], source)
  check_evaluable(splits["test"], source)
  return dataclasses.replace(dataset, **splits)


def load_dataset(name: str, data_dir: str | None = None,
                 view: str | ViewOptions = "features", **options: Any) -> Dataset:
  """Loads a dataset by name, as the view `view` (see the module docstring).

  Args:
    name: one of `DATASETS`.
    data_dir: the release directory (`wikipedia`, `web_news`) or the `.npz`
      file (`arrays`); ignored by `synthetic`.
    view: a view config (`FeaturesOptions`, `PixelsCharsOptions`,
      `WordsGraphOptions`: the view and how to load it), or the name of one of
      `VIEWS` that the dataset has.
    **options: with a view name: options of the view's loader (e.g.
      `max_chars` of `pixels_chars`).

  Returns:
    the dataset; its `view` is the typed view asked for.

  Raises:
    DataError: unknown name or view, missing or bad files, an empty split,
      train and test splits that disagree (label format, input shapes), test
      labels that make no retrieval task (`check_evaluable`).
  """
  defaults = {}
  if not isinstance(view, str):
    defaults = dataclasses.asdict(type(view)())
    view, options = view.name, {**dataclasses.asdict(view), **options}
  if name not in DATASETS:
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
  if view not in VIEWS:
    raise DataError(f"unknown data view {view!r}; choose from {', '.join(VIEWS)}")
  if name not in VIEWS[view]:
    raise DataError(f"dataset {name!r} has no {view!r} view (it has: "
                    f"{', '.join(v for v in VIEWS if name in VIEWS[v])})")
  if name == "arrays" and not data_dir:
    raise DataError("dataset 'arrays' needs --data_dir=PATH/TO/FILE.npz")
  loader = VIEWS[view][name]
  options = _options_taken(loader, options, defaults, name)
  dataset = loader(data_dir or default_data_dir(name), **options)
  dataset = check_dataset(dataset, dataset.metadata.get("source", data_dir or name))
  if dataset.view.name != view:
    raise AssertionError(f"the {view} loader of {name} returned a {dataset.view.name} view")
  return dataset
