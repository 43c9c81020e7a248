"""Benchmarks: each is `python -m benchmarks.<name> --output=reports/benchmark_<name>.md`.

Every report names the machine and device it ran on (`machine`).
"""

from __future__ import annotations

import os
import platform

import jax

__all__ = ["machine"]


def machine() -> str:
  """One line naming the processor, its cores, jax and the devices the run used."""
  devices = jax.devices()
  return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; "
          f"jax {jax.__version__}, backend {jax.default_backend()}, {len(devices)} x "
          f"{devices[0].device_kind}.")
