"""Tuning a method on validation only, with the same budget for every method.

  result = tune.tune("uncsm", dataset, trials=24, workdir="/tmp/cmjax/tune/...")
  tune.write_tuned(result, "reports/tuned")   # the tuned config, and its report

A trial is one run of the runner (`cmjax.runner.run`) with a config sampled
from the method's search space (`SEARCH_SPACES` of its config file, over a
preset) on the **tuning view** of the dataset (`holdout`): the training split
less a stratified share, and that share as the split the runner evaluates.
The test split is not in the view, so no trial can read it; the method's own
validation (early stopping, selection) is carved from what is left, as in
every run. The objective is the held-out avg MAP, through the same streamed
evaluation as a test.

Optuna drives the search (an optional extra: `pip install "cmjax[tune]"`):

- TPE sampler; its seed is derived from the study's seed and the number of
  trials finished, so a study killed and resumed samples what it would have;
- a median pruner fed by every validation of every stage (`LoopConfig.on_validation`):
  a trial whose validation MAP is below the median of earlier trials at the same
  point stops there (it counts in the budget as a pruned trial); a trial whose
  training diverges (non-finite loss or scores) counts as pruned too;
- its RDB storage: SQLite in the workdir by default, or any SQLAlchemy URL, so
  a killed study resumes where it stopped (trial workdirs resume too) and
  several processes, on one or several hosts, work on one study. A trial of a
  killed process is failed after its heartbeat goes stale, and its config is
  sampled again.

A study knows what it tunes (method, preset, dataset fingerprint, held-out
share, seed, space): another one under the same name is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Mapping, Sequence
import warnings

from absl import logging
import numpy as np

from cmjax import configs, files, protocol, runner, train
from cmjax import data as data_lib
from cmjax import workdir as workdir_lib
from cmjax.checks import ConfigError, MissingPackageError
from cmjax.methods import registry

__all__ = ["TRIAL_STATES", "TuneResult", "config_digest", "holdout", "load_tuned", "tune",
           "tuned_path", "write_tuned"]

# The held-out share of the training split a trial is evaluated on.
DEFAULT_HOLDOUT = 0.2
# The trial states that count in the budget.
TRIAL_STATES = ("COMPLETE", "PRUNED")


def _optuna():
  try:
    import optuna  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise MissingPackageError("tuning needs Optuna: pip install \"cmjax[tune]\"") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)  # Our lines say what a trial did.
  # The heartbeat (how a killed worker's trial is failed) is marked experimental.
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  return optuna


@dataclasses.dataclass(frozen=True)
class TuneResult:
  """A study's outcome.

  Attributes:
    method, dataset, preset: what was tuned (`dataset` with its feature suffix).
    values: the best trial's values of the tuned fields.
    validation_avg_map: its held-out avg MAP.
    budget: trials finished (complete, pruned), failed ones, total training
      steps and wall time of the finished trials.
    trials: each finished trial: number, state, value (held-out avg MAP; None
      when pruned), last_validation (a pruned trial's last validation score),
      values, steps, wall_s.
    study: the study's name; storage: its storage URL (no password).
    holdout: the held-out share; seed: the study's seed.
  """

  method: str
  dataset: str
  preset: str
  values: dict
  validation_avg_map: float
  budget: dict
  trials: list
  study: str
  storage: str
  holdout: float
  seed: int


def holdout(dataset: data_lib.Dataset, fraction: float = DEFAULT_HOLDOUT,
            seed: int = 0) -> data_lib.Dataset:
  """The tuning view of `dataset`: its training split less a stratified `fraction`
  (by `seed`), and that fraction in the place of the test split, which is dropped.

  Raises:
    ConfigError: a fraction outside (0, 1).
  """
  if not 0 < fraction < 1:
    raise ConfigError(f"the held-out share of the training split must be in (0, 1); got "
                      f"{fraction}")
  train_part, held_out = data_lib.validation_split(dataset.train, fraction, seed)
  return dataclasses.replace(dataset, train=train_part, test=held_out,
                             metadata={**dataset.metadata, "tuning_holdout": fraction})


def suggest(trial: Any, space: Mapping[str, configs.Param]) -> dict:
  """A config's values of the tuned fields, sampled by an Optuna trial."""
  values = {}
  for field, param in space.items():
    if isinstance(param, configs.Float):
      values[field] = trial.suggest_float(field, param.low, param.high, log=param.log)
    elif isinstance(param, configs.Int):
      values[field] = trial.suggest_int(field, param.low, param.high, step=param.step,
                                        log=param.log)
    else:  # Optuna's choices are scalars: a tuple of widths goes by its text.
      labels = [repr(v) for v in param.values]
      values[field] = param.values[labels.index(trial.suggest_categorical(field, labels))]
  return values


class _Reporter:
  """`LoopConfig.on_validation` of a trial: each stage's validation MAP goes to the
  pruner at the trial's training step so far (stages one after another)."""

  def __init__(self, trial: Any, optuna: Any):
    self.trial, self.optuna, self.steps, self.reported = trial, optuna, {}, set()

  def __call__(self, stage: str, step: int, scores: Mapping[str, float]) -> None:
    self.steps[stage] = step
    total = sum(self.steps.values())
    self.trial.set_user_attr("steps", total)
    score = scores[protocol.SELECT_METRIC]
    if total not in self.reported:  # A stage's step 0 is where the one before ended.
      self.reported.add(total)
      # A NaN validation MAP (a diverging model) is reported as -1, below every MAP.
      self.trial.report(score if np.isfinite(score) else -1.0, total)
    if self.trial.should_prune():
      raise self.optuna.TrialPruned(f"stage '{stage}' step {step}: validation avg MAP "
                                    f"{score:.4f} below the median of earlier trials")


def _space(spec: registry.MethodSpec, fields: Sequence[str] | None) -> dict[str, configs.Param]:
  """The method's search space, or its `fields` (ConfigError naming unknown ones)."""
  space = spec.search_space
  if not space:
    raise ConfigError(f"method {spec.name} declares no search space (SEARCH_SPACES in "
                      f"{spec.config_file})")
  if fields is None:
    return space
  unknown = [f for f in fields if f not in space]
  if unknown or not fields:
    raise ConfigError(f"--fields: {', '.join(unknown) or 'none given'}: the search space of "
                      f"{spec.name} has {', '.join(space)}")
  return {f: space[f] for f in fields}


def _identity(spec: registry.MethodSpec, space: Mapping[str, configs.Param], preset: str,
              tuning: data_lib.Dataset, fraction: float, seed: int) -> dict:
  return {"method": spec.name, "preset": preset, "dataset": tuning.name,
          "fingerprint": workdir_lib.data_fingerprint(tuning), "holdout": fraction,
          "seed": seed, "space": {k: str(v) for k, v in space.items()}}


def _study(optuna: Any, name: str, storage: str, identity: dict, heartbeat_s: float,
           pruner_startup: int):
  engine = {"connect_args": {"timeout": 120}} if storage.startswith("sqlite") else {}
  rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine,
                                   heartbeat_interval=max(1, int(heartbeat_s)),
                                   grace_period=max(2, int(2 * heartbeat_s)))
  pruner = optuna.pruners.MedianPruner(n_startup_trials=pruner_startup, n_warmup_steps=1)
  study = optuna.create_study(study_name=name, storage=rdb, direction="maximize",
                              pruner=pruner, load_if_exists=True)
  found = study.user_attrs.get("identity")
  if found is None:
    study.set_user_attr("identity", identity)
  elif found != identity:
    differ = sorted(k for k in identity if found.get(k) != identity[k])
    raise ConfigError(f"study '{name}' in {_safe_url(storage)} tunes something else "
                      f"(differs in: {', '.join(differ)}); use another --study_name or "
                      "--workdir")
  return study


def _safe_url(storage: str) -> str:
  """The storage URL without a password."""
  head, at, tail = storage.rpartition("@")
  if not at:
    return storage
  scheme, _, user = head.partition("://")
  return f"{scheme}://{user.split(':')[0]}:***@{tail}"


def _finished(optuna: Any, study: Any) -> list:
  states = tuple(getattr(optuna.trial.TrialState, s) for s in TRIAL_STATES)
  return study.get_trials(deepcopy=False, states=states)


def config_digest(config: Any) -> str:
  """16 hex digits of a typed config (a trial's or a tuned run's folder name)."""
  text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=workdir_lib.to_builtin)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def tune(method: str, dataset: data_lib.Dataset, *, trials: int, workdir: str,
         preset: str = "default", fields: Sequence[str] | None = None,
         storage: str | None = None, study_name: str | None = None, seed: int = 0, fraction: float = DEFAULT_HOLDOUT, dataset_label: str | None = None,
         heartbeat_s: float = 30.0, pruner_startup: int = 5,
         loop: train.LoopConfig = train.LoopConfig()) -> TuneResult:
  """Runs trials of `method` until `trials` of them have finished (complete or
  pruned) in the study, then returns the study's outcome.

  Args:
    method: a registered method with a search space.
    dataset: the data view it reads (its test split is never used).
    trials: the budget: finished trials in the study (several workers on one
      study may finish one or two more between them).
    workdir: the study's folder: trial workdirs (`trials/<config digest>`) and
      the default SQLite storage.
    preset: the preset the space is sampled over.
    fields: tune only these fields of the space (the others keep the preset's
      values); default all.
    storage: an SQLAlchemy URL; default `sqlite:///<workdir>/study.db`.
    study_name: default `<method>-<dataset label>-<preset>-seed<seed>`.
    seed: the held-out carve, every trial's run seed and the sampler's seeds.
    fraction: the held-out share of the training split.
    dataset_label: the dataset's name in reports (e.g. with its feature suffix).
    heartbeat_s: seconds between a running trial's heartbeats; a trial silent
      for twice that is failed by the next worker that looks.
    pruner_startup: trials finished before the pruner prunes.
    loop: loop settings of every trial's run.

  Raises:
    ConfigError: no search space, a bad budget or share, a study of another identity.
    MissingPackageError: Optuna is not installed.
  """
  optuna = _optuna()
  spec = registry.get(method)
  space = _space(spec, fields)
  if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
    raise ConfigError(f"--trials must be a positive integer; got {trials!r}")
  seed = runner.check_seed(seed)
  base = registry.make_config(spec, preset)
  configs.check_search_space(spec.config_class, space, dataclasses.asdict(base),
                             spec.config_file)
  tuning = holdout(data_lib.check_dataset(dataset), fraction, seed)
  label = dataset_label or dataset.name
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, mode=0o700, exist_ok=True)
  files.check_private(workdir)
  storage = storage or f"sqlite:///{os.path.join(workdir, 'study.db')}"
  name = study_name or f"{spec.name}-{label}-{preset}-seed{seed}"
  study = _study(optuna, name, storage, _identity(spec, space, preset, tuning, fraction, seed),
                 heartbeat_s, pruner_startup)

  def objective(trial) -> float:
    values = suggest(trial, space)
    config = registry.make_config(spec, dataclasses.asdict(base), **values)
    trial_dir = os.path.join(workdir, "trials", config_digest(config))
    trial.set_user_attr("workdir", trial_dir)
    logging.info("tune %s on %s: trial %d (%d of %d finished): %s", spec.name, label,
                 trial.number, len(_finished(optuna, study)), trials,
                 ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in values.items()))
    try:
      results = runner.run(spec, config, tuning, trial_dir, seed, preset=f"tune:{preset}",
                           loop=dataclasses.replace(loop,
                                                    on_validation=_Reporter(trial, optuna)))
    except (train.NonFiniteError, runner.NonFiniteScoresError) as e:
      # A config that diverges is an outcome of the search, not an error of it.
      trial.set_user_attr("diverged", str(e))
      raise optuna.TrialPruned(f"diverged: {e}") from None
    trial.set_user_attr("steps", sum(int(s.get("steps", 0)) for s in results["stages"].values()
                                     if isinstance(s, Mapping)))
    trial.set_user_attr("run_wall_s", results["wall_s"])
    return float(results["map"]["avg"])

  while len(_finished(optuna, study)) < trials:
    optuna.storages.fail_stale_trials(study)  # Those of killed workers.
    # Seeded by the count of trials finished or running (not failed): a resumed study
    # samples what it would have, and a second worker does not repeat the first.
    alive = study.get_trials(deepcopy=False, states=tuple(
        getattr(optuna.trial.TrialState, s) for s in (*TRIAL_STATES, "RUNNING", "WAITING")))
    study.sampler = optuna.samplers.TPESampler(
        seed=int(np.random.SeedSequence([seed, len(alive)]).generate_state(1)[0]),
        n_startup_trials=min(10, max(1, trials // 2)))
    ours = []
    study.optimize(objective, n_trials=1, gc_after_trial=True, catch=(files.WorkdirInUse,),
                   callbacks=[lambda _, trial: ours.append(trial)])
    last = ours[-1]
    if last.state == optuna.trial.TrialState.FAIL:  # Another worker runs that very config.
      logging.info("tune %s: trial %d's config is being run by another worker; waiting %.0f s",
                   spec.name, last.number, heartbeat_s)
      time.sleep(heartbeat_s)
  return _outcome(optuna, study, spec.name, space, label, preset, storage, fraction, seed)


def _outcome(optuna: Any, study: Any, method: str, space: Mapping[str, configs.Param],
             label: str, preset: str, storage: str, fraction: float, seed: int) -> TuneResult:
  finished = sorted(_finished(optuna, study), key=lambda t: t.number)
  failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
  # A pruned trial's value is Optuna's: its last validation score, not a held-out one.
  complete_state = optuna.trial.TrialState.COMPLETE
  rows = [{"number": t.number, "state": t.state.name,
           "value": float(t.value) if t.state == complete_state else None,
           "last_validation": (None if t.state == complete_state or t.value is None
                               else float(t.value)),
           "values": dict(t.params), "steps": int(t.user_attrs.get("steps", 0)),
           "wall_s": (t.datetime_complete - t.datetime_start).total_seconds()}
          for t in finished]
  complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
  if not complete:
    raise ConfigError(f"study '{study.study_name}': no trial completed (all pruned or failed)")
  best = max(complete, key=lambda t: (t.value, -t.number))  # Ties: the earliest trial.
  values = {field: _param_value(space[field], best.params[field]) for field in space}
  budget = {"trials": len(finished), "complete": len(complete),
            "pruned": len(finished) - len(complete), "failed": len(failed),
            "steps": sum(r["steps"] for r in rows),
            "wall_s": round(sum(r["wall_s"] for r in rows), 1)}
  return TuneResult(method=method, dataset=label, preset=preset, values=values,
                    validation_avg_map=float(best.value), budget=budget, trials=rows,
                    study=study.study_name, storage=_safe_url(storage), holdout=fraction,
                    seed=seed)


def _param_value(param: configs.Param, stored: Any) -> Any:
  """A trial's stored value as the config's value (a choice is stored as its text)."""
  if isinstance(param, configs.Choice):
    return param.values[[repr(v) for v in param.values].index(stored)]
  return stored


# ---------------------------------------------------------------------------
# Tuned configs: preset-like files the leaderboard reads (`--tuned`).
# ---------------------------------------------------------------------------


def tuned_path(folder: str, dataset: str, method: str) -> str:
  """`<folder>/<dataset>/<method>.json`."""
  return os.path.join(folder, dataset, f"{method}.json")


def write_tuned(result: TuneResult, folder: str, command: str | None = None) -> str:
  """Writes the tuned config (`tuned_path`, JSON: the preset it was tuned over, the
  tuned fields' values, the validation score and the budget) and its report
  (`.md` beside it: every trial). Returns the JSON path."""
  path = tuned_path(folder, result.dataset, result.method)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  payload = {"method": result.method, "dataset": result.dataset, "preset": result.preset,
             "values": result.values, "validation_avg_map": result.validation_avg_map,
             "budget": result.budget, "holdout": result.holdout, "seed": result.seed,
             "study": result.study, "command": command}
  workdir_lib.write_json(path, payload)
  rank = sorted(result.trials, key=lambda r: -(r["value"] if r["value"] is not None else -1))
  fields = list(result.values)
  lines = [f"# Tuning {result.method} on {result.dataset}", ""]
  if command:
    lines += [f"Regenerate: `{command}`", ""]
  lines += [
      f"{result.budget['trials']} trials ({result.budget['complete']} complete, "
      f"{result.budget['pruned']} pruned by the median rule, {result.budget['failed']} "
      f"failed), {result.budget['steps']} training steps, {result.budget['wall_s']:.0f} s of "
      f"trial wall time; over preset '{result.preset}'. Each trial trains on the training "
      f"split less a stratified {result.holdout:.0%} (seed {result.seed}) and is scored by "
      "its avg MAP on that share; the test split is never read. Best: "
      f"{result.validation_avg_map:.4f} with "
      + ", ".join(f"`{k}={_text(v)}`" for k, v in result.values.items()) + ".", "",
      "A pruned trial shows the last validation score the pruner judged (on the "
      "method's own validation split, not the held-out share).", "",
      "| trial | state | held-out avg MAP | trained steps | s | " + " | ".join(fields) + " |",
      "|---" * (5 + len(fields)) + "|"]
  for r in rank:
    value = "" if r["value"] is None else f"{r['value']:.4f}"
    state = r["state"].lower() + ("" if r.get("last_validation") is None else
                                  f" (validation {r['last_validation']:.4f})")
    lines.append(f"| {r['number']} | {state} | {value} | {r['steps']} | "
                 f"{r['wall_s']:.0f} | " + " | ".join(_text(r["values"].get(f)) for f in fields)
                 + " |")
  report = "\n".join(lines) + "\n"
  files.write_atomic(os.path.splitext(path)[0] + ".md", lambda f: f.write(report))
  return path


def _text(value: Any) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def load_tuned(folder: str, dataset: str, spec: registry.MethodSpec) -> tuple[Any, dict] | None:
  """`(typed config, the file's facts)` of the tuned config of `spec` on `dataset`
  in `folder`, or None when there is none.

  Raises:
    ConfigError: a file that is not a tuned config of this method, or values the
      config class rejects (naming the file).
  """
  path = tuned_path(folder, dataset, spec.name)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      facts = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: cannot read a tuned config ({e})") from None
  if not isinstance(facts, dict) or facts.get("method") != spec.name or not isinstance(
      facts.get("values"), dict) or not isinstance(facts.get("preset"), str):
    raise ConfigError(f"{path}: not a tuned config of {spec.name} (needs method, preset, "
                      "values)")
  try:
    config = registry.make_config(spec, facts["preset"], **facts["values"])
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from None
  return config, facts
