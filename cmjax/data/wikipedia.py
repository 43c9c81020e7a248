"""The Wikipedia cross-modal dataset (Rasiwasia et al. 2010), original release.

Reads `raw_features.mat` (`I_tr`, `I_te`: 128-bin SIFT BoVW histograms; `T_tr`,
`T_te`: 10-topic LDA proportions) and the list files, whose rows follow the same
order as the feature matrices.
"""

from __future__ import annotations

import os

import numpy as np

from cmjax.data import listfiles
from cmjax.data import core
from cmjax.data.core import DataError, Dataset, Split, validate_split

__all__ = ["load_wikipedia"]

_FIELDS = {"train": ("I_tr", "T_tr"), "test": ("I_te", "T_te")}


def load_wikipedia(data_dir: str) -> Dataset:
  """Loads the Wikipedia dataset from a directory holding the release files.

  Args:
    data_dir: directory with `raw_features.mat`, `categories.list`,
      `trainset_txt_img_cat.list`, `testset_txt_img_cat.list`.

  Returns:
    `Dataset` with 2,173 train and 693 test pairs of `[n, 128]` image and
    `[n, 10]` text features and `[n]` labels in 0..9.
  """
  class_names = listfiles.read_categories(os.path.join(data_dir, "categories.list"))
  mat_path = os.path.join(data_dir, "raw_features.mat")
  mat = listfiles.read_mat(mat_path, tuple(k for pair in _FIELDS.values() for k in pair))
  splits = {}
  for name, (image_key, text_key) in _FIELDS.items():
    list_path = os.path.join(data_dir, f"{name}set_txt_img_cat.list")
    entries = listfiles.read_pair_list(list_path, len(class_names))
    arrays = {}
    for key in (image_key, text_key):
      arrays[key] = core.check_array(mat[key], mat_path, key).astype(np.float32)
      if arrays[key].ndim != 2 or arrays[key].shape[0] != len(entries):
        raise DataError(
            f"{mat_path}: field '{key}' has shape {arrays[key].shape} but "
            f"{list_path} lists {len(entries)} pairs: mismatched row counts"
        )
    split = Split(
        image=arrays[image_key],
        text=arrays[text_key],
        labels=np.array([e.label for e in entries], np.int32),
        ids=np.array([e.text_id for e in entries]),
    )
    splits[name] = validate_split(split, len(class_names), mat_path, name)
  return Dataset(
      name="wikipedia",
      train=splits["train"],
      test=splits["test"],
      class_names=class_names,
      metadata={"source": os.path.abspath(data_dir)},
  )
