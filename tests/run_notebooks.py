r"""Runs every notebook in `colabs/` top to bottom in a fresh kernel, as a user would.

  python tests/run_notebooks.py [--output=reports/notebooks.md] [NOTEBOOK ...]

Every notebook runs twice, each time in a kernel of a new virtual environment
that has no cmjax (checked), so the install cell really installs cmjax and
imports it in the same kernel:
- from the checkout: `CMJAX_SOURCE` unset, the cell finds the checkout above
  the notebook's folder, as in a Jupyter started anywhere inside it;
- from a URL: `CMJAX_SOURCE=git+file://<this checkout>`, the form of a Colab
  runtime installing from the repository (its committed HEAD), extras included,
  in a kernel started outside the repository (a temporary folder), as on Colab.
The real datasets are found by the notebooks' own lookup (`$CMJAX_DATA_DIR`,
set here to `../shared/data` or the variable's value), with an empty feature
cache. A notebook fails on any error output, and on outputs a person should
not have to read (`output_problem`): an absl log line (`INFO:absl:...`, on
stderr or anywhere), or no progress bar at all (a tqdm widget or its text
form). Prints (and writes) each notebook's time; exit status 1 if any failed.
`.ci/run` runs this before the tests.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

import nbclient
import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLABS = os.path.join(REPO, "colabs")
KERNEL = "cmjax-fresh"
# absl's own line format (`I1206 21:15:01.123 ...`) or the standard library's
# default one (`INFO:absl:...`): what `cmjax.console.setup_logging` replaces.
ABSL_LINE = re.compile(r"^(?:[A-Z]+:absl:|[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\])",
                       re.MULTILINE)
# tqdm's text bar: `label:  40%|####      | 200/500 [...]`; or its widget.
TEXT_BAR = re.compile(r"\d+%\|[^|\n]*\| *\d+/\d+")
WIDGET = "application/vnd.jupyter.widget-view+json"


def _fresh_kernel(root: str) -> dict[str, str]:
  """A venv with ipykernel and no cmjax, and its kernel spec; -> the environment
  that makes Jupyter find that kernel."""
  venv = os.path.join(root, "venv")
  subprocess.run([sys.executable, "-m", "venv", venv], check=True)
  python = os.path.join(venv, "bin", "python")
  subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip", "ipykernel"],
                 check=True)
  if subprocess.run([python, "-c", "import cmjax"], capture_output=True,
                    cwd=root).returncode == 0:
    raise SystemExit("the fresh environment already has cmjax: the install cells would not "
                     "be tested")
  subprocess.run([python, "-m", "ipykernel", "install", "--prefix", venv, "--name", KERNEL],
                 check=True, capture_output=True)
  return {"JUPYTER_PATH": os.path.join(venv, "share", "jupyter")}


def _error_text(notebook) -> str | None:
  for index, cell in enumerate(notebook.cells):
    for output in cell.get("outputs", []):
      if output.output_type == "error":
        return f"cell {index}: {output.ename}: {output.evalue}"
  return None


def output_problem(notebook) -> str | None:
  """What a person should not see in an executed notebook's outputs, or None: an
  absl log line (the first one is quoted), or not one progress bar (a widget or
  tqdm's text fallback) in the whole notebook."""
  bars = 0
  for index, cell in enumerate(notebook.cells):
    for output in cell.get("outputs", []):
      text = output.get("text", "") if output.get("output_type") == "stream" else ""
      line = ABSL_LINE.search(text)
      if line:
        quoted = text[line.start():].splitlines()[0][:120]
        return f"cell {index}: an absl log line on {output.get('name')}: {quoted!r}"
      bars += bool(TEXT_BAR.search(text)) or WIDGET in output.get("data", {})
  return None if bars else "no progress bar (a widget or its text form) in any output"


def _run(path: str, timeout: int, executed: str | None,
         cwd: str) -> tuple[str | None, float]:
  """Runs one notebook in the fresh kernel, started in `cwd`: `(problem or None,
  seconds)`."""
  notebook = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name=KERNEL,
                                   resources={"metadata": {"path": cwd}})
  start = time.perf_counter()
  try:
    client.execute()
    problem = _error_text(notebook) or output_problem(notebook)
  except nbclient.exceptions.CellExecutionError as e:
    problem = re.sub(r"\x1b\[[0-9;]*m", "", str(e).strip().splitlines()[-1])
  if executed:
    os.makedirs(executed, exist_ok=True)
    nbformat.write(notebook, os.path.join(executed, os.path.basename(path)))
  return problem, time.perf_counter() - start


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebooks", nargs="*", help="Notebooks to run (default: every one in "
                      "colabs/).")
  parser.add_argument("--output", help="Markdown table of the notebooks' times to write.")
  parser.add_argument("--timeout", type=int, default=1200, help="Seconds per cell.")
  parser.add_argument("--executed", help="Folder to write the executed notebooks to.")
  parser.add_argument("--installs", default="checkout,url",
                      help="Which install forms to run every notebook with: checkout, url.")
  args = parser.parse_args()
  data_root = os.path.abspath(os.environ.get("CMJAX_DATA_DIR",
                                             os.path.join(REPO, "..", "shared", "data")))
  sources = {"checkout": "", "url": f"git+file://{REPO}"}
  rows, setups, failed = [], [], 0
  load = os.getloadavg()[0]
  for install in args.installs.split(","):
    with tempfile.TemporaryDirectory(prefix="cmjax_notebooks_") as root:
      start = time.perf_counter()
      os.environ.update(_fresh_kernel(root))
      setups.append(time.perf_counter() - start)
      print(f"fresh kernel environment (no cmjax) for the {install} install: "
            f"{setups[-1]:.0f} s", flush=True)
      os.environ.update(CMJAX_SOURCE=sources[install], CMJAX_DATA_DIR=data_root,
                        CMJAX_CACHE_DIR=os.path.join(root, "cache"))
      for path in args.notebooks or sorted(glob.glob(os.path.join(COLABS, "*.ipynb"))):
        # The URL install as on Colab: the kernel starts outside any checkout.
        cwd = COLABS if install == "checkout" else root
        problem, seconds = _run(path, args.timeout, args.executed, cwd)
        failed += problem is not None
        status = "passed" if problem is None else f"FAILED ({problem})"
        name = os.path.basename(path)
        print(f"{name} ({install} install): {status} in {seconds:.0f} s", flush=True)
        rows.append(f"| {name} | {install} | {status} | {seconds:.0f} |")
  if args.output:
    lines = ["# Notebooks in a fresh kernel", "",
             "Regenerate: `python tests/run_notebooks.py --output=<this file>` (`.ci/run` runs "
             "it). Each notebook runs twice, each time in a new environment without cmjax: "
             "installed from the checkout the notebook is in (found by its install cell), "
             "and from a `git+file://` URL of it (`CMJAX_SOURCE`, as on Colab, in a kernel "
             "started in a temporary folder outside the repository). A run fails on an "
             "error, an absl log line or no progress bar in its outputs. Each time "
             "includes the install cell (pip installing cmjax and its dependencies, from "
             "pip's cache when warm).", "",
             f"{os.cpu_count()} CPU cores (load average {load:.1f} at the start: other work "
             f"shares the cores above 0); kernel environments set up in "
             f"{' and '.join(f'{s:.0f} s' for s in setups)}.", "",
             "| notebook | install | result | seconds |", "|---|---|---|---|", *rows]
    with open(args.output, "w") as f:
      f.write("\n".join(lines) + "\n")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
