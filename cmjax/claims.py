"""The papers' claims as data, each tested by a paired comparison on test queries.

  from cmjax import claims
  table = claims.claim_runs("wikipedia", seeds=3, root="/tmp/cmjax_leaderboard")
  print("\\n".join(claims.claims_markdown("wikipedia", table)))

A claim says that one configuration (`better`) beats another (`than`): two
methods (EMD vs its cosine control), one method with a field changed (FGL's
fine-grained vs 0/1 labels), or another scorer of the same fitted model
(UNCSM's metric network vs the cosine of its representations). Both arms run
through the runner over the same seeds (with `tuned`, each from its method's
tuned config, the arm's change applied on top), and the verdict comes from the
paired test of `cmjax.significance`: it holds when the 95% interval of the avg
MAP difference lies above 0, is reversed when below, and otherwise the data
show no significant difference.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from cmjax import data, reports, significance, train, tune
from cmjax.methods import registry

__all__ = ["Arm", "CLAIMS", "Claim", "claim_runs", "claims_markdown"]


@dataclasses.dataclass(frozen=True)
class Arm:
  """One side of a claim.

  Attributes:
    method: a registered method.
    overrides: config fields changed from the method's preset (or tuned config).
    alternative: score with this alternative scorer of the fitted model (its
      results' `alternatives`) instead of the main one.
  """

  method: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  alternative: str | None = None

  def label(self) -> str:
    changes = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
    return self.method + (f" ({changes})" if changes else "") + (
        f" [{self.alternative} scorer]" if self.alternative else "")


@dataclasses.dataclass(frozen=True)
class Claim:
  """`better` beats `than`, as `paper` claims.

  Attributes:
    paper: the paper (method family) that claims it.
    text: the claim in words.
    better, than: the two arms.
    needs_view: the claim is testable only where `better` reads this data view
      (FGL's GCN needs captions: the `words_graph` view).
  """

  paper: str
  text: str
  better: Arm
  than: Arm
  needs_view: str | None = None


CLAIMS = (
    Claim("EMD-CNN", "EMD beats the same networks under cosine", Arm("emd_cnn"),
          Arm("emd_cnn_cosine")),
    Claim("EMD-CNN", "EMD beats the same networks under Euclidean distance", Arm("emd_cnn"),
          Arm("emd_cnn_euclidean")),
    Claim("FGL", "fine-grained labels beat 0/1 labels", Arm("fgl"),
          Arm("fgl", {"labels": "binary"})),
    Claim("FGL", "a GCN text path beats a bag of words", Arm("fgl"),
          Arm("fgl", {"text_encoder": "mlp"}), needs_view="words_graph"),
    Claim("DBRC", "adaptive tanh beats plain tanh", Arm("dbrc"),
          Arm("dbrc", {"hashing_layer": "plain"})),
    Claim("UNCSM", "the metric network beats the cosine of the representations", Arm("uncsm"),
          Arm("uncsm", alternative="cosine")),
    Claim("UNCSM", "contrastive pretraining helps", Arm("uncsm"),
          Arm("uncsm", {"pretrain": False})),
)


def _arm_config(arm: Arm, dataset: str, preset: str, tuned: str | None) -> tuple[Any, str]:
  """`(config, workdir folder)`: the method's tuned config (or preset) with the arm's
  overrides; the folder is the leaderboard's for an unchanged config (runs shared)."""
  spec = registry.get(arm.method)
  found = tune.load_tuned(tuned, dataset, spec) if tuned else None
  base, name = (found[0], "tuned") if found else (registry.make_config(spec, preset), preset)
  folder = name if name != "tuned" else f"tuned-{tune.config_digest(base)}"
  if not arm.overrides:
    return base, folder
  config = registry.make_config(spec, dataclasses.asdict(base), **arm.overrides)
  return config, f"{folder}+{tune.config_digest(config)}"


def claim_runs(dataset: str, seeds: int, *, claims: Sequence[Claim] = CLAIMS,
               preset: str = "default", root: str = "/tmp/cmjax_leaderboard",
               data_dir: str | None = None, features: data.FeatureChoice = data.FeatureChoice(),
               tuned: str | None = None, loop: train.LoopConfig = train.LoopConfig()
               ) -> list[tuple[Claim, tuple[reports.Runs, reports.Runs] | str]]:
  """`[(claim, (runs of better, runs of than))]`, or with the reason a claim is not
  testable on `dataset` instead of its runs. Workdirs below `root` as the leaderboard's (shared where the configs
  are the same): `<root>/<dataset><suffix>/<method>/<folder>/seed<seed>`."""
  label = dataset + features.suffix
  arms = {}
  for claim in claims:
    for arm in (claim.better, claim.than):
      key = (arm.method, tuple(sorted(arm.overrides.items())))
      if key not in arms:
        arms[key] = (registry.get(arm.method), *_arm_config(arm, label, preset, tuned))
  specs_configs = [(spec, config) for spec, config, _ in arms.values()]
  views = dict(zip(arms, reports.views_of(specs_configs, dataset, data_dir, features)))
  progress = reports.Progress([key[0] for key in arms for _ in range(seeds)], "claims")
  runs, out = {}, []
  for claim in claims:
    key_a, key_b = ((arm.method, tuple(sorted(arm.overrides.items())))
                    for arm in (claim.better, claim.than))
    if claim.needs_view and views[key_a].view.name != claim.needs_view:
      out.append((claim, f"not testable on {label}: {claim.better.method} reads the "
                         f"'{views[key_a].view.name}' view here, the claim needs "
                         f"'{claim.needs_view}'"))
      continue
    for key in (key_a, key_b):
      if key not in runs:
        spec, config, folder = arms[key]
        runs[key] = [progress.run(spec, config, views[key],
                                  os.path.join(root, label, spec.name, folder, f"seed{seed}"),
                                  seed, f"{spec.name} ({folder}) on {label}, seed {seed}",
                                  preset=folder, loop=loop)
                     for seed in range(seeds)]
    out.append((claim, (runs[key_a], runs[key_b])))
  return out


def _avg(runs: reports.Runs, alternative: str | None) -> list[float]:
  return [r["alternatives"][alternative]["avg"] if alternative else r["map"]["avg"]
          for r in runs]


def claims_markdown(dataset: str, table: Sequence[tuple[Claim, Any]]) -> list[str]:
  """The claims table of one dataset: both arms' avg MAP (mean ± std over seeds),
  the paired difference with its 95% interval and p-value, and the verdict."""
  lines = [f"## {dataset}", "",
           "| paper | claim | better | than | avg MAP (better) | avg MAP (than) | "
           "difference [95% CI] | p | verdict |", "|---" * 9 + "|"]
  for claim, entry in table:
    head = f"| {claim.paper} | {claim.text} | {claim.better.label()} | {claim.than.label()} |"
    if isinstance(entry, str):
      lines.append(f"{head} | | | | {entry} |")
      continue
    runs_a, runs_b = entry
    c = significance.compare(runs_a, runs_b, alternative_a=claim.better.alternative,
                             alternative_b=claim.than.alternative)
    verdict = ("holds" if c.low > 0 else "reversed" if c.high < 0
               else "no significant difference")
    mean_std = lambda values: (f"{np.mean(values):.4f} ± {np.std(values):.4f}"
                               if len(values) > 1 else f"{values[0]:.4f}")
    lines.append(f"{head} {mean_std(_avg(runs_a, claim.better.alternative))} | "
                 f"{mean_std(_avg(runs_b, claim.than.alternative))} | {c.interval()} | "
                 f"{c.p_value:.2g} | {verdict} |")
  return lines
