"""MIRFlickr-25K and NUS-WIDE as the cross-modal hashing literature distributes them.

Two release layouts are read (multi-label: relevant = at least one shared label):

1. One `.mat` file of features with a fixed split (the matrix-factorisation
   hashing code's layout): `XTrain`, `XTest` (image features), `YTrain`,
   `YTest` (tag / text features), `LTrain`, `LTest` (multi-hot labels). Point
   `data_dir` at the file, or at a folder holding exactly one `.mat`.
2. The DCMH / DJSRH "cleared set": a folder with `*-iall.mat` (`IAll`, images
   `[n, 3, H, W]` uint8), `*-yall.mat` (`YAll`, tag bags of words `[n, T]`) and
   `*-lall.mat` (`LAll`, `[n, C]` multi-hot), optionally `*-fall.mat` (`FAll`,
   file names). Image features are computed here (`cmjax.features.color_histogram`);
   the query set is `num_queries` items drawn with `seed` (2,000 for MIRFlickr,
   2,100 for NUS-WIDE, the usual protocol), the rest is the database and the
   training set.

`-iall.mat` files are MAT v7.3 (HDF5) in the public release: they are read
with h5py when it is installed; without it the loader stops naming the file.
"""

from __future__ import annotations

import glob
import os

from absl import logging
import numpy as np

from cmjax import features
from cmjax.data.core import (DataError, Dataset, Split, check_array, check_multi_hot,
                             validate_split)
from cmjax.data.listfiles import read_mat

__all__ = ["load_mirflickr", "load_nus_wide", "to_pixels"]


def _split(image, text, labels, source, name, fields, num_classes=None) -> Split:
  """A validated split; `fields` names the (image, text, labels) fields in errors.

  Labels must be multi-hot rows of 0 and 1 (no NaN, no 2, no -1), of the
  training labels' width (`num_classes`) for the test split.
  """
  labels = check_array(labels, source, fields[2])
  if labels.ndim != 2:
    raise DataError(f"{source}: field '{fields[2]}' must be [n, C] multi-hot labels, got "
                    f"shape {labels.shape}")
  labels = check_multi_hot(labels, num_classes or labels.shape[1], source, fields[2])
  image, text = check_array(image, source, fields[0]), check_array(text, source, fields[1])
  split = Split(image=np.asarray(image, np.float32), text=np.asarray(text, np.float32),
                labels=labels)
  return validate_split(split, labels.shape[1], source, name)


def to_pixels(images: np.ndarray, source: str, field: str) -> np.ndarray:
  """Images as uint8 pixels, converted exactly or refused (never wrapped or clipped).

  uint8 stays as it is; floating-point arrays within [0, 1] are read as
  intensities and scaled by 255 (rounded; logged); other integer-valued arrays
  in [0, 255] (any dtype) are cast. Anything else is a `DataError`.
  """
  images = check_array(images, source, field)
  if images.dtype == np.uint8:
    return images
  low, high = images.min(), images.max()
  if np.issubdtype(images.dtype, np.floating) and low >= 0 and high <= 1:
    logging.info("%s: field '%s' holds intensities in [0, 1]: scaled by 255 to pixels",
                 source, field)
    return np.round(images * 255).astype(np.uint8)
  if np.all(np.mod(images, 1) == 0) and low >= 0 and high <= 255:
    return images.astype(np.uint8)
  raise DataError(f"{source}: field '{field}' must hold pixels (integers in [0, 255], or "
                  f"intensities in [0, 1]); found values in [{low:.6g}, {high:.6g}] "
                  f"({images.dtype})")


def _from_features_file(path: str, name: str) -> Dataset:
  m = read_mat(path, ("XTrain", "XTest", "YTrain", "YTest", "LTrain", "LTest"))
  train = _split(m["XTrain"], m["YTrain"], m["LTrain"], path, "train",
                 ("XTrain", "YTrain", "LTrain"))
  test = _split(m["XTest"], m["YTest"], m["LTest"], path, "test", ("XTest", "YTest", "LTest"),
                train.labels.shape[1])
  classes = tuple(f"label_{c}" for c in range(train.labels.shape[1]))
  return Dataset(name=name, train=train, test=test, class_names=classes,
                 metadata={"source": os.path.abspath(path), "layout": "features"})


def _one(data_dir: str, pattern: str) -> str | None:
  found = sorted(glob.glob(os.path.join(data_dir, "**", pattern), recursive=True))
  if len(found) > 1:
    raise DataError(f"{data_dir}: several files match {pattern}: {', '.join(found)}")
  return found[0] if found else None


def _from_cleared_set(data_dir: str, name: str, num_queries: int, seed: int) -> Dataset:
  paths = {k: _one(data_dir, f"*-{k}all.mat") for k in ("i", "y", "l")}
  missing = [f"*-{k}all.mat" for k, p in paths.items() if p is None]
  if missing:
    raise DataError(f"{data_dir}: missing file(s) {', '.join(missing)}")
  images = read_mat(paths["i"], ("IAll",))["IAll"]
  tags = read_mat(paths["y"], ("YAll",))["YAll"]
  labels = read_mat(paths["l"], ("LAll",))["LAll"]
  n = len(labels)
  for path, array, field in ((paths["i"], images, "IAll"), (paths["y"], tags, "YAll")):
    if len(array) != n:
      raise DataError(f"{path}: field '{field}' has {len(array)} rows but 'LAll' has {n}")
  if images.ndim != 4 or 3 not in (images.shape[1], images.shape[3]):
    raise DataError(f"{paths['i']}: field 'IAll' must be [n, 3, H, W] or [n, H, W, 3] "
                    f"images, got shape {images.shape}")
  if images.shape[1] == 3:
    images = images.transpose(0, 2, 3, 1)
  if not 0 < num_queries < n:
    raise DataError(f"{data_dir}: {num_queries} queries asked of {n} items")
  order = np.random.default_rng(seed).permutation(n)
  image_features = features.color_histogram(to_pixels(images, paths["i"], "IAll"))
  take = lambda idx, split_name: _split(image_features[idx], tags[idx], labels[idx],
                                        paths["l"], split_name, ("IAll", "YAll", "LAll"))
  test, train = take(order[:num_queries], "test"), take(order[num_queries:], "train")
  classes = tuple(f"label_{c}" for c in range(train.labels.shape[1]))
  return Dataset(name=name, train=train, test=test, class_names=classes,
                 metadata={"source": os.path.abspath(data_dir), "layout": "cleared_set",
                           "num_queries": num_queries, "split_seed": seed})


def _load(data_dir: str, name: str, num_queries: int, seed: int) -> Dataset:
  if os.path.isfile(data_dir):
    return _from_features_file(data_dir, name)
  if not os.path.isdir(data_dir):
    raise DataError(f"{data_dir}: not found (a .mat file or a folder of the {name} release)")
  if _one(data_dir, "*-lall.mat"):
    return _from_cleared_set(data_dir, name, num_queries, seed)
  mats = sorted(glob.glob(os.path.join(data_dir, "*.mat")))
  if len(mats) != 1:
    raise DataError(f"{data_dir}: expected *-iall/yall/lall.mat files or one features .mat, "
                    f"found {len(mats)} .mat files")
  return _from_features_file(mats[0], name)


def load_mirflickr(data_dir: str, num_queries: int = 2000, seed: int = 0) -> Dataset:
  """MIRFlickr-25K (20,015 pairs, 24 labels, 1,386-d tags in the cleared set)."""
  return _load(data_dir, "mirflickr", num_queries, seed)


def load_nus_wide(data_dir: str, num_queries: int = 2100, seed: int = 0) -> Dataset:
  """NUS-WIDE (the 10- or 21-concept subsets, 1,000-d tags)."""
  return _load(data_dir, "nus_wide", num_queries, seed)
