"""Every case of the bad-input audit behaves as `reports/bad_inputs.md` says."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARDS = 3  # Processes sharing the audit (pytest-xdist spreads them over its workers).


def _rows(text: str) -> dict[int, str]:
  return {int(m.group(1)): line for line in text.splitlines()
          if (m := re.match(r"^\| (\d+) \|", line))}


@pytest.mark.parametrize("shard", range(SHARDS))
def test_bad_inputs_report_is_reproduced(tmp_path, shard):
  """Runs every SHARDS-th case (`tests/bad_inputs.py --shard`): each must end as
  expected (exit status, one line naming the file, field or flag, no traceback,
  nothing half-written), and its row of the report, the report's other lines and
  its number of cases must equal the committed report's."""
  output = tmp_path / "bad_inputs.md"
  result = subprocess.run([sys.executable, os.path.join(REPO, "tests", "bad_inputs.py"),
                           f"--shard={shard}/{SHARDS}", f"--output={output}"], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
  failures = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
  assert result.returncode == 0 and not failures, "\n".join(failures) or result.stderr[-3000:]
  committed = open(os.path.join(REPO, "reports", "bad_inputs.md")).read()
  ours, theirs = _rows(output.read_text()), _rows(committed)
  stale = ("reports/bad_inputs.md is stale: run python tests/bad_inputs.py "
           "--output=reports/bad_inputs.md")
  assert sorted(ours) == [i for i in sorted(theirs) if i % SHARDS == shard], stale
  assert all(ours[i] == theirs[i] for i in ours), stale
  other = lambda text: [l for l in text.splitlines() if not re.match(r"^\| \d+ \|", l)]
  assert other(output.read_text()) == other(committed), stale
