"""Benchmarks: each is `python -m benchmarks.<name> --output=reports/benchmark_<name>.md`;
`python -m benchmarks.suite` runs them all.

Every report names the machine and device it ran on (`machine`) and ends with the
peak memory of the run (`write_report`). Peers run on JAX's device where they
have a build for it (`torch_device`, `faiss_binary_index`).
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from typing import Sequence

from absl import app
import jax

from cmjax import console


__all__ = ["faiss_binary_index", "machine", "memory_line", "run_child", "start",
           "torch_device", "torch_sync", "write_report"]


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


def _on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def torch_device():
  """PyTorch's device for a peer: CUDA when JAX runs on a GPU and torch has CUDA,
  else the CPU (then the report's peer line says so)."""
  import torch  # pylint: disable=import-outside-toplevel
  return torch.device("cuda" if _on_gpu() and torch.cuda.is_available() else "cpu")


def torch_sync(device) -> None:
  """Waits for PyTorch's queued work on `device` (CUDA runs asynchronously)."""
  if device.type == "cuda":
    import torch  # pylint: disable=import-outside-toplevel
    torch.cuda.synchronize(device)


def faiss_binary_index(bits: int):
  """faiss's exhaustive binary index on JAX's kind of device: `GpuIndexBinaryFlat`
  when JAX runs on a GPU and faiss was built with GPU support (faiss-gpu), else
  `IndexBinaryFlat` on the CPU.

  Returns:
    `(index, name)`.
  """
  import faiss  # pylint: disable=import-outside-toplevel
  if _on_gpu() and hasattr(faiss, "GpuIndexBinaryFlat") and faiss.get_num_gpus() > 0:
    resources = faiss.StandardGpuResources()
    index = faiss.GpuIndexBinaryFlat(resources, bits)
    index.referenced_resources = resources  # Lives as long as the index.
    return index, "GpuIndexBinaryFlat (GPU)"
  return faiss.IndexBinaryFlat(bits), "IndexBinaryFlat (CPU)"


def run_child(args: list[str], env: dict[str, str] | None = None
              ) -> tuple[float, float, int, str]:
  """`(wall s, peak RSS GB, exit status, last output line)` of one child process."""
  start = time.perf_counter()
  child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env)
  output = child.stdout.read()
  _, status, usage = os.wait4(child.pid, 0)
  wall = time.perf_counter() - start
  last = [line for line in output.splitlines() if line.strip()][-1:] or [""]
  return wall, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status), last[0]


def memory_line() -> str:
  """The run's peak memory: the device's `memory_stats()` where the backend keeps
  them (GPU, TPU), and the process's peak resident host memory."""
  host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux.
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return (f"Peak memory: {stats['peak_bytes_in_use'] / 2**30:.2f} GiB on the "
            f"{device.device_kind} (`memory_stats()`), {host:.2f} GiB resident on the host.")
  return (f"Peak memory: {host:.2f} GiB resident on the host (the {jax.default_backend()} "
          "backend keeps no device memory statistics).")


def write_report(lines: Sequence[str], output: str | None) -> None:
  """Prints a benchmark's markdown report, with its `memory_line`, and writes it
  to `output` (atomically) if given."""
  console.write_markdown([*lines, "", memory_line()], output)
