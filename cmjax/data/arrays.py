"""A user's own features as one `.npz` file.

The file holds `image_train`, `text_train`, `label_train`, `image_test`,
`text_test`, `label_test`. Labels are integer ids `[n]` or multi-hot rows
`[n, C]`. Optional `class_names` (`[C]` strings); without it the classes are
0..max(label_train).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from cmjax.data.core import DataError, Dataset, Split, validate_split

__all__ = ["REQUIRED_FIELDS", "load_arrays"]

REQUIRED_FIELDS = (
    "image_train", "text_train", "label_train", "image_test", "text_test", "label_test",
)


def load_arrays(path: str) -> Dataset:
  """Loads and validates a `.npz` dataset file."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found (expected a .npz with {', '.join(REQUIRED_FIELDS)})")
  try:
    with np.load(path, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
    raise DataError(f"{path}: cannot read .npz file ({type(e).__name__}: {e})") from None
  missing = [k for k in REQUIRED_FIELDS if k not in arrays]
  if missing:
    raise DataError(f"{path}: missing field(s) {', '.join(missing)}")
  for field in REQUIRED_FIELDS:
    array = arrays[field]
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
      raise DataError(f"{path}: field '{field}' is not numeric ({array.dtype})")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
      bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
      raise DataError(f"{path}: field '{field}' has a non-finite value (NaN or Inf) at "
                      f"index {bad}")
    if field.startswith(("image_", "text_")) and array.ndim != 2:
      raise DataError(f"{path}: field '{field}' must be 2-D [rows, dims] feature vectors, "
                      f"got shape {array.shape}")
    if array.shape[0:1] == (0,):
      raise DataError(f"{path}: field '{field}' is empty (0 rows)")
  labels = [arrays["label_train"], arrays["label_test"]]
  if "class_names" in arrays:
    class_names = tuple(str(c) for c in arrays["class_names"])
  elif labels[0].ndim == 2:
    class_names = tuple(f"class_{c}" for c in range(labels[0].shape[1]))
  else:
    # Classes are those of the training labels; a test label beyond them is an error.
    top = int(np.max(labels[0])) if labels[0].size else -1
    class_names = tuple(f"class_{c}" for c in range(top + 1))
  splits = {}
  for name in ("train", "test"):
    split = Split(
        image=arrays[f"image_{name}"].astype(np.float32),
        text=arrays[f"text_{name}"].astype(np.float32),
        labels=arrays[f"label_{name}"],
    )
    splits[name] = validate_split(split, len(class_names), path, name)
  for modality in ("image", "text"):
    dims = [splits[s].__getattribute__(modality).shape[1:] for s in ("train", "test")]
    if dims[0] != dims[1]:
      raise DataError(
          f"{path}: field '{modality}_test' has dims {dims[1]} but "
          f"'{modality}_train' has {dims[0]}"
      )
  return Dataset(
      name="arrays", train=splits["train"], test=splits["test"],
      class_names=class_names, metadata={"source": os.path.abspath(path)},
  )
