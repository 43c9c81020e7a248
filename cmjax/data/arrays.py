"""A user's own features as one `.npz` file.

The file holds `image_train`, `text_train`, `label_train`, `image_test`,
`text_test`, `label_test`. Labels are integer ids `[n]` or multi-hot rows
`[n, C]`. Optional `class_names` (`[C]` strings); without it the classes are
0..max(label_train).

The archive is checked before anything is decompressed: it must be a zip of
`.npy` members, every required field present, each member's header must
describe an array its bytes can hold, and all of them must fit in memory.
Object (pickled) members are refused: cmjax never unpickles data.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from cmjax.data.core import (DataError, Dataset, Split, check_array, check_num_classes,
                             validate_split)

__all__ = ["REQUIRED_FIELDS", "load_arrays", "read_npz"]

REQUIRED_FIELDS = (
    "image_train", "text_train", "label_train", "image_test", "text_test", "label_test",
)


def _memory_bytes() -> int:
  """Physical memory of this machine (bytes)."""
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str):
  """`(shape, dtype, header bytes)` of one `.npy` member, read without its data."""
  field = info.filename[:-len(".npy")]
  with archive.open(info) as stream:
    try:
      version = np.lib.format.read_magic(stream)
      read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)
      shape, _, dtype = read(stream, max_header_size=10_000)
    except (ValueError, OSError, EOFError) as e:
      raise DataError(f"{path}: field '{field}' is not a valid .npy member ({e})") from None
    header_bytes = stream.tell()
  if dtype.hasobject:
    raise DataError(f"{path}: field '{field}' holds Python objects ({dtype}); cmjax never "
                    "loads pickled data: save plain numeric arrays")
  return shape, dtype, header_bytes


def read_npz(path: str, required: tuple[str, ...]) -> dict[str, np.ndarray]:
  """Every member of a `.npz` archive, checked from the headers before loading.

  Raises:
    DataError: not a zip archive (a pickle, say), a missing field, an object
      member, a header that claims more bytes than its member holds, or arrays
      that together need more than this machine's memory.
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: file not found (expected a .npz with {', '.join(required)})")
  if not zipfile.is_zipfile(path):
    with open(path, "rb") as f:
      if f.read(4) == b"PK\x03\x04":
        raise DataError(f"{path}: cannot read .npz file (a truncated or damaged zip archive)")
    raise DataError(f"{path}: not a .npz (zip) archive; save one with numpy.savez (cmjax "
                    "never loads pickled files)")
  try:
    with zipfile.ZipFile(path) as archive:
      members = {info.filename[:-len(".npy")]: info for info in archive.infolist()
                 if info.filename.endswith(".npy")}
      missing = [k for k in required if k not in members]
      if missing:
        raise DataError(f"{path}: missing field(s) {', '.join(missing)}")
      total = 0
      for field, info in members.items():
        shape, dtype, header_bytes = _member_header(archive, info, path)
        claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if claimed > info.file_size - header_bytes:
          raise DataError(f"{path}: field '{field}' claims shape {shape} of {dtype} "
                          f"({claimed:,} bytes) but its member holds "
                          f"{info.file_size - header_bytes:,}: truncated or corrupt")
        total += claimed
      if total > 0.8 * _memory_bytes():
        raise DataError(f"{path}: the arrays need {total / 2**30:.1f} GiB, more than this "
                        f"machine can hold ({_memory_bytes() / 2**30:.1f} GiB of memory)")
      with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in members}
  except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
    if isinstance(e, DataError):
      raise
    raise DataError(f"{path}: cannot read .npz file ({type(e).__name__}: {e})") from None


def _class_names(arrays: dict[str, np.ndarray], path: str) -> tuple[str, ...]:
  """`class_names`, or class_0..class_<max id> (checked before any name is built)."""
  labels = arrays["label_train"]
  if "class_names" in arrays:
    names = arrays["class_names"]
    check_num_classes(len(names), path)
    return tuple(str(c) for c in names)
  if labels.ndim == 2:
    count = labels.shape[1]
  else:
    # Classes are those of the training labels; a test label beyond them is an error.
    check_array(labels, path, "label_train")
    top = labels.max() if labels.size else -1
    if top >= 2**31:
      raise DataError(f"{path}: field 'label_train' has the class id {top:.20g}; without "
                      "class_names the classes are 0..max id: number the classes 0..C-1")
    count = int(top) + 1
  check_num_classes(count, path)
  return tuple(f"class_{c}" for c in range(count))


def load_arrays(path: str) -> Dataset:
  """Loads and validates a `.npz` dataset file."""
  arrays = read_npz(path, REQUIRED_FIELDS)
  for field in REQUIRED_FIELDS:
    array = check_array(arrays[field], path, field)
    if field.startswith(("image_", "text_")) and array.ndim != 2:
      raise DataError(f"{path}: field '{field}' must be 2-D [rows, dims] feature vectors, "
                      f"got shape {array.shape}")
    if array.shape[0:1] == (0,):
      raise DataError(f"{path}: field '{field}' is empty (0 rows)")
  class_names = _class_names(arrays, path)
  splits = {}
  for name in ("train", "test"):
    split = Split(
        image=arrays[f"image_{name}"].astype(np.float32),
        text=arrays[f"text_{name}"].astype(np.float32),
        labels=arrays[f"label_{name}"],
    )
    splits[name] = validate_split(split, len(class_names), path, name)
  return Dataset(
      name="arrays", train=splits["train"], test=splits["test"],
      class_names=class_names, metadata={"source": os.path.abspath(path)},
  )
