"""What a command prints: its logging, progress bars, and markdown reports."""

from __future__ import annotations

import importlib.util
import logging as std_logging
import sys
from typing import Any, Sequence

from absl import logging

from cmjax import files

__all__ = ["progress_bar", "setup_logging", "write_markdown"]

_BARS = {"on": False}  # Set by `setup_logging`.


class _NotebookHandler(std_logging.Handler):
  """Log records as plain lines on the current `sys.stdout` (in a notebook: the
  cell's output, not a red stderr box of `INFO:absl:` lines); warnings and
  errors keep their level as a prefix."""

  def emit(self, record: std_logging.LogRecord) -> None:
    try:
      prefix = "" if record.levelno < std_logging.WARNING else f"{record.levelname}: "
      print(prefix + record.getMessage(), file=sys.stdout, flush=True)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


_NOTEBOOK_HANDLER = _NotebookHandler()


def _not_orbax(record: std_logging.LogRecord) -> bool:
  return "/orbax" not in record.pathname


def setup_logging(progress_bars: bool | None = None) -> None:
  """Progress at INFO level, without orbax's per-save chatter or JAX's line about
  each accelerator backend it looked for and did not find (libtpu on a CPU
  machine).

  In a notebook kernel the log lines are plain text in the cell's output
  (`_NotebookHandler`), not `INFO:absl:` lines on stderr.

  Args:
    progress_bars: long loops (training stages, feature extraction) show a bar
      (`progress_bar`) instead of periodic log lines. Default: in a notebook
      kernel or when stderr is a terminal; never in a log file.
  """
  logging.set_verbosity(logging.INFO)
  absl_logger = std_logging.getLogger("absl")
  absl_logger.addFilter(_not_orbax)
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
  notebook = "ipykernel" in sys.modules
  if notebook:
    absl_logger.addHandler(_NOTEBOOK_HANDLER)  # Once: a handler is added once.
  else:
    absl_logger.removeHandler(_NOTEBOOK_HANDLER)
  absl_logger.propagate = not notebook  # In a notebook, not again on the root's stderr.
  if progress_bars is None:
    progress_bars = notebook or sys.stderr.isatty()
  _BARS["on"] = bool(progress_bars)


def progress_bar(total: int, description: str, initial: int = 0, unit: str = "step") -> Any:
  """A progress bar (`tqdm.auto`: a widget in Jupyter where ipywidgets is installed, as
  on Colab, else a text bar on stdout, never a red stderr box) when `setup_logging`
  chose bars; None otherwise, and the caller logs lines instead."""
  if not _BARS["on"]:
    return None
  try:
    if importlib.util.find_spec("ipywidgets") is not None:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    else:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stdout,
              dynamic_ncols=True, leave=True)


def write_markdown(lines: Sequence[str], output: str | None) -> None:
  """Prints a markdown report and writes it to `output` (atomically) if given."""
  report = "\n".join(lines) + "\n"
  print(report)
  if output:
    files.write_atomic(output, lambda f: f.write(report))
