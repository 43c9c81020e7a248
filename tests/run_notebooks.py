r"""Runs every notebook in `colabs/` top to bottom in a fresh kernel, as a user would.

  python tests/run_notebooks.py [--output=reports/notebooks.md] [NOTEBOOK ...]

The kernel runs in a new virtual environment that has no cmjax (checked), so
each notebook's install cell really installs cmjax (`%pip install` from
`CMJAX_SOURCE`, set here to this checkout) and imports it in the same kernel.
The real datasets are handed to the notebooks that can use them
(`CMJAX_WIKIPEDIA`, `CMJAX_WEB_NEWS`, from `../shared/data` or
`$CMJAX_DATA_DIR`), with an empty feature cache. A notebook fails on any error
output. Prints (and writes) each notebook's time; exit status 1 if any failed.
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


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebooks", nargs="*", help="Notebooks to run (default: every one in "
                      "colabs/).")
  parser.add_argument("--output", help="Markdown table of the notebooks' times to write.")
  parser.add_argument("--timeout", type=int, default=1200, help="Seconds per cell.")
  parser.add_argument("--executed", help="Folder to write the executed notebooks to.")
  args = parser.parse_args()
  data_root = os.environ.get("CMJAX_DATA_DIR", os.path.join(REPO, "..", "shared", "data"))
  rows, failed = [], 0
  load = os.getloadavg()[0]
  with tempfile.TemporaryDirectory(prefix="cmjax_notebooks_") as root:
    start = time.perf_counter()
    os.environ.update(_fresh_kernel(root))
    setup = time.perf_counter() - start
    print(f"fresh kernel environment (no cmjax): {setup:.0f} s", flush=True)
    os.environ.update(CMJAX_SOURCE=REPO, CMJAX_CACHE_DIR=os.path.join(root, "cache"))
    for name in ("wikipedia", "web_news"):
      if os.path.isdir(os.path.join(data_root, name)):
        os.environ[f"CMJAX_{name.upper()}"] = os.path.abspath(os.path.join(data_root, name))
    for path in args.notebooks or sorted(glob.glob(os.path.join(COLABS, "*.ipynb"))):
      notebook = nbformat.read(path, as_version=4)
      client = nbclient.NotebookClient(notebook, timeout=args.timeout, kernel_name=KERNEL,
                                       resources={"metadata": {"path": COLABS}})
      start = time.perf_counter()
      try:
        client.execute()
        problem = _error_text(notebook)
      except nbclient.exceptions.CellExecutionError as e:
        problem = re.sub(r"\x1b\[[0-9;]*m", "", str(e).strip().splitlines()[-1])
      seconds = time.perf_counter() - start
      if args.executed:
        os.makedirs(args.executed, exist_ok=True)
        nbformat.write(notebook, os.path.join(args.executed, os.path.basename(path)))
      failed += problem is not None
      status = "passed" if problem is None else f"FAILED ({problem})"
      print(f"{os.path.basename(path)}: {status} in {seconds:.0f} s", flush=True)
      rows.append(f"| {os.path.basename(path)} | {status} | {seconds:.0f} |")
  if args.output:
    lines = ["# Notebooks in a fresh kernel", "",
             "Regenerate: `python tests/run_notebooks.py --output=<this file>` (`.ci/run` runs "
             "it). Each notebook's time includes its install cell (pip installing cmjax and "
             "its dependencies into a new environment, from pip's cache when warm).", "",
             f"{os.cpu_count()} CPU cores (load average {load:.1f} at the start: other work "
             f"shares the cores above 0); kernel environment set up in {setup:.0f} s.", "",
             "| notebook | result | seconds |", "|---|---|---|", *rows]
    with open(args.output, "w") as f:
      f.write("\n".join(lines) + "\n")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
