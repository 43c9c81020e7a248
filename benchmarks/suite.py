r"""Every benchmark in one command, on the backend JAX has (CPU, GPU or TPU).

  python -m benchmarks.suite --output=reports/benchmark_cpu.md

Each benchmark runs in a process of its own (`python -m benchmarks.<name>`, at
its default sizes unless `--flags` changes them), so each reports its own peak
memory and no two define the same flag. Their reports (and figures) go to a
folder named after the output (`reports/benchmark_cpu/`); the suite's report
names the device and gathers them, a section each. The peers run on the same
device where they have a build for it (PyTorch on CUDA, faiss-gpu's
`GpuIndexBinaryFlat`); POT's exact solver is CPU code. JAX does not preallocate
accelerator memory in these processes, so a peer in the same process gets its
share and `memory_stats()` peaks are what the benchmark used.

A benchmark that fails stops the suite (its output is above the error) and no
suite report is written; `--resume` then runs only the benchmarks whose reports
are not in the folder yet (the others' rows say "earlier run").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from absl import app, flags, logging

from cmjax import console, files
from experiments import cli

FLAGS = flags.FLAGS
BENCHMARKS = ("hamming", "emd", "evaluation", "gcn_text", "uncsm_step", "emd_cnn_step",
              "pretrained", "metric_eval", "scale")
flags.DEFINE_string("output", None, "Suite report (markdown), e.g. reports/benchmark_cpu.md; "
                    "the benchmarks' own reports go to the folder of the same name without .md.")
flags.DEFINE_list("benchmarks", list(BENCHMARKS), "Benchmarks to run, in this order.")
flags.DEFINE_multi_string("flags", [], "NAME:--flag=value: a flag for benchmark NAME only "
                          "(repeat the option for more), e.g. hamming:--database=100000.")
flags.DEFINE_bool("resume", False, "Keep the reports already in the output's folder (from an "
                  "interrupted or failed suite) and run only the missing benchmarks.")
flags.mark_flag_as_required("output")


def _benchmark_flags(names, specs) -> dict[str, list[str]]:
  """`--flags` entries by benchmark; an entry for a benchmark not run is an error."""
  by_name = {name: [] for name in names}
  for spec in specs:
    name, sep, flag = spec.partition(":")
    if not sep or not flag.startswith("--"):
      raise app.UsageError(f"--flags={spec!r}: expected NAME:--flag=value")
    if name not in by_name:
      raise app.UsageError(f"--flags={spec!r}: {name!r} is not among --benchmarks {names}")
    by_name[name].append(flag)
  return by_name


def _child_env() -> dict[str, str]:
  return {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def _machine() -> str:
  """`benchmarks.machine()` from a child, so this process never holds a device."""
  return subprocess.run([sys.executable, "-c", "import benchmarks; print(benchmarks.machine())"],
                        check=True, capture_output=True, text=True, env=_child_env()
                        ).stdout.strip().splitlines()[-1]


def _section(name: str, report: str, folder: str) -> list[str]:
  """A benchmark's report as a section: headings one level down, figures from `folder`."""
  lines = []
  for line in report.rstrip("\n").splitlines():
    if line.startswith("#"):
      line = "#" + line
    lines.append(re.sub(r"\]\((?!https?:|/)([^)]+)\)", rf"]({folder}/\1)", line))
  return [f"<!-- benchmarks.{name} -->", *lines, ""]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  console.setup_logging()
  unknown = sorted(set(FLAGS.benchmarks) - set(BENCHMARKS))
  if unknown:
    raise app.UsageError(f"--benchmarks: unknown {unknown}; choose from {list(BENCHMARKS)}")
  extra = _benchmark_flags(FLAGS.benchmarks, FLAGS.flags)
  if not FLAGS.output.endswith(".md"):
    raise app.UsageError(f"--output={FLAGS.output!r}: expected a .md file")
  folder = FLAGS.output[:-len(".md")]
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise files.RunError(f"--output={FLAGS.output}: the reports' folder {folder} cannot be "
                         f"made ({e.strerror or e})") from None
  sections, rows, spent, ran = [], [], 0.0, 0
  for k, name in enumerate(FLAGS.benchmarks):
    path = os.path.join(folder, f"benchmark_{name}.md")
    if os.path.lexists(path) and not os.path.isfile(path):
      raise files.RunError(f"{path}: where this benchmark's report goes is not a file; move "
                           "it away or choose another --output")
    if FLAGS.resume and os.path.exists(path):
      wall = "earlier run"
    else:
      eta = f"; ETA {spent / ran * (len(FLAGS.benchmarks) - k) / 60:.0f} min" if ran else ""
      logging.info("suite: benchmark %d of %d, %s%s", k + 1, len(FLAGS.benchmarks), name, eta)
      ran += 1
      start = time.time()
      done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", f"--output={path}",
                             *extra[name]], env=_child_env(), check=False)
      seconds = time.time() - start
      spent, wall = spent + seconds, f"{seconds:.0f}"
      if done.returncode:
        raise SystemExit(f"suite: benchmarks.{name} failed (exit code {done.returncode}; its "
                         "output is above); no suite report written (--resume keeps the "
                         "reports written so far)")
    with open(path, encoding="utf-8") as f:
      sections += _section(name, f.read(), os.path.basename(folder))
    rows.append(f"| {name} | {' '.join(extra[name]) or 'defaults'} | {wall} |")
  chosen = ([] if tuple(FLAGS.benchmarks) == BENCHMARKS else
            [f"--benchmarks={','.join(FLAGS.benchmarks)}"])
  command = " ".join(["python -m benchmarks.suite", *chosen,
                      *(f"--flags={spec}" for spec in FLAGS.flags), "--output=<this file>"])
  lines = [
      "# Benchmark suite", "",
      f"Regenerate: `{command}` (every benchmark on JAX's default backend).", "",
      _machine(), "",
      "| benchmark | flags | wall s |", "|---|---|---|", *rows, "",
      f"Total of this invocation {spent / 60:.1f} min. Each section below is the benchmark's own report "
      f"(`{os.path.basename(folder)}/benchmark_<name>.md`), run in its own process.", "",
      *sections,
  ]
  console.write_markdown(lines, FLAGS.output)


if __name__ == "__main__":
  cli.run_app(main)
