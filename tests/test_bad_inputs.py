"""Every case of the bad-input audit behaves as `reports/bad_inputs.md` says."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bad_inputs_report_is_reproduced(tmp_path):
  """Runs every case (`tests/bad_inputs.py`): each must end as expected (exit
  status, one line naming the file, field or flag, no traceback, nothing
  half-written), and the report must equal the committed one."""
  output = tmp_path / "bad_inputs.md"
  result = subprocess.run([sys.executable, os.path.join(REPO, "tests", "bad_inputs.py"),
                           f"--output={output}"], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)
  failures = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
  assert result.returncode == 0 and not failures, "\n".join(failures) or result.stderr[-3000:]
  committed = open(os.path.join(REPO, "reports", "bad_inputs.md")).read()
  assert output.read_text() == committed, (
      "reports/bad_inputs.md is stale: run python tests/bad_inputs.py "
      "--output=reports/bad_inputs.md")
