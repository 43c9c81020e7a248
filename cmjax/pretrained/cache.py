"""A content-addressed cache of computed arrays (pretrained features).

An entry's name is the sha256 of its key: a JSON-able dict that must hold
everything the arrays depend on (a fingerprint of the input files, the model
weights' hash, the preprocessing). An entry is one `.npz` file written
atomically (`cmjax.files.write_atomic`) holding its key and a sha256 of its
arrays and key. The checksum finds damage, not a wrong entry, so an entry is
used only if it is whole, holds the key asked for, and passes the caller's
`expect` check (the arrays' names, shapes and the ids they claim to be of);
any other is reported and rebuilt, never used.

The cache folder is `$CMJAX_CACHE_DIR`, else `~/.cache/cmjax`; its `features`
folder is created private and checked like a workdir (`files.check_private`)
before an entry is read. A cache that cannot be written (read-only, full disk)
is reported, and the run carries on with the arrays it computed.
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
_KEY = "__key__"
_INSTEAD = "set CMJAX_CACHE_DIR to a folder of your own"


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


def _key_json(key: Mapping[str, Any]) -> str:
  return json.dumps(key, sort_keys=True)


def _read(path: str, key: Mapping[str, Any],
          expect: Callable[[dict[str, np.ndarray]], str]) -> tuple[dict | None, str]:
  """`(arrays, "")`, or `(None, why not)`."""
  try:
    with np.load(path, allow_pickle=False) as stored:
      arrays = {name: stored[name] for name in stored.files}
  except Exception as e:  # A truncated or overwritten file: zipfile, OS, value errors.
    return None, f"unreadable ({type(e).__name__}: {e})"
  checksum = arrays.pop(_CHECKSUM, None)
  if checksum is None:
    return None, "without a checksum"
  if str(checksum) != arrays_sha256(arrays):
    return None, "damaged (checksum mismatch)"
  if str(arrays.pop(_KEY, "")) != _key_json(key):
    return None, "an entry of another key"
  problem = expect(arrays)
  return (None, f"not what this run asks for ({problem})") if problem else (arrays, "")


def _features_dir(cache_dir: str | None) -> str | None:
  """The entries' folder, created private and checked like a workdir; None (with a
  warning) when it cannot be created.

  Raises:
    RunError: the folder or one above it is another user's or writable by all.
  """
  folder = os.path.join(cache_dir or default_cache_dir(), "features")
  try:
    os.makedirs(folder, mode=0o700, exist_ok=True)
  except OSError as e:
    logging.warning("feature cache %s cannot be created (%s): computing without it", folder,
                    e.strerror or e)
    return None
  files.check_private(folder, "feature cache", _INSTEAD)
  return folder


def cached_arrays(key: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]],
                  cache_dir: str | None = None, what: str = "arrays",
                  expect: Callable[[dict[str, np.ndarray]], str] = lambda arrays: ""
                  ) -> dict[str, np.ndarray]:
  """The arrays of `key`: from the cache if a valid entry exists, else `compute()`d
  and stored (if the cache can be written).

  Args:
    key: everything the arrays depend on (JSON-able).
    compute: makes the arrays on a miss.
    cache_dir: the cache folder (default `default_cache_dir()`).
    what: named in the log lines.
    expect: `arrays -> ""` when they are what the run asks for (names, shapes,
      ids), else what is wrong; an entry failing it is rebuilt, and computed
      arrays failing it raise.

  Returns:
    name -> array.

  Raises:
    RunError: the cache folder is not private to this user.
    ValueError: `compute()` made arrays that fail `expect`.
  """
  path = entry_path(key, cache_dir)
  folder = _features_dir(cache_dir)
  if folder is not None and os.path.lexists(path):
    start = time.perf_counter()
    arrays, problem = _read(path, key, expect)
    if arrays is not None:
      logging.info("%s: cache hit %s (%.2f s)", what, path, time.perf_counter() - start)
      return arrays
    logging.warning("%s: cache entry %s is %s; rebuilding it", what, path, problem)
  arrays = compute()
  problem = expect(arrays)
  if problem:
    raise ValueError(f"{what}: computed arrays are not what was asked for: {problem}")
  if folder is None:
    return arrays
  stored = {**arrays, _KEY: np.array(_key_json(key))}
  stored[_CHECKSUM] = np.array(arrays_sha256(stored))
  try:
    files.write_atomic(path, lambda f: np.savez(f, **stored), binary=True)
    files.write_atomic(path[:-len(".npz")] + ".json",  # What the entry holds, for people.
                       lambda f: json.dump(key, f, indent=1, sort_keys=True))
  except files.RunError as e:
    logging.warning("%s: not cached (%s); the run carries on with the features computed",
                    what, e)
    return arrays
  logging.info("%s: cached in %s", what, path)
  return arrays
