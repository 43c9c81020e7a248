"""Datasets of cmjax, all behind one interface: `load_dataset(name, data_dir)`."""

from __future__ import annotations

import os
from typing import Callable

from cmjax.data.arrays import load_arrays
from cmjax.data.core import DataError, Dataset, Split, validate_split, validation_split
from cmjax.data.synthetic import make_synthetic
from cmjax.data.web_news import load_web_news, load_web_news_pixels, load_web_news_raw
from cmjax.data.wikipedia import load_wikipedia

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "Split",
    "default_data_dir",
    "load_arrays",
    "load_dataset",
    "load_web_news",
    "load_web_news_pixels",
    "load_web_news_raw",
    "load_wikipedia",
    "make_synthetic",
    "validate_split",
    "validation_split",
]

# name -> loader(data_dir). `synthetic` needs no files.
DATASETS: dict[str, Callable[[str | None], Dataset]] = {
    "synthetic": lambda data_dir: make_synthetic(),
    "wikipedia": load_wikipedia,
    "web_news": load_web_news,
    "arrays": load_arrays,
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


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
  """Loads a dataset by name.

  Args:
    name: one of `DATASETS`.
    data_dir: the release directory (`wikipedia`, `web_news`) or the `.npz`
      file (`arrays`); ignored by `synthetic`.

  Raises:
    DataError: unknown name, missing or bad files.
  """
  if name not in DATASETS:
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
  if name == "arrays" and not data_dir:
    raise DataError("dataset 'arrays' needs --data_dir=PATH/TO/FILE.npz")
  return DATASETS[name](data_dir or default_data_dir(name))
