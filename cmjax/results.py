"""What every run leaves in its workdir: `results.json` and `pr_curves.png`.

Every method writes the same shape, so the leaderboard and reports read any run:
`{"method", "dataset", "seed", "map": {"i2t", "t2i", "avg"}, "map@50": {...},
"wall_s", "pr_curve": {"recall", "i2t", "t2i"}, ...extra}`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from cmjax import evaluation, plotting

__all__ = ["claim_workdir", "read_results", "write_json", "write_results"]


def write_json(path: str, payload: Mapping[str, Any]) -> None:
  """Writes JSON atomically (a crash never leaves a half-written file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, default=_to_builtin)
  os.replace(tmp, path)


def _to_builtin(value):
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"cannot write {type(value).__name__} to JSON")


def claim_workdir(workdir: str, run_config: Mapping[str, Any]) -> None:
  """Records `run_config` in `workdir/config.json`, or checks that it matches.

  A workdir resumes only the run it was made for: a different config (other
  method, dataset, seed or setting) raises instead of mixing two runs.

  Raises:
    ValueError: naming the settings that differ.
  """
  path = os.path.join(workdir, "config.json")
  wanted = json.loads(json.dumps(run_config, default=_to_builtin))
  if os.path.isfile(path):
    with open(path) as f:
      found = json.load(f)
    if found != wanted:
      flat = lambda d, prefix="": {k2: v2 for k, v in d.items() for k2, v2 in (
          flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(prefix + k, v)])}
      a, b = flat(found), flat(wanted)
      diff = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
                       for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
      raise ValueError(f"{path}: the workdir holds another run ({diff}); use a new --workdir")
    return
  write_json(path, wanted)


def write_results(
    workdir: str,
    *,
    method: str,
    dataset: str,
    seed: int,
    metrics: Mapping[str, evaluation.RetrievalMetrics],
    wall_s: float,
    extra: Mapping[str, Any] | None = None,
) -> dict:
  """Writes `results.json` and `pr_curves.png` of a finished run; returns the dict."""
  i2t, t2i = metrics["i2t"], metrics["t2i"]
  results = {
      "method": method,
      "dataset": dataset,
      "seed": seed,
      "map": {"i2t": i2t.map, "t2i": t2i.map, "avg": (i2t.map + t2i.map) / 2},
      **{
          f"map@{k}": {"i2t": i2t.map_at[k], "t2i": t2i.map_at[k],
                       "avg": (i2t.map_at[k] + t2i.map_at[k]) / 2}
          for k in i2t.map_at
      },
      "wall_s": wall_s,
      "pr_curve": {
          "recall": i2t.recall_levels,
          "i2t": i2t.precision_curve,
          "t2i": t2i.precision_curve,
      },
      **(extra or {}),
  }
  plotting.plot_pr_curves(
      {d: {method: (m.recall_levels, m.precision_curve)} for d, m in metrics.items()},
      os.path.join(workdir, "pr_curves.png"),
      title=f"{method} on {dataset} (seed {seed}): MAP i2t {i2t.map:.3f}, t2i {t2i.map:.3f}",
  )
  write_json(os.path.join(workdir, "results.json"), results)
  return results


def read_results(workdir: str) -> dict | None:
  """The `results.json` of a finished run, or None."""
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)
