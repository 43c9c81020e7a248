"""Benchmarks: each is `python -m benchmarks.<name> --output=reports/benchmark_<name>.md`.

Every report names the machine and device it ran on (`machine`).
"""

from __future__ import annotations

import os
import platform

from absl import app
import jax

from cmjax import console

__all__ = ["machine", "start"]


def machine() -> str:
  """One line naming the processor, its cores, jax and the devices the run used."""
  devices = jax.devices()
  load = os.getloadavg()[0]  # Other work on the machine shares the cores.
  return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
          f"(load average {load:.1f} at the start); jax {jax.__version__}, backend "
          f"{jax.default_backend()}, {len(devices)} x {devices[0].device_kind}.")


def start(argv) -> None:
  """A benchmark's start: no stray arguments, progress logged at INFO."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup_logging()
