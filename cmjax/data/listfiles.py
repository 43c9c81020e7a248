"""Readers of the release formats shared by the Wikipedia-layout datasets.

Both `wikipedia` and `web_news` ship `categories.list` (one class name a line,
in label order) and `{train,test}set_txt_img_cat.list` (text id, image id,
category 1..C, tab separated).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.io

from cmjax.data.core import DataError

__all__ = ["ListEntry", "read_categories", "read_mat", "read_pair_list", "require_file"]


@dataclasses.dataclass(frozen=True)
class ListEntry:
  """One line of a pair list: a document with its text id, image id, class."""

  text_id: str
  image_id: str
  label: int  # 0-based class id
  line: int  # 1-based line number, for error messages


def require_file(path: str) -> str:
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found")
  return path


def read_mat(path: str, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
  """The named numeric fields of a MAT file (v5 with scipy, v7.3 with h5py if installed).

  Raises:
    DataError: a missing, empty, truncated or unreadable file, a missing
      field, or a field that is not a numeric array (strings, cells, structs).
  """
  require_file(path)
  with open(path, "rb") as f:
    header = f.read(128)
  if not header:
    raise DataError(f"{path}: the file is empty (0 bytes)")
  if b"MATLAB 7.3" in header:
    try:
      import h5py  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise DataError(f"{path}: a MAT v7.3 (HDF5) file; install h5py to read it "
                      "(pip install h5py)") from None
    try:
      with h5py.File(path, "r") as f:
        missing = [k for k in fields if k not in f]
        if missing:
          raise DataError(f"{path}: missing field(s) {', '.join(missing)}")
        # MATLAB stores column-major: HDF5 shows the axes reversed.
        mat = {k: np.asarray(f[k]).transpose() for k in fields}
    except (OSError, KeyError, TypeError, ValueError) as e:
      raise DataError(f"{path}: cannot read MAT v7.3 file ({type(e).__name__}: {e})") from None
  else:
    try:
      mat = scipy.io.loadmat(path, variable_names=list(fields))
    except Exception as e:  # scipy raises many types for truncated or foreign files.
      raise DataError(f"{path}: cannot read MATLAB file ({type(e).__name__}: {e})") from None
    missing = [k for k in fields if k not in mat]
    if missing:
      raise DataError(f"{path}: missing field(s) {', '.join(missing)}")
  for field in fields:
    array = np.asarray(mat[field])
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
      kind = {"U": "text", "S": "text", "O": "a cell array or struct"}.get(array.dtype.kind,
                                                                           str(array.dtype))
      raise DataError(f"{path}: field '{field}' is {kind}, not a numeric array")
  return {k: mat[k] for k in fields}


def _read_text(path: str) -> str:
  require_file(path)
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not valid UTF-8 ({e})") from None


def read_categories(path: str) -> tuple[str, ...]:
  """Reads `categories.list`: class names in label order."""
  names = tuple(l.strip() for l in _read_text(path).splitlines() if l.strip())
  if not names:
    raise DataError(f"{path}: no category names")
  if len(set(names)) != len(names):
    raise DataError(f"{path}: duplicate category names")
  return names


def read_pair_list(path: str, num_classes: int) -> list[ListEntry]:
  """Reads a `*_txt_img_cat.list` file.

  Raises:
    DataError: on a malformed line, a category outside 1..num_classes, or a
      text id listed twice.
  """
  entries = []
  seen = {}
  for number, line in enumerate(_read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.rstrip("\r").split("\t")
    if len(fields) != 3:
      raise DataError(
          f"{path}:{number}: expected 3 tab-separated fields "
          f"(text id, image id, category), got {len(fields)}"
      )
    text_id, image_id, category = (f.strip() for f in fields)
    try:
      label = int(category)
    except ValueError:
      raise DataError(f"{path}:{number}: category {category!r} is not an integer") from None
    if not 1 <= label <= num_classes:
      raise DataError(
          f"{path}:{number}: category {label} outside 1..{num_classes}"
      )
    if text_id in seen:
      raise DataError(
          f"{path}:{number}: text id {text_id!r} already listed on line {seen[text_id]}"
      )
    seen[text_id] = number
    entries.append(ListEntry(text_id, image_id, label - 1, number))
  if not entries:
    raise DataError(f"{path}: no pairs listed")
  return entries
