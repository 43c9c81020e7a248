"""What a command prints: its logging, and markdown reports."""

from __future__ import annotations

import logging as std_logging
from typing import Sequence

from absl import logging

from cmjax import files

__all__ = ["setup_logging", "write_markdown"]


def setup_logging() -> None:
  """Progress at INFO level, without orbax's per-save chatter or JAX's line about
  each accelerator backend it looked for and did not find (libtpu on a CPU
  machine)."""
  logging.set_verbosity(logging.INFO)
  std_logging.getLogger("absl").addFilter(lambda record: "/orbax" not in record.pathname)
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)


def write_markdown(lines: Sequence[str], output: str | None) -> None:
  """Prints a markdown report and writes it to `output` (atomically) if given."""
  report = "\n".join(lines) + "\n"
  print(report)
  if output:
    files.write_atomic(output, lambda f: f.write(report))
