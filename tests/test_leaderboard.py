"""The leaderboard commands run, write their tables and figures, and reuse finished runs."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_leaderboard_quick_and_resume(tmp_path):
  command = [sys.executable, "-m", "experiments.leaderboard", "--datasets=synthetic",
             "--seeds=2", "--methods=cca,sm,corr_ae", "--preset=quick",
             f"--root={tmp_path / 'runs'}", f"--output={tmp_path / 'board.md'}"]
  subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
  table = (tmp_path / "board.md").read_text()
  for method in ("cca", "sm", "corr_ae"):
    # A row flagged by its runs' warnings (constant score rows of the tiny quick
    # networks) carries a mark and a note below the table.
    assert re.search(rf"^\| {method}( \(!\))? \|", table, re.M), table
  assert "Best of the Corr-AE family" in table
  assert (tmp_path / "board_synthetic.png").stat().st_size > 10_000
  assert "preset 'quick': smoke run, not for reporting" in table
  # Every row against the best one, paired over the test queries of both seeds.
  rows = [l for l in table.splitlines() if re.match(r"^\| (cca|sm|corr_ae)", l)]
  assert rows[0].count("| best |") == 1
  assert all(re.search(r"\| [+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\], p = ", row)
             for row in rows[1:]), rows
  # A second invocation reuses every finished run, here with --tuned: only the runs of
  # the removed results and of sm's tuned config train, and the table says so.
  from cmjax import tune  # pylint: disable=g-import-not-at-top
  tuned = tune.TuneResult(method="sm", dataset="synthetic", preset="quick", values={"l2": 0.01},
                          validation_avg_map=0.9, budget={"trials": 3, "complete": 2,
                          "pruned": 1, "failed": 0, "steps": 0, "wall_s": 12.0}, trials=[],
                          study="s", storage="sqlite://", holdout=0.2, seed=0)
  tune.write_tuned(tuned, str(tmp_path / "tuned"))
  os.remove(tmp_path / "runs" / "synthetic" / "cca" / "quick" / "seed1" / "results.json")
  result = subprocess.run(command + ["--tuned", f"--tuned_dir={tmp_path / 'tuned'}"], cwd=REPO,
                          check=True, capture_output=True, text=True, timeout=600)
  trained = [l for l in result.stderr.splitlines() if "leaderboard: " in l]
  assert len(trained) == 3, trained
  assert "cca on synthetic, seed 1" in trained[0]
  assert all("sm on synthetic" in l for l in trained[1:]), trained
  table = (tmp_path / "board.md").read_text()
  assert re.search(r"^\| sm .*\| tuned: 3 trials \(1 pruned\), 0 steps, 12 s \|$", table,
                   re.M), table
  assert re.search(r"^\| cca .*\| quick \|$", table, re.M), table


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


def test_one_seed_shows_no_spread_and_reads_back(tmp_path):
  from cmjax import reports  # pylint: disable=g-import-not-at-top
  assert reports._mean_std([0.51234]) == "0.5123 (1 seed)"  # pylint: disable=protected-access
  assert reports._mean_std([0.5, 0.7]) == "0.6000 ± 0.1000"  # pylint: disable=protected-access
  assert reports.over_seeds(1) == "one seed (no spread shown)"
  table = tmp_path / "t.md"
  table.write_text("## wikipedia\n\n| cca | 0.5123 (1 seed) | 0.4000 (1 seed) | 0.4562 (1 seed) | "
                   "x | 0.6000 (1 seed) | 3 |\n")
  assert reports.read_reference(str(table)) == {("wikipedia", "cca"): 0.4562}
  assert reports.read_table_cells(str(table))[("wikipedia", "cca")][2] == "0.4562 (1 seed)"


def test_progress_eta_weighs_each_kind_by_its_own_runs(monkeypatch, caplog):
  from cmjax import reports  # pylint: disable=g-import-not-at-top
  clock = {"now": 0.0}
  cost = {"slow": 100.0, "fast": 10.0}
  monkeypatch.setattr(reports.time, "time", lambda: clock["now"])
  monkeypatch.setattr(reports.runner, "read_results", lambda workdir: None)

  def run(spec, *args, **kwargs):
    clock["now"] += cost[spec]
    return {}

  monkeypatch.setattr(reports.runner, "run", run)
  progress = reports.Progress(["fast", "fast", "slow", "slow"], "test")
  with caplog.at_level("INFO"):
    for kind in ("fast", "fast", "slow", "slow"):
      progress.run(kind, None, None, "w", 0, kind)
  lines = [r.getMessage() for r in caplog.records if "(run " in r.getMessage()]
  assert lines[0].endswith("(run 1 of 4)")  # Nothing timed yet.
  assert lines[1].endswith("(run 2 of 4; ETA 30 s (2 of the runs left of kinds not timed yet))")
  assert lines[3].endswith("(run 4 of 4; ETA 100 s)")  # One slow run left, at its own cost.


def test_progress_shows_a_bar_over_the_runs_where_bars_are_on(monkeypatch, capsys):
  from cmjax import console, reports  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(reports.runner, "read_results", lambda workdir: None)
  monkeypatch.setattr(reports.runner, "run", lambda *args, **kwargs: {})
  try:
    console.setup_logging(progress_bars=True)
    progress = reports.Progress(["sm", "cca"], "leaderboard")
    for kind in ("sm", "cca"):
      progress.run(kind, None, None, "w", 0, f"{kind} on synthetic, seed 0")
  finally:
    console.setup_logging(progress_bars=False)
  out = capsys.readouterr().out
  assert "leaderboard: 100%" in out and "2/2" in out and "cca on synthetic, seed 0" in out
