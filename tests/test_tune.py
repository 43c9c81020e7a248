"""Tuning (cmjax.tune, experiments.tune), search spaces, tuned configs, and the paired
significance tests (cmjax.significance)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cmjax import configs, data, runner, significance, tune
from cmjax.methods import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# Search spaces.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", registry.names())
def test_every_method_declares_a_search_space_its_config_accepts(method):
  spec = registry.get(method)
  space = spec.search_space
  assert space, f"{method}: no SEARCH_SPACES entry in {spec.config_file}"
  base = registry.make_config(spec, "default")
  import dataclasses  # pylint: disable=g-import-not-at-top
  configs.check_search_space(spec.config_class, space, dataclasses.asdict(base),
                             spec.config_file)
  assert not set(space) & set(spec.fixed), "a fixed field is not tunable"


def test_a_bad_search_space_is_a_config_error_naming_the_field():
  from cmjax.configs.uncsm import UNCSMConfig  # pylint: disable=g-import-not-at-top
  check = lambda space: configs.check_search_space(UNCSMConfig, space, {}, "uncsm.py")
  with pytest.raises(configs.ConfigError, match="'widht', not a field of UNCSMConfig"):
    check({"widht": configs.Int(1, 4)})
  with pytest.raises(configs.ConfigError, match="'dropout' allows 1.5"):
    check({"dropout": configs.Float(0.0, 1.5)})
  with pytest.raises(configs.ConfigError, match="'training.learning_rate' needs 0 < low"):
    check({"training.learning_rate": configs.Float(0.0, 1.0, log=True)})
  with pytest.raises(configs.ConfigError, match="'training.batch_size' needs a step >= 1, and 1"):
    check({"training.batch_size": configs.Int(16, 256, log=True, step=16)})
  with pytest.raises(configs.ConfigError, match="'learning_rate', not a field of UNCSMConfig"):
    check({"learning_rate": configs.Float(1e-4, 1e-2, log=True)})  # It lives in `training`.
  with pytest.raises(configs.ConfigError, match="'training.patience' allows -1"):
    check({"training.patience": configs.Int(-1, 4)})


def test_help_lists_the_search_space():
  from experiments import cli  # pylint: disable=g-import-not-at-top
  text = cli._config_help(["fgl", "sm"])  # pylint: disable=protected-access
  assert "Search spaces (python -m experiments.tune" in text
  assert "fgl:\n    training.learning_rate: float in [0.0001, 0.003], log scale" in text
  assert "    beta: float in [0.25, 4], log scale" in text
  assert "sm:\n    l2: float in [1e-06, 0.1], log scale" in text


# ---------------------------------------------------------------------------
# The study.
# ---------------------------------------------------------------------------


def test_holdout_carves_train_and_drops_the_test_split():
  dataset = data.load_dataset("synthetic")
  view = tune.holdout(dataset, 0.25, seed=3)
  rows = lambda split: {r.tobytes() for r in np.asarray(split.image)}
  train, held_out, test = rows(view.train), rows(view.test), rows(dataset.test)
  assert len(view.train) + len(view.test) == len(dataset.train)
  assert not train & held_out and (train | held_out) == rows(dataset.train)
  assert not (train | held_out) & test
  assert abs(len(view.test) / len(dataset.train) - 0.25) < 0.02
  with pytest.raises(configs.ConfigError, match=r"must be in \(0, 1\)"):
    tune.holdout(dataset, 1.0)


def test_a_study_reads_no_test_row_and_resumes(tmp_path, monkeypatch):
  pytest.importorskip("optuna")
  dataset = data.load_dataset("synthetic")
  test_rows = {r.tobytes() for r in np.asarray(dataset.test.image)}
  train_rows = {r.tobytes() for r in np.asarray(dataset.train.image)}
  seen = []

  def recording_run(spec, config, view, workdir, seed, **kwargs):
    """What the runner gets; a results dict whose MAP depends on the config."""
    seen.append(view)
    return {"map": {"avg": 1.0 / (1.0 + config.l2)}, "stages": {}, "wall_s": 0.0}

  monkeypatch.setattr(runner, "run", recording_run)
  first = tune.tune("sm", dataset, trials=1, workdir=str(tmp_path / "study"))
  assert len(seen) == 1
  for view in seen:  # What the runner got: rows of the training split only.
    for split in (view.train, view.test):
      rows = {r.tobytes() for r in np.asarray(split.image)}
      assert rows <= train_rows and not rows & test_rows
  # The same study again, with a larger budget: one more trial, the first one kept.
  second = tune.tune("sm", dataset, trials=2, workdir=str(tmp_path / "study"))
  assert len(seen) == 2
  assert second.trials[0]["values"] == first.trials[0]["values"]
  assert second.budget["trials"] == 2 and second.budget["complete"] == 2
  assert second.validation_avg_map == max(t["value"] for t in second.trials)
  # Another identity under the same study: refused.
  with pytest.raises(configs.ConfigError, match="tunes something else"):
    tune.tune("sm", dataset, trials=2, workdir=str(tmp_path / "study"), fraction=0.3)
  with pytest.raises(configs.ConfigError, match="--fields: width: the search space of sm"):
    tune.tune("sm", dataset, trials=2, workdir=str(tmp_path / "other"), fields=["width"])


class _FakeTrial:
  def __init__(self, prune_after: int):
    self.reports, self.attrs, self.prune_after = [], {}, prune_after

  def set_user_attr(self, key, value):
    self.attrs[key] = value

  def report(self, value, step):
    self.reports.append((step, value))

  def should_prune(self):
    return len(self.reports) > self.prune_after


def test_the_pruner_hears_every_validation_at_the_trials_step():
  optuna = pytest.importorskip("optuna")
  trial = _FakeTrial(prune_after=4)
  reporter = tune._Reporter(trial, optuna)  # pylint: disable=protected-access
  for stage, step, score in (("pretrain", 0, 0.1), ("pretrain", 50, 0.2), ("pretrain", 100, 0.3),
                             ("finetune", 0, 0.3), ("finetune", 50, 0.4)):
    reporter(stage, step, {"avg": score, "i2t": 0, "t2i": 0})
  # The second stage's step 0 is where the first ended: reported once.
  assert trial.reports == [(0, 0.1), (50, 0.2), (100, 0.3), (150, 0.4)]
  assert trial.attrs["steps"] == 150
  with pytest.raises(optuna.TrialPruned, match="stage 'finetune' step 100"):
    reporter("finetune", 100, {"avg": 0.1})


def test_tuned_configs_round_trip_and_a_bad_one_names_its_file(tmp_path):
  result = tune.TuneResult(method="uncsm", dataset="wikipedia", preset="default",
                           values={"hidden": (512, 256, 128), "training.learning_rate": 0.002},
                           validation_avg_map=0.31, budget={"trials": 2, "complete": 1,
                           "pruned": 1, "failed": 0, "steps": 900, "wall_s": 30.0},
                           trials=[{"number": 0, "state": "COMPLETE", "value": 0.31,
                                    "values": {"hidden": "(512, 256, 128)",
                                               "training.learning_rate": 0.002},
                                    "steps": 600, "wall_s": 20.0}],
                           study="s", storage="sqlite://", holdout=0.2, seed=0)
  path = tune.write_tuned(result, str(tmp_path), "python -m experiments.tune ...")
  config, facts = tune.load_tuned(str(tmp_path), "wikipedia", registry.get("uncsm"))
  assert config.hidden == (512, 256, 128) and config.training.learning_rate == 0.002
  assert config.training.weight_decay == registry.make_config(  # The preset's.
      registry.get("uncsm")).training.weight_decay
  assert config.dropout == registry.make_config(registry.get("uncsm")).dropout  # The preset's.
  assert facts["budget"]["steps"] == 900
  report = open(path[:-5] + ".md").read()
  assert "2 trials (1 complete, 1 pruned" in report and "| 0 | complete | 0.3100 |" in report
  assert tune.load_tuned(str(tmp_path), "web_news", registry.get("uncsm")) is None
  with open(path, "w") as f:
    json.dump({"method": "uncsm", "preset": "default", "values": {"dropout": 3.0}}, f)
  with pytest.raises(configs.ConfigError, match=f"{path}: .*dropout"):
    tune.load_tuned(str(tmp_path), "wikipedia", registry.get("uncsm"))


# ---------------------------------------------------------------------------
# Significance.
# ---------------------------------------------------------------------------


def _runs(i2t, t2i, seeds=None, alternative=None):
  seeds = range(len(i2t)) if seeds is None else seeds
  out = []
  for seed, a, b in zip(seeds, i2t, t2i):
    aps = {"i2t": [None if np.isnan(v) else float(v) for v in a],
           "t2i": [None if np.isnan(v) else float(v) for v in b], "alternatives": {}}
    if alternative:
      aps["alternatives"][alternative] = {"i2t": list(map(float, a)), "t2i": list(map(float, b))}
    out.append({"method": "m", "seed": seed, "per_query_ap": aps})
  return out


def test_a_known_difference_is_found_with_its_interval():
  rng = np.random.default_rng(0)
  base_i2t, base_t2i = rng.uniform(0, 1, (3, 400)), rng.uniform(0, 1, (3, 300))
  noise = lambda shape: rng.normal(0, 0.05, shape)
  better = _runs(base_i2t + 0.02 + noise(base_i2t.shape), base_t2i + 0.02 + noise(base_t2i.shape))
  baseline = _runs(base_i2t, base_t2i)
  c = significance.compare(better, baseline, resamples=2000)
  assert c.low < 0.02 < c.high and c.low > 0 and c.significant
  assert c.p_value < 0.001 and c.queries == 3 * 700 and c.seeds == (0, 1, 2)
  assert c.verdict("A", "B").startswith("A better")
  # Reversed arguments: the same interval, negated.
  r = significance.compare(baseline, better, resamples=2000)
  assert np.isclose(r.difference, -c.difference) and r.verdict("A", "B").startswith("B better")
  # No difference but noise: the interval covers 0.
  same = _runs(base_i2t + noise(base_i2t.shape), base_t2i + noise(base_t2i.shape))
  n = significance.compare(same, baseline, resamples=2000)
  assert n.low < 0 < n.high and not n.significant and n.p_value > 0.05
  assert significance.compare(baseline, baseline).p_value == 1.0
  # The avg MAP difference is the mean of the two directions' mean differences.
  assert np.isclose(c.difference, np.mean([np.mean(better[s]["per_query_ap"][d])
                                           - np.mean(baseline[s]["per_query_ap"][d])
                                           for s in range(3) for d in ("i2t", "t2i")]))


def test_pairing_needs_the_same_queries_and_seeds():
  a = _runs(np.full((2, 5), 0.5), np.full((2, 5), 0.5))
  with pytest.raises(ValueError, match="no seed in common"):
    significance.compare(a, _runs(np.full((1, 5), 0.4), np.full((1, 5), 0.4), seeds=[7]))
  with pytest.raises(ValueError, match="ranked different test queries"):
    significance.compare(a, _runs(np.full((2, 6), 0.4), np.full((2, 5), 0.4)))
  with pytest.raises(ValueError, match="keep no per-query AP"):
    significance.compare(a, [{"method": "old", "seed": 0}])
  # Queries without a relevant item (NaN in both) are not queries of the MAP.
  x = np.array([[0.5, np.nan, 0.7]])
  d, _ = significance.paired_differences(_runs(x, x), _runs(x - 0.1, x - 0.1))
  assert np.allclose(d["i2t"], 0.1) and d["i2t"].size == 2
  # An alternative scorer of the same runs.
  alt = _runs(np.full((2, 5), 0.5), np.full((2, 5), 0.5), alternative="cosine")
  assert significance.compare(alt, alt, alternative_b="cosine").difference == 0


# ---------------------------------------------------------------------------
# The command: killed and resumed, two workers on one study (slow lane).
# ---------------------------------------------------------------------------


def _tune_command(workdir, output, trials, *extra):
  return [sys.executable, "-m", "experiments.tune", "--method=bimodal_ae", "--preset=quick",
          "--fields=training.learning_rate,training.weight_decay", f"--trials={trials}",
          "--heartbeat_s=1",
          f"--workdir={workdir}", f"--output_dir={output}", *extra]


def _wait_for(path, text, timeout=300):
  start = time.time()
  while time.time() - start < timeout:
    if os.path.exists(path) and text in open(path).read():
      return
    time.sleep(0.2)
  raise AssertionError(f"{text!r} not in {path} after {timeout} s")


@pytest.mark.slow
def test_a_killed_study_resumes_to_the_same_best_trial(tmp_path):
  pytest.importorskip("optuna")
  whole = _tune_command(tmp_path / "whole", tmp_path / "out_whole", 6)
  subprocess.run(whole, cwd=REPO, check=True, capture_output=True, timeout=600)
  command = _tune_command(tmp_path / "killed", tmp_path / "out_killed", 6)
  log = tmp_path / "killed.log"
  with open(log, "w") as f:
    process = subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                               start_new_session=True)
  _wait_for(log, "trial 3 (3 of 6 finished)")
  time.sleep(0.5)  # Inside trial 3 (a trial takes about 3 s).
  os.killpg(process.pid, signal.SIGKILL)
  process.wait()
  time.sleep(2.5)  # Its heartbeat goes stale.
  subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
  read = lambda out: json.load(open(out / "synthetic" / "bimodal_ae.json"))
  whole_best, resumed_best = read(tmp_path / "out_whole"), read(tmp_path / "out_killed")
  assert resumed_best["values"] == whole_best["values"]
  assert resumed_best["validation_avg_map"] == whole_best["validation_avg_map"]
  assert resumed_best["budget"]["trials"] == 6
  import optuna  # pylint: disable=g-import-not-at-top
  study = optuna.load_study(study_name="bimodal_ae-synthetic-quick-seed0",
                            storage=f"sqlite:///{tmp_path / 'killed' / 'study.db'}")
  values = lambda s: [t.params for t in s.trials if t.state.name in tune.TRIAL_STATES]
  whole_study = optuna.load_study(study_name="bimodal_ae-synthetic-quick-seed0",
                                  storage=f"sqlite:///{tmp_path / 'whole' / 'study.db'}")
  assert values(study) == values(whole_study)  # The same trials, in the same order.
  assert any(t.intermediate_values for t in study.trials)  # The pruner heard the runs.
  # The killed trial was failed (its heartbeat stopped) and its config run again.
  failed = [t for t in study.trials if t.state.name == "FAIL"]
  assert len(failed) == 1 and failed[0].params in values(study)


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
  pytest.importorskip("optuna")
  command = _tune_command(tmp_path / "study", tmp_path / "out", 6)
  logs = [tmp_path / f"worker{k}.log" for k in range(2)]
  processes = []
  for log in logs:
    with open(log, "w") as f:
      processes.append(subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT))
    _wait_for(log, "tune bimodal_ae on synthetic: trial")  # The second starts on a running study.
  for process in processes:
    assert process.wait(timeout=600) == 0, [open(log).read()[-2000:] for log in logs]
  import optuna  # pylint: disable=g-import-not-at-top
  study = optuna.load_study(study_name="bimodal_ae-synthetic-quick-seed0",
                            storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
  finished = [t for t in study.trials if t.state.name in tune.TRIAL_STATES]
  assert 6 <= len(finished) <= 7  # A worker may start one more before it sees the last.
  for log in logs:  # Both worked on it.
    assert "tune bimodal_ae on synthetic: trial" in open(log).read()
  ran = [t.number for log in logs for t in finished
         if f"trial {t.number} (" in open(log).read()]
  assert sorted(ran) == sorted(t.number for t in finished)  # Each trial ran once.


def test_the_preset_report_compares_every_row_with_the_first():
  from cmjax import reports  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  aps = rng.uniform(0, 1, (2, 50))

  def runs(shift):
    return [{"seed": s, "map": {"i2t": 0.5, "t2i": 0.4, "avg": 0.45}, "roc_auc": 0.8,
             "wall_s": 3.0, "alternatives": {"cosine": {"i2t": 0.4, "t2i": 0.3, "avg": 0.35}},
             "per_query_ap": {"i2t": list(aps[0] + shift), "t2i": list(aps[1] + shift),
                              "alternatives": {"cosine": {"i2t": list(aps[0] - 0.1),
                                                          "t2i": list(aps[1] - 0.1)}}}}
            for s in (0, 1)]

  first = runs(0.0)
  row = reports._preset_row  # pylint: disable=protected-access
  assert row("default", first, first).endswith("| first row |")
  assert row("same", runs(0.0), first).endswith("| +0.0000 [+0.0000, +0.0000], p = 1 |")
  assert "| -0.1000 [-0.1000, -0.1000], p = " in row("cosine", first, first, "cosine")
  assert row("old", [{**r, "per_query_ap": None} for r in first], first).endswith(
      "| n/a (no per-query AP) |")


def test_a_diverged_trial_counts_as_pruned_and_the_study_goes_on(tmp_path, monkeypatch):
  pytest.importorskip("optuna")
  from cmjax import train  # pylint: disable=g-import-not-at-top
  calls = []

  def diverging_first(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      raise train.NonFiniteError("stage 'x': loss is nan at step 3")
    return {"map": {"avg": 0.5}, "stages": {"s": {"steps": 40}}, "wall_s": 0.0}

  monkeypatch.setattr(runner, "run", diverging_first)
  result = tune.tune("sm", data.load_dataset("synthetic"), trials=2,
                     workdir=str(tmp_path / "study"))
  assert [t["state"] for t in result.trials] == ["PRUNED", "COMPLETE"]
  assert result.budget["pruned"] == 1 and result.validation_avg_map == 0.5
  assert result.budget["steps"] == 40


def test_a_claims_verdict_comes_from_the_paired_interval():
  from cmjax import claims  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  base = rng.uniform(0, 1, (3, 2, 200))

  def runs(shift, cosine_shift=0.0):
    out = _runs(base[:, 0] + shift, base[:, 1] + shift, alternative="cosine")
    for r, i2t, t2i in zip(out, base[:, 0], base[:, 1]):
      r["map"] = {"avg": float(np.mean([i2t + shift, t2i + shift]))}
      r["alternatives"] = {"cosine": {"avg": float(np.mean([i2t, t2i]) + cosine_shift)}}
      r["per_query_ap"]["alternatives"]["cosine"] = {"i2t": list(i2t + cosine_shift),
                                                     "t2i": list(t2i + cosine_shift)}
    return out

  claim = lambda *arms: claims.Claim("P", "text", *arms)
  table = [
      (claim(claims.Arm("a"), claims.Arm("b")), (runs(0.05), runs(0.0))),
      (claim(claims.Arm("a"), claims.Arm("a", {"x": 1})), (runs(0.0), runs(0.05))),
      (claim(claims.Arm("a"), claims.Arm("a", alternative="cosine")), (runs(0.0), runs(0.0))),
      (claim(claims.Arm("a"), claims.Arm("c")), "not testable on d: no captions"),
  ]
  lines = claims.claims_markdown("d", table)
  rows = [l for l in lines if l.startswith("| P |")]
  assert rows[0].endswith("| holds |") and "+0.0500 [+0.0500, +0.0500]" in rows[0]
  assert rows[1].endswith("| reversed |") and "| a (x=1) |" in rows[1]
  assert rows[2].endswith("| no significant difference |") and "[cosine scorer]" in rows[2]
  assert rows[3].endswith("| not testable on d: no captions |")


def test_a_tuned_run_made_by_the_claims_shows_its_tuning_budget():
  """The claims record an unchanged tuned arm's folder (`tuned-<digest>`) as its preset;
  a leaderboard that reuses the run still shows the tuning budget."""
  from cmjax import reports  # pylint: disable=g-import-not-at-top
  budget = {"trials": 24, "pruned": 5, "steps": 41000, "wall_s": 3120.4}
  expected = "tuned: 24 trials (5 pruned), 41,000 steps, 3,120 s"
  assert reports._config_cell("tuned", budget) == expected  # pylint: disable=protected-access
  assert reports._config_cell("tuned-0123abcd", budget) == expected  # pylint: disable=protected-access
  assert reports._config_cell("default", budget) == "default"  # pylint: disable=protected-access
