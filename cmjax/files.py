"""Writing a run's files safely: atomically, never through a symlink, in a folder
no other user can redirect.

- `check_private`: a workdir is used only if it and every folder above it
  are owned by this user (or root) and no folder on the way can be changed by
  other users (world-writable without the sticky bit, as `/tmp` has).
  Otherwise another user could read the run, or plant a symlink in it.
- `write_atomic`: a file is written to a temporary name opened exclusively
  (`O_EXCL | O_NOFOLLOW`) and renamed over the target: a crash, a full disk or
  a kill never leaves a half-written file, and a planted symlink at either
  name is replaced, never written through. The temporary file is removed on
  failure.
- `open_append`: append without following a symlink (`O_NOFOLLOW`).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable, IO

from cmjax.checks import UserError

__all__ = ["RunError", "WorkdirInUse", "check_private", "open_append", "open_private", "write_atomic"]


class RunError(UserError, RuntimeError):
  """A run that cannot go on; the message is one line for the user."""


class WorkdirInUse(RunError):
  """Another process holds the workdir's lock (`cmjax.workdir.Workdir`)."""


def _describe(error: OSError) -> str:
  if error.errno == errno.ELOOP:
    return "it is a symbolic link: cmjax never writes through one"
  return error.strerror or str(error)


def check_private(path: str, what: str = "workdir", instead: str = "use another --workdir"
                  ) -> None:
  """Raises `RunError` unless `path` (a folder) is safe to run in; see the module doc.

  Args:
    what, instead: how the message names the folder, and what to do about it.
  """
  me = os.getuid()
  real = os.path.realpath(path)
  folder = real
  while True:
    info = os.stat(folder)
    owner_ok = info.st_uid == me if folder == real else info.st_uid in (0, me)
    if not owner_ok:
      raise RunError(f"{what} {path}: {folder} belongs to another user (uid {info.st_uid}); "
                     f"they could read or redirect this run: {instead}")
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
      raise RunError(f"{what} {path}: any user can write to {folder}; they could redirect "
                     f"this run's files: {instead}")
    parent = os.path.dirname(folder)
    if parent == folder:
      return
    folder = parent


def open_private(path: str, flags: int) -> int:
  """`os.open(path, flags | O_NOFOLLOW)` (mode 0o644), `RunError` on failure."""
  try:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
  except OSError as e:
    raise RunError(f"{path}: cannot open ({_describe(e)})") from None


def open_append(path: str, binary: bool = False) -> IO:
  """A file opened for appending, created if missing, never through a symlink."""
  fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
  return os.fdopen(fd, "ab" if binary else "a")


def write_atomic(path: str, write: Callable[[IO], None], binary: bool = False) -> None:
  """Writes `path` through `write(file)`, atomically; see the module doc.

  Raises:
    RunError: the file cannot be written (full disk, no permission...),
      naming it; nothing is left behind.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  if os.path.lexists(tmp):  # Left by a killed process with our pid.
    os.unlink(tmp)
  fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
  try:
    with os.fdopen(fd, "wb" if binary else "w") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.lexists(tmp):
      os.unlink(tmp)
    if isinstance(e, OSError):
      raise RunError(f"{path}: cannot write ({_describe(e)})") from None
    raise
