r"""Where the peak resident memory of a streamed EMD-CNN run on web_news pixels goes, by
number of devices: the quiet runs of `benchmarks.stream_rss`, traced by memray.

  python -m benchmarks.rss_attribution --output=reports/benchmark_rss_attribution.md

(memray, Linux or macOS: `pip install -e ".[benchmark]"`.)
Each run is the child of `benchmarks.stream_rss` (inputs streamed from the host, glibc's
mmap threshold at 128 KiB, every program from JAX's persistent compilation cache, which
one untraced run of each row fills first) under `memray run --native`, which records
every allocation with its native call stack and samples the resident memory every 10
ms. At the sample with the highest resident memory, the bytes allocated and not yet
freed are split by where their call stack passes (`region`):

- simulated devices: XLA's CPU runtime, for an array's buffer (`xla::CpuDeviceMemory`)
  or inside a program's execution (`xla::cpu::ThunkExecutor`: its temporaries, Eigen's
  packing buffers of a convolution). On accelerators this is device memory, not the
  host's. The child also reports the bytes of the arrays live at a validation (every
  device's copy counted); the rest is the executions' scratch.
- programs: stacks through LLVM, MLIR or XLA's HLO (lowering, loaded executables).
- host: everything else: Python objects, NumPy arrays, the input pipeline, cmjax.
- untracked: resident memory that no allocation call made (shared libraries' code and
  data, thread stacks, memray's own buffers).

memray's own memory is in every row alike, so the peaks here are above
`benchmarks.stream_rss`'s and only the growth along a row compares.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
from typing import Iterable, Sequence

from absl import app, flags
import numpy as np

import benchmarks
from benchmarks import stream_rss

FLAGS = flags.FLAGS
# The same runs as `benchmarks.stream_rss`, so its flags: --devices, --method, --steps,
# --repeats (here: traced runs of each row), --data_dir, --scratch (here the captures
# too), --output.
flags.adopt_module_key_flags(stream_rss)

REGIONS = ("host", "programs", "simulated devices")
# Frames (substrings of a native frame's function) that place an allocation, tried in
# this order: the simulated devices first, since their executions run compiled code.
_DEVICE_FRAMES = ("xla::CpuDeviceMemory", "xla::cpu::ThunkExecutor",
                  "CpuPjRtRawLoadedExecutable::Execute")
_PROGRAM_FRAMES = ("llvm::", "mlir::", "xla::Hlo", "xla::cpu::ObjectLoader",
                   "xla::cpu::CpuCompiler", "CompilationResult")
# (row name, keep every stride-th pair of both splits).
_DATA = (("all pairs", 1), ("every 4th pair", 4))


def region(frames: Sequence[str]) -> str:
  """The region (one of `REGIONS`) of an allocation whose native stack has `frames`
  (function names, innermost first)."""
  for name, markers in (("simulated devices", _DEVICE_FRAMES), ("programs", _PROGRAM_FRAMES)):
    if any(marker in frame for frame in frames for marker in markers):
      return name
  return "host"


def live_by_region(records: Iterable, snapshot: int) -> dict[str, int]:
  """Bytes allocated and not freed at memory sample `snapshot`, by `region`.

  Args:
    records: memray's temporal allocation records: each has `intervals` (with
      `allocated_before_snapshot`, `deallocated_before_snapshot` (None: never freed)
      and `n_bytes`) and `native_stack_trace()` (`(function, file, line)` tuples).
  """
  live = collections.Counter({name: 0 for name in REGIONS})
  for record in records:
    held = sum(interval.n_bytes for interval in record.intervals
               if interval.allocated_before_snapshot <= snapshot
               and (interval.deallocated_before_snapshot is None
                    or interval.deallocated_before_snapshot > snapshot))
    if held:
      live[region([frame[0] for frame in record.native_stack_trace()])] += held
  return dict(live)


def attribute(capture: str) -> dict[str, float]:
  """A memray capture's peak: `rss`, `untracked` and each region's bytes at the sample
  with the highest resident memory."""
  import memray  # pylint: disable=import-outside-toplevel
  reader = memray.FileReader(capture)
  try:
    samples = list(reader.get_memory_snapshots())
    peak = max(range(len(samples)), key=lambda index: samples[index].rss)
    live = live_by_region(reader.get_temporal_allocation_records(merge_threads=True), peak)
  finally:
    reader.close()
  return {"rss": samples[peak].rss, "untracked": samples[peak].rss - sum(live.values()), **live}


def quiet_run(scratch: str, devices: int, stride: int, name: str, trace: bool
               ) -> dict[str, float]:
  """One quiet child of `benchmarks.stream_rss`. Under memray (`trace`): its
  attribution and `device_bytes`; untraced (filling the compilation cache) or failed
  (its last line is logged): `{}`."""
  env = dict(os.environ, **{key: value.format(scratch=scratch)
                            for key, value in stream_rss.QUIET_ENV.items()},
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  capture = os.path.join(scratch, f"{name}.bin")
  tracer = [sys.executable, "-m", "memray", "run", "--native", "-q", "-f", "-o", capture]
  arguments = json.dumps([FLAGS.method, FLAGS.data_dir, os.path.join(scratch, name),
                          FLAGS.steps, True, stride])
  wall, _, status, last = benchmarks.run_child(
      [*(tracer if trace else [sys.executable]), "-c", stream_rss.RUN_SCRIPT, arguments], env)
  print(f"{name}: exit {status}, {wall:.0f} s", flush=True)
  if status != 0:
    print(f"  {last}", flush=True)
    return {}
  if not trace:
    return {}
  # Read in a process of its own: reading a capture takes about 6 GiB, which memray's
  # reader does not all give back.
  script = ("import json, sys; from benchmarks import rss_attribution; "
            "print(json.dumps(rss_attribution.attribute(sys.argv[1])))")
  _, _, status, read = benchmarks.run_child([sys.executable, "-c", script, capture])
  os.remove(capture)  # Tens of MB each.
  if status != 0:
    print(f"  reading {capture}: {read}", flush=True)
    return {}
  return {**json.loads(read), "device_bytes": json.loads(last)["device_bytes"]}


def main(argv):
  benchmarks.start(argv)
  if len(FLAGS.devices) < 2:
    raise app.UsageError("--devices: at least two device counts (growth is between them)")
  scratch = FLAGS.scratch or tempfile.mkdtemp(prefix="cmjax_rss_attribution_")
  rows = []  # (data, devices, [measures of each traced run])
  for data, stride in _DATA:
    for count in map(int, FLAGS.devices):
      quiet_run(scratch, count, stride, f"fill_{stride}_{count}", trace=False)
      runs = [quiet_run(scratch, count, stride, f"{stride}_{count}_{repeat}", trace=True)
              for repeat in range(FLAGS.repeats)]
      rows.append((data, count, [run for run in runs if run]))
  columns = ("rss", "host", "programs", "simulated devices", "device_bytes", "untracked")
  median = lambda runs, key: float(np.median([run[key] for run in runs])) / 2**20
  lines = [
      "# Where the peak resident memory goes, by number of devices",
      "",
      "Regenerate: `python -m benchmarks.rss_attribution "
      "--output=reports/benchmark_rss_attribution.md`",
      "",
      benchmarks.machine(),
      "",
      f"{FLAGS.method} on web_news pixels, its `default` preset with `steps={FLAGS.steps}`, "
      "inputs streamed, on N simulated CPU devices: the quiet runs of "
      "[benchmark_stream_rss.md](benchmark_stream_rss.md) (`MALLOC_MMAP_THRESHOLD_=131072`, "
      "every program from the persistent compilation cache), each under `memray run "
      "--native`. At the memory sample (every 10 ms) with the highest resident memory, the "
      "bytes allocated and not freed, by where their native call stack passes: host "
      "(Python, NumPy, the input pipeline, cmjax), programs (LLVM, MLIR, XLA's HLO: lowering "
      "and loaded executables), simulated devices (XLA's CPU runtime: array buffers and "
      "the programs' executions; device memory on accelerators), and of those the arrays "
      "live at a validation (every device's copy, as the child reports them); untracked: "
      "resident memory no allocation call made (libraries, thread stacks, memray's "
      f"buffers). MiB, medians of {FLAGS.repeats} traced runs; growth against the row's "
      "first device count. memray's own memory is in every run, so only growth compares "
      "with the untraced report.",
      "",
      "| data | devices | runs | peak RSS | growth | host | growth | programs | growth | "
      "simulated devices | growth | of which arrays | growth | untracked | growth |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  growth = {}  # (data, column) -> growth of the median from the row's first device count.
  for data, count, runs in rows:
    first = next(row[2] for row in rows if row[0] == data)
    if not runs or not first:
      lines.append(f"| {data} | {count} | 0 |" + " - | - |" * len(columns))
      continue
    cells = []
    for key in columns:
      growth[data, key] = median(runs, key) - median(first, key)
      cells.append(f"{median(runs, key):.1f} | {growth[data, key]:+.1f}")
    lines.append(f"| {data} | {count} | {len(runs)} | {' | '.join(cells)} |")
  added = int(FLAGS.devices[-1]) - int(FLAGS.devices[0])
  if all((data, "rss") in growth for data, _ in _DATA):
    summary = []
    for data, _ in _DATA:
      grown = lambda key: growth[data, key]  # pylint: disable=cell-var-from-loop
      scratch_growth = grown("simulated devices") - grown("device_bytes")
      summary.append(
          f"On {data}, from {FLAGS.devices[0]} to {FLAGS.devices[-1]} devices the peak grows "
          f"{grown('rss'):+.1f} MiB: the simulated devices' memory {grown('simulated devices'):+.1f} "
          f"MiB (arrays {grown('device_bytes'):+.1f}, the executions' scratch "
          f"{scratch_growth:+.1f}: {scratch_growth / added:.1f} MiB a device added), programs "
          f"{grown('programs'):+.1f}, host {grown('host'):+.1f}, untracked "
          f"{grown('untracked'):+.1f}.")
    lines += ["", " ".join(summary)]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
