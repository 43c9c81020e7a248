"""Reads a PyTorch state dict saved in the legacy (non-zip) format, without torch.

The legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`) is
a run of pickles: a magic number, a protocol version, a system-info dict, the
object itself, in which each tensor's storage is a persistent id, then the list
of storage keys, then each storage's raw bytes (an int64 element count, then
the elements).

Unpickling runs whatever code a pickle names, so every one of the file's five
pickles goes through a restricted unpickler: the headers and the storage-key
list resolve no global at all (plain data), and the state dict only the globals
it needs: `collections.OrderedDict`, torch's tensor and parameter rebuild
functions (replaced by NumPy ones) and the storage types. Any other global is an
error naming the file and the global: nothing in the file is executed.
"""

from __future__ import annotations

import collections
import pickle
import struct
from typing import Any, BinaryIO

import numpy as np

from cmjax.checks import UserError

__all__ = ["TorchFileError", "read_state_dict"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFileError(UserError, ValueError):
  """A file that is not a legacy-format state dict cmjax can read; names the file."""


class _Storage:
  """One storage: its dtype and element count, then its data once read."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype, self.numel = np.dtype(dtype), numel
    self.data: np.ndarray | None = None


class _StorageType:
  def __init__(self, name: str):
    self.name = name


class _Tensor:
  """A tensor to be built once its storage is read: a strided view of it."""

  def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

  def numpy(self, path: str) -> np.ndarray:
    data = self.storage.data
    extent = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
    if self.size and min(self.size) > 0 and extent > len(data) or self.offset > len(data):
      raise TorchFileError(f"{path}: a tensor of size {self.size} reaches past its storage "
                           f"({len(data)} elements)")
    itemsize = data.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.size,
        strides=tuple(s * itemsize for s in self.stride)).copy()


def _rebuild_tensor(storage, offset, size, stride, *unused) -> _Tensor:
  del unused  # requires_grad, backward hooks, metadata: nothing for inference.
  return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(tensor, *unused) -> _Tensor:
  del unused
  return tensor


class _DataUnpickler(pickle.Unpickler):
  """Plain data only (numbers, strings, lists, dicts): any global or persistent id is
  an error naming the file, so nothing a pickle names is looked up or called (the
  header pickles and the storage-key list)."""

  def __init__(self, file: BinaryIO, path: str):
    super().__init__(file)
    self.path = path

  def find_class(self, module: str, name: str) -> Any:
    raise TorchFileError(f"{self.path}: a header pickle names the global {module}.{name}; "
                         "a torch file's headers are plain data, refusing to load it")

  def persistent_load(self, pid: Any) -> Any:
    raise TorchFileError(f"{self.path}: unexpected persistent id {pid!r:.100} in a header")


def _load_data(f: BinaryIO, path: str) -> Any:
  """The next pickle of `f`, plain data only (`_DataUnpickler`)."""
  return _DataUnpickler(f, path).load()


class _Unpickler(pickle.Unpickler):
  """Resolves only a state dict's globals; storages become `_Storage`s."""

  def __init__(self, file: BinaryIO, path: str):
    super().__init__(file)
    self.path = path
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise TorchFileError(f"{self.path}: the pickle names the global {module}.{name}, which a "
                         "state dict of tensors does not need; refusing to load it")

  def persistent_load(self, pid: Any) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise TorchFileError(f"{self.path}: unexpected persistent id {pid!r:.100}")
    _, storage_type, key, _, numel, view = pid
    if view is not None:
      raise TorchFileError(f"{self.path}: storage views (an old torch format) are not supported")
    if key not in self.storages:
      self.storages[key] = _Storage(_STORAGE_DTYPES[storage_type.name], int(numel))
    return self.storages[key]


def _flatten(obj: Any, prefix: str, path: str, out: dict[str, Any]) -> None:
  if isinstance(obj, dict):
    for key, value in obj.items():
      _flatten(value, f"{prefix}{key}.", path, out)
  elif isinstance(obj, _Tensor):
    out[prefix[:-1]] = obj
  else:
    raise TorchFileError(f"{path}: entry {prefix[:-1]!r} is a {type(obj).__name__}, not a "
                         "tensor")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a legacy-format PyTorch state dict, as NumPy arrays.

  Args:
    path: a `.pth` file written by `torch.save(state_dict)` in the legacy format.

  Returns:
    name -> array (nested dicts flattened with `.`), in the file's order.

  Raises:
    TorchFileError: not a legacy-format file (a zip-format file says so), a
      global other than a state dict's, a truncated or inconsistent file.
  """
  try:
    f = open(path, "rb")
  except OSError as e:
    raise TorchFileError(f"{path}: cannot be read ({e.strerror or e}); reinstall the package "
                         "that ships it") from None
  with f:
    if f.read(4) == b"PK\x03\x04":
      raise TorchFileError(f"{path}: a zip-format torch file; cmjax reads the legacy format")
    f.seek(0)
    try:
      header = [_load_data(f, path) for _ in range(3)]
    except TorchFileError:
      raise
    except Exception as e:  # Not a pickle at all.
      raise TorchFileError(f"{path}: not a torch file ({type(e).__name__}: {e})") from None
    magic, protocol, info = header
    if magic != MAGIC_NUMBER or protocol != PROTOCOL_VERSION:
      raise TorchFileError(f"{path}: not a legacy-format torch file (magic {magic!r:.30}, "
                           f"protocol {protocol!r:.30})")
    if not (isinstance(info, dict) and info.get("little_endian", False)):
      raise TorchFileError(f"{path}: only little-endian files are supported ({info!r:.100})")
    unpickler = _Unpickler(f, path)
    try:
      obj = unpickler.load()
      keys = _load_data(f, path)
    except TorchFileError:
      raise
    except Exception as e:
      raise TorchFileError(f"{path}: corrupt pickle ({type(e).__name__}: {e})") from None
    if sorted(map(str, keys)) != sorted(map(str, unpickler.storages)):
      raise TorchFileError(f"{path}: the storage list does not match the tensors")
    for key in keys:
      storage = unpickler.storages[key]
      raw = f.read(8)
      if len(raw) < 8:
        raise TorchFileError(f"{path}: truncated before storage {key}")
      (numel,) = struct.unpack("<q", raw)
      if numel != storage.numel:
        raise TorchFileError(f"{path}: storage {key} holds {numel} elements, its tensors say "
                             f"{storage.numel}")
      nbytes = numel * storage.dtype.itemsize
      data = f.read(nbytes)
      if len(data) < nbytes:
        raise TorchFileError(f"{path}: truncated inside storage {key}")
      storage.data = np.frombuffer(data, storage.dtype.newbyteorder("<"))
  tensors: dict[str, Any] = {}
  _flatten(obj, "", path, tensors)
  return {name: t.numpy(path) for name, t in tensors.items()}
