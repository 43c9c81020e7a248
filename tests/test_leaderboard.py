"""The leaderboard commands run, write their tables and figures, and reuse finished runs."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_leaderboard_quick_and_resume(tmp_path):
  command = [sys.executable, "-m", "experiments.leaderboard", "--datasets=synthetic",
             "--seeds=2", "--methods=emd_cnn,cca,sm,corr_ae", "--preset=quick",
             f"--root={tmp_path / 'runs'}", f"--output={tmp_path / 'board.md'}"]
  subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
  table = (tmp_path / "board.md").read_text()
  for method in ("emd_cnn", "cca", "sm", "corr_ae"):
    # A row flagged by its runs' warnings (constant score rows of the tiny quick
    # networks) carries a mark and a note below the table.
    assert re.search(rf"^\| {method}( \(!\))? \|", table, re.M), table
  assert "Best of the Corr-AE family" in table
  assert (tmp_path / "board_synthetic.png").stat().st_size > 10_000
  # A second invocation reuses every finished run: it retrains nothing.
  assert "preset 'quick': smoke run, not for reporting" in table
  os.remove(tmp_path / "runs" / "synthetic" / "cca" / "quick" / "seed1" / "results.json")
  result = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True,
                          timeout=600)
  trained = [l for l in result.stderr.splitlines() if "leaderboard: " in l]
  assert len(trained) == 1 and "cca on synthetic, seed 1" in trained[0]


def test_hashing_leaderboard_tables_and_pr_figures(tmp_path):
  command = [sys.executable, "-m", "experiments.hashing_leaderboard", "--datasets=synthetic",
             "--bits=16,32", "--seeds=1", "--methods=cvh,cca_itq", "--preset=quick",
             f"--root={tmp_path / 'runs'}", f"--output={tmp_path / 'hashing.md'}"]
  subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
  report = (tmp_path / "hashing.md").read_text()
  for bits in (16, 32):
    assert f"## synthetic, {bits} bits" in report
    assert f"![PR curves, synthetic, {bits} bits](hashing_synthetic_{bits}bits.png)" in report
    assert (tmp_path / f"hashing_synthetic_{bits}bits.png").stat().st_size > 10_000
  assert report.count("| cvh |") == 2 and report.count("| cca_itq |") == 2
