r"""Memory of EMD-CNN on web_news pixels by number of devices: inputs placed on every
device, or streamed from the host (`--config.stream_inputs`).

  python -m benchmarks.stream_rss --output=reports/benchmark_stream_rss.md

Each row is one child process running EMD-CNN on web_news (the image CNN on
64 x 64 pixels and the character CNN, `--steps` training steps, as
`python -m experiments.run` does) on N simulated CPU devices
(`--xla_force_host_platform_device_count=N`). The measures:

- device bytes: the most bytes that live arrays hold summed over every device's
  copy (`addressable_shards`), sampled at each validation of the stage. An
  array replicated on 8 devices counts 8 times: this is what 8 accelerators
  would hold. With the inputs placed on the devices the training set is
  replicated on each one; streamed, the devices hold a few batches.
- peak RSS: the child's `ru_maxrss`, which also counts the runtime's own work on
  every simulated device, so it is not a measure of the arrays alone (the first
  rows: the runtime with a jitted product on replicated arrays, nothing of cmjax;
  `benchmarks.rss_attribution` splits the quiet runs' peak by allocation stack).
- at the end of the run (after a garbage collection), the resident memory
  (`/proc/self/smaps`), split by glibc: the bytes malloc has handed out and not
  freed (`mallinfo2()`; on simulated devices their buffers and the runtime's
  temporaries too), and the resident bytes of malloc's heaps (`[heap]` and the
  64 MiB-aligned thread arenas) that are free: memory freed but still held,
  which glibc neither reuses for another thread's arena nor returns.

- peak during: the phase of the run (training, validation, test) in which a
  thread sampling the resident memory every 2 ms saw its highest value.

The streamed runs are made on all pairs and on every 4th pair of both splits (what
grows with the devices in proportion to the data grows 4 times less with the
quarter), each both as is and quietly: with glibc's mmap threshold fixed at 128 KiB
(`MALLOC_MMAP_THRESHOLD_`; freed blocks larger than that go back to the system at
once, where by default the threshold rises after the first large free and the
allocator keeps later freed temporaries resident) and with every program loaded
from JAX's persistent compilation cache (filled by one run first), so that neither
the allocator's held memory nor the compiler's is in the peak. Each run is
repeated `--repeats` times; the table gives the median and the range.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile

from absl import app, flags
import numpy as np

import benchmarks

FLAGS = flags.FLAGS
# The runtime's own growth with the device count: a jitted product on arrays replicated
# over every device, nothing of cmjax.
_BARE = ("import jax, numpy as np; from jax.sharding import Mesh, NamedSharding, PartitionSpec; "
         "m = Mesh(np.asarray(jax.devices()), ('data',)); "
         "x = jax.device_put(np.ones((64, 64), np.float32), NamedSharding(m, PartitionSpec())); "
         "jax.jit(lambda a: (a @ a).sum())(x).block_until_ready()")
# One run of the method, as `experiments.run` does it, that prints as its last line (JSON)
# the most device bytes held at any validation (every device's copy counted) and, at its
# end, its resident memory, the bytes glibc's malloc has handed out and not freed, and the
# resident bytes of malloc's heaps that are free, and the phase of the run (training,
# validation, test) in which its resident memory peaked.
RUN_SCRIPT = """
import ctypes, dataclasses, gc, json, os, sys, threading, time, jax, numpy as np
from cmjax import data, protocol, runner, train
from cmjax.methods import registry
class MallInfo2(ctypes.Structure):  # glibc's `struct mallinfo2` (glibc 2.33 and later).
  _fields_ = [(name, ctypes.c_size_t) for name in
              "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
def malloc_bytes():  # Handed out and not freed, and freed but still resident (glibc only).
  try:
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
  except (OSError, AttributeError):
    return {}
  mallinfo2.restype = MallInfo2
  heaps, in_heaps, rss = 0, False, 0  # glibc's heaps: [heap] and its 64 MiB-aligned arenas.
  with open("/proc/self/smaps") as smaps:
    for line in smaps:
      field, *rest = line.split()
      if not field.endswith(":"):  # A mapping's header: its address range, then its name.
        low, high = (int(end, 16) for end in field.split("-"))
        in_heaps = (rest[-1] == "[heap]" if len(rest) == 5 else
                    low % 2**26 == 0 and high - low <= 2**26)
      elif field == "Rss:":
        rss += int(rest[0]) * 1024
        heaps += int(rest[0]) * 1024 if in_heaps else 0
  info = mallinfo2()
  return {"rss": rss, "malloc_in_use": info.uordblks + info.hblkhd,
          "malloc_free_resident": heaps - info.uordblks}
phase, peaks = ["training"], {}  # The resident memory's peak in each phase of the run.
def sample():
  page = os.sysconf("SC_PAGE_SIZE")
  while True:
    with open("/proc/self/statm") as statm:
      rss = int(statm.read().split()[1]) * page
    peaks[phase[0]] = max(rss, peaks.get(phase[0], 0))
    time.sleep(0.002)
def validation_map(*args, **kwargs):
  phase[0] = "validation"
  try:
    return validate(*args, **kwargs)
  finally:
    phase[0] = "training"
def encode(*args, **kwargs):  # The test evaluation's first step: the rest is the test.
  phase[0] = "test"
  return encode_split(*args, **kwargs)
validate, encode_split = protocol.validation_map, protocol.encode
protocol.validation_map, protocol.encode = validation_map, encode
threading.Thread(target=sample, daemon=True).start()
method, data_dir, workdir, steps, stream, stride = json.loads(sys.argv[1])
spec = registry.get(method)
config = registry.make_config(spec, "default", steps=steps,
                              training=dict(eval_every=steps // 4), stream_inputs=stream)
dataset = registry.load_data(spec, config, "web_news", data_dir, data.FeatureChoice(None, None))
every = lambda split: split.take(np.arange(0, len(split), stride))
dataset = dataclasses.replace(dataset, train=every(dataset.train), test=every(dataset.test))
held = []
def record(stage, step, scores):
  held.append(sum(s.data.nbytes for a in jax.live_arrays() for s in a.addressable_shards))
runner.run(spec, config, dataset, workdir, loop=train.LoopConfig(on_validation=record))
gc.collect()
time.sleep(0.01)
print(json.dumps({"device_bytes": max(held), "peak_phase": max(peaks, key=peaks.get),
                  **malloc_bytes()}))
"""
# (row name, stream_inputs, keep every stride-th pair of both splits, extra environment).
# The compilation cache's folder is filled by one run before the measured ones.
_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}
_CACHE = {"JAX_COMPILATION_CACHE_DIR": "{scratch}/compilation_cache",
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
QUIET_ENV = {**_MMAP, **_CACHE}  # Neither the allocator's held memory nor the compiler's.
_INPUTS = (("on every device", False, 1, {}), ("streamed (grain)", True, 1, {}),
           ("streamed, every 4th pair", True, 4, {}),
           ("streamed, mmap threshold, cached programs", True, 1, QUIET_ENV),
           ("streamed, mmap threshold, cached programs, every 4th pair", True, 4, QUIET_ENV))
flags.DEFINE_list("devices", ["1", "4", "8"], "Simulated device counts.")
flags.DEFINE_string("method", "emd_cnn_cosine", "EMD-CNN method (the cosine control row "
                    "skips the Sinkhorn ranking, which does not depend on the inputs' placement).")
flags.DEFINE_integer("steps", 40, "Training steps of each run.")
flags.DEFINE_integer("repeats", 3, "Runs of each row; the report gives the median peak RSS.")
flags.DEFINE_string("data_dir", None, "web_news release (default: the usual lookup).")
flags.DEFINE_string("scratch", None, "Folder for the workdirs (default: a new temp dir).")
flags.DEFINE_string("output", None, "Markdown report to write.")


def main(argv):
  benchmarks.start(argv)
  if len(FLAGS.devices) < 2:
    raise app.UsageError("--devices: at least two device counts (growth is between them)")
  scratch = FLAGS.scratch or tempfile.mkdtemp(prefix="cmjax_stream_rss_")
  rows = []  # (inputs, devices, [(wall s, peak RSS GiB, exit, last line)] per repeat)
  for count in FLAGS.devices:  # The runtime alone: a jitted product on replicated arrays.
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
    rows.append(("runtime alone", int(count),
                 [benchmarks.run_child([sys.executable, "-c", _BARE], env)]))
  for inputs, stream, stride, extra in _INPUTS:
    for count in FLAGS.devices:
      env = dict(os.environ, **{k: v.format(scratch=scratch) for k, v in extra.items()},
                 XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
      runs = []
      for repeat in range(-1 if "JAX_COMPILATION_CACHE_DIR" in extra else 0, FLAGS.repeats):
        workdir = os.path.join(scratch, f"{len(rows)}_{count}_{repeat}")
        runs.append(benchmarks.run_child(
            [sys.executable, "-c", RUN_SCRIPT,
             json.dumps([FLAGS.method, FLAGS.data_dir, workdir, FLAGS.steps, stream, stride])],
            env))
        print(f"{inputs}, {count} devices: {runs[-1][1]:.3f} GiB, {runs[-1][0]:.0f} s, "
              f"exit {runs[-1][2]}", flush=True)
      rows.append((inputs, int(count), runs[-FLAGS.repeats:]))  # Less the cache's filling.
  lines = [
      "# Memory by number of devices: inputs on every device, or streamed",
      "",
      "Regenerate: `python -m benchmarks.stream_rss --output=reports/benchmark_stream_rss.md`",
      "",
      benchmarks.machine(),
      "",
      f"{FLAGS.method} on web_news pixels, its `default` preset with `steps={FLAGS.steps}`, on "
      "N simulated CPU devices. Device GiB: the most bytes live arrays held at a validation, "
      "every device's copy counted (what N accelerators would hold). Peak RSS: the child's "
      "`ru_maxrss`, which also counts the runtime's work on every simulated device; the "
      f"median of {FLAGS.repeats} runs, with their range. At the end of the run: its resident "
      "memory; the bytes malloc has handed out and not freed (glibc's `mallinfo2()`, mmapped "
      "blocks included); the resident bytes of malloc's heaps (`[heap]` and the 64 MiB-aligned "
      "thread arenas in `/proc/self/smaps`) that are free, held after a free; medians. "
      "Growth: against the row's first device count. Peak during: the phase of the run "
      "whose resident memory (sampled every 2 ms) was the highest, in most of the row's runs.",
      "",
      "| inputs | devices | device GiB | growth | end: RSS GiB | growth | malloc in use | "
      "growth | freed, resident | growth | peak RSS GiB (range) | growth | peak during | "
      "wall s | exit |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  def measure(run, key: str) -> float:  # GiB from a run's last line; NaN if absent.
    try:
      return json.loads(run[3])[key] / 2**30
    except (ValueError, KeyError, TypeError):
      return float("nan")

  def median(runs, key: str | None = None) -> float:  # Of peak RSS, or of a measure.
    return float(np.median([run[1] if key is None else measure(run, key) for run in runs]))

  growth = {}  # (inputs, key) -> growth of the median from the row's first device count.
  for inputs, count, runs in rows:
    _, _, first = next(row for row in rows if row[0] == inputs)
    cells = []
    for key in ("device_bytes", "rss", "malloc_in_use", "malloc_free_resident", None):
      if inputs == "runtime alone" and key is not None:
        cells.append("- | -")
        continue
      growth[inputs, key] = median(runs, key) - median(first, key)
      peaks = [run[1] for run in runs]
      spread = f" ({min(peaks):.3f}-{max(peaks):.3f})" if key is None and len(runs) > 1 else ""
      cells.append(f"{median(runs, key):.3f}{spread} | {growth[inputs, key]:+.3f}")
    failed = [f"{run[2]}: {run[3]}" for run in runs if run[2] != 0]
    phases = [json.loads(run[3])["peak_phase"] for run in runs if run[2] == 0
              and inputs != "runtime alone"]
    cells.append(collections.Counter(phases).most_common(1)[0][0] if phases else "-")
    lines.append(f"| {inputs} | {count} | {' | '.join(cells)} | "
                 f"{np.median([run[0] for run in runs]):.0f} | {failed[0] if failed else 0} |")
  (everywhere, *_), (streamed, *_), (streamed_quarter, *_), (quiet, *_), (quiet_quarter, *_) = _INPUTS
  added = int(FLAGS.devices[-1]) - int(FLAGS.devices[0])  # Devices added along a row.
  # Peak growth = fixed + data share * scaling: its part that scales with the data, from
  # all pairs and every 4th pair (a quarter) of the quiet rows.
  scaling = (growth[quiet, None] - growth[quiet_quarter, None]) / (1 - 1 / 4)
  spread = max(max(run[1] for run in runs) - min(run[1] for run in runs)
               for inputs, _, runs in rows if inputs == quiet or inputs == quiet_quarter)
  mib = lambda gib: f"{gib * 1024 / added:.1f} MiB"
  lines += [
      "",
      f"Streamed, from {FLAGS.devices[0]} to {FLAGS.devices[-1]} devices, the arrays on the "
      f"devices grow {growth[streamed, 'device_bytes']:+.3f} GiB on all pairs and "
      f"{growth[streamed_quarter, 'device_bytes']:+.3f} GiB on a quarter of them "
      f"({mib(growth[streamed, 'device_bytes'])} a device added): the parameters and the "
      "optimizer state, replicated for data-parallel training, not the data. With the "
      f"inputs on every device they grow {growth[everywhere, 'device_bytes']:+.3f} GiB.",
      "",
      f"The peak RSS, with glibc returning every freed block over 128 KiB to the system "
      "(`MALLOC_MMAP_THRESHOLD_=131072`) and every program loaded from JAX's persistent "
      f"compilation cache (runs of a row within {spread:.3f} GiB), grows "
      f"{growth[quiet, None]:+.3f} GiB on all pairs and {growth[quiet_quarter, None]:+.3f} GiB "
      f"on a quarter: {scaling:+.3f} GiB of it scales with the data "
      f"({mib(scaling)} a device added, on all pairs), the simulated devices' transient work "
      "(the peak falls in the phase the table names) outside the arrays live at a "
      f"validation; the rest, {growth[quiet, None] - scaling:+.3f} GiB, does not. With the "
      f"default allocator and compiler it grows {growth[streamed, None]:+.3f} GiB on all "
      f"pairs and {growth[streamed_quarter, None]:+.3f} GiB on a quarter; at the end of the "
      f"run on all pairs the resident memory grows {growth[streamed, 'rss']:+.3f} GiB, of "
      f"which the bytes malloc has handed out and not freed {growth[streamed, 'malloc_in_use']:+.3f} "
      f"GiB and the free but resident bytes of its heaps "
      f"{growth[streamed, 'malloc_free_resident']:+.3f} GiB.",
  ]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
