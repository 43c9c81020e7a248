"""A content-addressed cache of computed arrays (pretrained features).

An entry's name is the sha256 of its key: a JSON-able dict that must hold
everything the arrays depend on (a fingerprint of the input files, the model
weights' hash, the preprocessing). An entry is one `.npz` file written
atomically (`cmjax.files.write_atomic`) with a sha256 of its arrays inside; an
entry that cannot be read, lacks an array or fails its checksum is reported and
rebuilt, never used.

The cache folder is `$CMJAX_CACHE_DIR`, else `~/.cache/cmjax`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Callable, Mapping

from absl import logging
import numpy as np

from cmjax import files

__all__ = ["arrays_sha256", "cached_arrays", "default_cache_dir", "entry_path",
           "files_sha256"]

_CHECKSUM = "__sha256__"


def default_cache_dir() -> str:
  return os.environ.get("CMJAX_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "cmjax")


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
  """sha256 over the names, dtypes, shapes and bytes of `arrays`, in name order."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    digest.update(a.tobytes())
  return digest.hexdigest()


def files_sha256(paths: list[str]) -> str:
  """sha256 over the paths' contents in order (a missing file counts as such)."""
  digest = hashlib.sha256()
  for path in paths:
    digest.update(f"{os.path.basename(path)}|".encode())
    if os.path.isfile(path):
      with open(path, "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
    else:
      digest.update(b"missing")
  return digest.hexdigest()


def entry_path(key: Mapping[str, Any], cache_dir: str | None = None) -> str:
  name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
  return os.path.join(cache_dir or default_cache_dir(), "features", f"{name}.npz")


def _read(path: str) -> tuple[dict[str, np.ndarray] | None, str]:
  """`(arrays, "")`, or `(None, why not)`."""
  try:
    with np.load(path, allow_pickle=False) as stored:
      arrays = {name: stored[name] for name in stored.files}
  except Exception as e:  # A truncated or overwritten file: zipfile, OS, value errors.
    return None, f"unreadable ({type(e).__name__}: {e})"
  checksum = arrays.pop(_CHECKSUM, None)
  if checksum is None:
    return None, "no checksum"
  if str(checksum) != arrays_sha256(arrays):
    return None, "checksum mismatch"
  return arrays, ""


def cached_arrays(key: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]],
                  cache_dir: str | None = None, what: str = "arrays") -> dict[str, np.ndarray]:
  """The arrays of `key`: from the cache if a valid entry exists, else `compute()`d
  and stored.

  Args:
    key: everything the arrays depend on (JSON-able).
    compute: makes the arrays on a miss.
    cache_dir: the cache folder (default `default_cache_dir()`).
    what: named in the log lines.

  Returns:
    name -> array.
  """
  path = entry_path(key, cache_dir)
  if os.path.exists(path):
    start = time.perf_counter()
    arrays, problem = _read(path)
    if arrays is not None:
      logging.info("%s: cache hit %s (%.2f s)", what, path, time.perf_counter() - start)
      return arrays
    logging.warning("%s: cache entry %s is %s; rebuilding it", what, path, problem)
  arrays = compute()
  stored = {**arrays, _CHECKSUM: np.array(arrays_sha256(arrays))}
  files.write_atomic(path, lambda f: np.savez(f, **stored), binary=True)
  files.write_atomic(path[:-len(".npz")] + ".json",  # What the entry holds, for people.
                     lambda f: json.dump(key, f, indent=1, sort_keys=True))
  logging.info("%s: cached in %s", what, path)
  return arrays
