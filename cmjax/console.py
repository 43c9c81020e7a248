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


def setup_logging(progress_bars: bool | None = None) -> None:
  """Progress at INFO level, without orbax's per-save chatter or JAX's line about
  each accelerator backend it looked for and did not find (libtpu on a CPU
  machine).

  Args:
    progress_bars: long loops (training stages, feature extraction) show a bar
      (`progress_bar`) instead of periodic log lines. Default: in a notebook
      kernel or when stderr is a terminal; never in a log file.
  """
  logging.set_verbosity(logging.INFO)
  std_logging.getLogger("absl").addFilter(lambda record: "/orbax" not in record.pathname)
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)
  if progress_bars is None:
    progress_bars = "ipykernel" in sys.modules or sys.stderr.isatty()
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
