"""A run's folder and its provenance: lock, identity, results, environment.

- `Workdir`: created private (refused if others could write it or own it,
  `cmjax.files.check_private`) and locked for the life of the run (a second
  concurrent run in it stops with one line); `claim` records the run's
  identity in `config.json` or refuses a workdir made for another one.
- `write_json` / `read_results`: atomic JSON, never through a symlink.
- `data_fingerprint`, `environment`: what data and which code and machine.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib.metadata
import json
import os
import subprocess
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np

from cmjax import configs
from cmjax import data as data_lib
from cmjax import files
from cmjax.files import RunError

__all__ = [
    "RunError",
    "Workdir",
    "data_fingerprint",
    "environment",
    "read_results",
    "to_builtin",
    "write_json",
]




def to_builtin(value):
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, tuple):
    return list(value)
  raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: str, payload: Mapping[str, Any]) -> None:
  """Writes JSON atomically, never through a symlink (`cmjax.files.write_atomic`)."""
  text = json.dumps(payload, indent=2, default=to_builtin)
  files.write_atomic(path, lambda f: f.write(text))


def _read_json_object(path: str, keys: tuple[str, ...]) -> dict:
  """A JSON object holding `keys`, or `RunError` naming the file and the problem."""
  try:
    with open(path) as f:
      found = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise RunError(f"{path}: not valid JSON ({e}); the workdir is damaged: remove the file "
                   "or use another --workdir") from None
  except OSError as e:
    raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
  missing = [k for k in keys if not isinstance(found, dict) or k not in found]
  if missing:
    raise RunError(f"{path}: not a cmjax {os.path.basename(path)} (no "
                   f"{', '.join(missing)}); remove the file or use another --workdir")
  return found


def read_results(workdir: str) -> dict | None:
  """The `results.json` of a finished run, or None.

  Raises:
    RunError: the file exists but is not a run's results (damaged or foreign).
  """
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return None
  return _read_json_object(path, ("method", "map", "dataset", "seed"))


def data_fingerprint(dataset: data_lib.Dataset) -> str:
  """sha256 of the dataset's arrays, labels and class names (not its location)."""
  digest = hashlib.sha256(dataset.name.encode())
  for split in (dataset.train, dataset.test):
    for array in (split.image, split.text, split.labels):
      array = np.ascontiguousarray(array)
      digest.update(f"{array.dtype}{array.shape}".encode())
      digest.update(array.tobytes())
  digest.update("\n".join(dataset.class_names).encode())
  return digest.hexdigest()


def _moved_into_sections(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict:
  """`found` (flat) with each `config.<field>` that `wanted` has only as
  `config.<section>.<field>` renamed to it: a workdir made before the shared
  fields moved into nested sections (`training`, `prepare`) still resumes."""
  out = dict(found)
  for key in [k for k in found if k.startswith("config.") and k.count(".") == 1]:
    if key in wanted:
      continue
    field = key.split(".", 1)[1]
    moved = [w for w in wanted if w.count(".") == 2 and w.endswith("." + field)]
    if len(moved) == 1:
      out[moved[0]] = out.pop(key)
  return out


class Workdir:
  """A run's folder, locked for the life of this object (use as a context manager).

  Raises:
    RunError: the path cannot be a folder (a file, read-only) or another
      process holds its lock.
  """

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self._lock = None

  def __enter__(self) -> "Workdir":
    try:
      os.makedirs(self.path, mode=0o700, exist_ok=True)
    except OSError as e:
      raise RunError(f"workdir {self.path}: cannot be used ({e.strerror or e})") from None
    if not os.path.isdir(self.path):
      raise RunError(f"workdir {self.path}: cannot be used (not a folder)")
    files.check_private(self.path)
    if jax.process_index() != 0:  # The first process holds the lock for all of them.
      return self
    fd = files.open_private(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT)
    self._lock = os.fdopen(fd, "a+")
    try:
      fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      self._lock.close()
      self._lock = None
      if e.errno in (errno.EAGAIN, errno.EACCES):
        raise files.WorkdirInUse(f"workdir {self.path}: another run is using it right now; "
                                 "wait for it or use another --workdir") from None
      raise
    if not os.access(self.path, os.W_OK):
      self.__exit__()
      raise RunError(f"workdir {self.path}: not writable")
    return self

  def __exit__(self, *exc) -> None:
    if self._lock:
      fcntl.flock(self._lock, fcntl.LOCK_UN)
      self._lock.close()
      self._lock = None

  def claim(self, identity: Mapping[str, Any],
            config_defaults: Mapping[str, Any] | None = None) -> None:
    """Records `identity` in `config.json`, or checks that it matches.

    A config field added to the code after the workdir was made (absent from
    its `config.json`) matches when this run keeps the field's default
    (`config_defaults`): new fields default to the old behaviour.

    Raises:
      RunError: naming the entries that differ.
    """
    path = os.path.join(self.path, "config.json")
    wanted = json.loads(json.dumps(identity, default=to_builtin))
    if not os.path.isfile(path):
      if jax.process_index() == 0:
        write_json(path, wanted)
      return
    found = _read_json_object(path, ("method", "config"))
    if not isinstance(found["config"], dict):
      raise RunError(f"{path}: not a cmjax config.json (its config is not an object); remove "
                     "the file or use another --workdir")
    defaults = json.loads(json.dumps(config_defaults or {}, default=to_builtin))
    added = [k for k in wanted.get("config", {}) if k not in found.get("config", {})
             and k in defaults and wanted["config"][k] == defaults[k]]
    if added:
      logging.info("%s: config fields added since (%s) keep their defaults", path,
                   ", ".join(added))
      found = dict(found, config={**found["config"], **{k: wanted["config"][k] for k in added}})
    if found != wanted:
      b = configs.flatten(wanted)
      a = _moved_into_sections(configs.flatten(found), b)
      if a == b:
        logging.info("%s: config fields moved into sections since (training.*, prepare.*) "
                     "hold the same values", path)
        return
      diff = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
                       for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
      raise RunError(f"{path}: the workdir holds another run ({diff}); use a new --workdir")


def _git_commit() -> str | None:
  """The commit of the cmjax checkout this code runs from (None outside one), with
  `+changes` when the checkout has uncommitted changes."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    run = lambda *args: subprocess.run(["git", "-C", root, *args], capture_output=True,
                                       text=True, timeout=10, check=True).stdout.strip()
    commit = run("rev-parse", "HEAD")
    return commit + ("+changes" if run("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.SubprocessError):
    return None


def environment(mesh: jax.sharding.Mesh) -> dict:
  versions = {}
  for package in ("cmjax", "jax", "jaxlib", "flax", "optax", "ott-jax", "numpy"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  return {"versions": versions, "backend": jax.default_backend(),
          "device_kind": mesh.devices.flat[0].device_kind, "num_devices": mesh.size,
          "num_processes": jax.process_count(), "git_commit": _git_commit(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}
