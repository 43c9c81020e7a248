"""Runs over methods, presets, code lengths and seeds, and their tables and figures.

The library side of `experiments.leaderboard`, `experiments.hashing_leaderboard`
and `experiments.report`, callable from a notebook:

  from cmjax import reports
  runs = reports.leaderboard_runs("wikipedia", ["cca", "sm"], seeds=3, root="/tmp/board")
  print("\\n".join(reports.leaderboard_table("wikipedia", runs)))

Every run goes through `cmjax.runner.run` in its own workdir below `root`, so
finished runs are reused (when config and data match) and interrupted ones
resume. The `*_runs` functions return `results.json` dicts; the `*_table` and
`*_markdown` functions turn them into markdown lines; the figures are PNG
files (`cmjax.plotting`).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

from cmjax import configs, console, data, plotting, runner, significance, train, tune
from cmjax.methods import registry

__all__ = [
    "Progress",
    "check_leaderboard",
    "compare_tables",
    "flag_mark",
    "flag_notes",
    "hashing_figure",
    "hashing_markdown",
    "hashing_runs",
    "leaderboard_figure",
    "leaderboard_runs",
    "leaderboard_table",
    "tuning_budgets",
    "views_of",
    "versus_best",
    "preset_markdown",
    "preset_runs",
    "read_reference",
    "read_table_cells",
]

Runs = list[dict]  # The results.json dicts of one row, one per seed.


def flag_mark(runs: Runs) -> str:
  """' (!)' after a row whose runs carry warnings (constant scores...), else ''."""
  return " (!)" if any(r.get("warnings") for r in runs) else ""


def flag_notes(table: Mapping[str, Runs]) -> list[str]:
  """One line per flagged row and seed: what its run's warnings say."""
  notes = [f"- (!) {name} seed {r['seed']}: {'; '.join(r['warnings'])}"
           for name, runs in table.items() for r in runs if r.get("warnings")]
  return ["", *notes] if notes else []


def _mean_std(values, decimals: int = 4) -> str:
  """"mean ± std" over seeds; one seed has no spread to show: "value (1 seed)"."""
  if len(values) == 1:
    return f"{values[0]:.{decimals}f} (1 seed)"
  return f"{np.mean(values):.{decimals}f} ± {np.std(values):.{decimals}f}"


def over_seeds(seeds: int) -> str:
  """How a table's cells summarise the seeds, in words."""
  return "one seed (no spread shown)" if seeds == 1 else f"mean ± std over {seeds} seeds"


# A table cell of `_mean_std`, for reading tables back.
_CELL = r"[\d.]+(?: ± [\d.]+| \(1 seed\))"


def views_of(specs_configs, dataset: str, data_dir: str | None,
           features: data.FeatureChoice) -> list[data.Dataset]:
  """The data view of each `(spec, config)`, each distinct view loaded once."""
  loaded, out = {}, []
  for spec, config in specs_configs:
    key = registry.view_options(spec, config, dataset, features)  # Frozen: hashable.
    if key not in loaded:
      loaded[key] = registry.load_data(spec, config, dataset, data_dir, features)
    out.append(loaded[key])
  return out


class Progress:
  """Counts the runs of a command and logs `run k of N` with an ETA. Runs of different
  kinds (methods, presets) cost differently, so the ETA sums, over the runs left,
  the mean wall time of the runs of their own kind trained so far (the mean of all,
  for a kind not timed yet, and the line says how many such runs are left).
  Finished runs found in their workdirs are reused and cost nothing.

  Where `console.setup_logging` chose progress bars (a notebook, a terminal), a bar
  over the runs shows them too (`run` k of N, the run in progress); a run's own
  stages show theirs.

  Args:
    plan: the kind of each run, in the order `run` is called.
    what: the command, named in the lines.
  """

  def __init__(self, plan: Sequence[str], what: str):
    self.plan, self.what, self.done = list(plan), what, 0
    self.seconds: dict[str, list[float]] = {}
    self.bar = console.progress_bar(len(self.plan), what, unit="run")

  def _eta(self) -> str:
    times = [s for kind in self.seconds.values() for s in kind]
    if not times:
      return ""
    left = self.plan[self.done - 1:]
    untimed = sum(kind not in self.seconds for kind in left)
    seconds = sum(np.mean(self.seconds.get(kind, times)) for kind in left)
    text = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"; ETA {text}" + (f" ({untimed} of the runs left of kinds not timed yet)"
                              if untimed else "")

  def run(self, spec, config, view, workdir: str, seed: int, label: str, **kwargs) -> dict:
    """`runner.run(spec, config, view, workdir, seed, **kwargs)`, logged."""
    self.done += 1
    finished = runner.read_results(workdir) is not None
    if not finished:
      logging.info("%s: %s -> %s (run %d of %d%s)", self.what, label, workdir, self.done,
                   len(self.plan), self._eta())
    if self.bar is not None:
      self.bar.set_postfix_str(label)
    start = time.time()
    results = runner.run(spec, config, view, workdir, seed, **kwargs)
    if not finished:
      self.seconds.setdefault(self.plan[self.done - 1], []).append(time.time() - start)
    if self.bar is not None:
      self.bar.update(1)
      if self.done >= len(self.plan):
        self.bar.close()
    return results


def _check_preset(spec: registry.MethodSpec, preset: str) -> None:
  if preset not in spec.presets:
    raise configs.ConfigError(f"method {spec.name} has no preset {preset!r} (it has "
                              f"{', '.join(spec.presets)})")


def _check_seeds(seeds: int) -> None:
  if seeds <= 0:
    raise configs.ConfigError(f"--seeds must be > 0, got {seeds}")


# ---------------------------------------------------------------------------
# The leaderboard: every method, one preset, seeds 0..N-1.
# ---------------------------------------------------------------------------


def check_leaderboard(datasets: Sequence[str], methods: Sequence[str], seeds: int,
                      preset: str) -> None:
  """Every dataset and method known, every method has `preset`, seeds > 0; else
  a `DataError` / `ConfigError` before any run."""
  for dataset in datasets:
    if dataset not in data.DATASETS:
      raise data.DataError(f"unknown dataset {dataset!r}; choose from "
                           f"{', '.join(data.DATASETS)}")
  for method in methods:
    _check_preset(registry.get(method), preset)
  _check_seeds(seeds)


def leaderboard_runs(dataset: str, methods: Sequence[str], seeds: int, *,
                     preset: str = "default", root: str = "/tmp/cmjax_leaderboard",
                     data_dir: str | None = None,
                     features: data.FeatureChoice = data.FeatureChoice(),
                     loop: train.LoopConfig = train.LoopConfig(),
                     tuned: str | None = None) -> dict[str, Runs]:
  """`{method: [results of seed 0..seeds-1]}` on `dataset` with the feature choice
  `features`; workdirs `<root>/<dataset><features.suffix>/<method>/<preset>/seed<seed>`.

  Args:
    tuned: a folder of tuned configs (`experiments.tune`'s `--output_dir`): a
      method with one for this dataset runs it instead of `preset` (its results'
      `preset` says `tuned`; workdir `.../<method>/tuned-<config digest>/...`).

  Raises:
    ConfigError: an unknown method, a preset a method lacks, no seeds, a bad
      tuned config file.
    DataError: an unknown dataset or bad data.
  """
  check_leaderboard([dataset], methods, seeds, preset)
  specs = [registry.get(m) for m in methods]
  chosen = [_tuned_or_preset(spec, preset, tuned, dataset + features.suffix) for spec in specs]
  views = views_of([(spec, config) for spec, (config, _) in zip(specs, chosen)], dataset,
                   data_dir, features)
  table = {}
  progress = Progress([spec.name for spec in specs for _ in range(seeds)], "leaderboard")
  for spec, (config, name), view in zip(specs, chosen, views):
    folder = name if name != "tuned" else f"tuned-{tune.config_digest(config)}"
    table[spec.name] = [
        progress.run(spec, config, view, os.path.join(root, dataset + features.suffix,
                                                      spec.name, folder, f"seed{seed}"), seed,
                     f"{spec.name} on {dataset}, seed {seed}", preset=name, loop=loop)
        for seed in range(seeds)]
  return table


def _tuned_or_preset(spec: registry.MethodSpec, preset: str, tuned: str | None,
                     dataset: str) -> tuple[Any, str]:
  """`(config, preset name)`: the tuned config of `spec` on `dataset` in the folder
  `tuned` when there is one (named `tuned`), else `preset`'s."""
  found = tune.load_tuned(tuned, dataset, spec) if tuned else None
  return (found[0], "tuned") if found else (registry.make_config(spec, preset), preset)


def tuning_budgets(tuned: str, dataset: str, methods: Sequence[str]) -> dict[str, dict]:
  """`{method: budget}` (trials, pruned, steps, wall_s) of the methods with a tuned
  config for `dataset` (with its feature suffix) in the folder `tuned`."""
  out = {}
  for method in methods:
    found = tune.load_tuned(tuned, dataset, registry.get(method))
    if found:
      out[method] = found[1]["budget"]
  return out


def versus_best(table: Mapping[str, Runs], best: str) -> dict[str, str]:
  """`{method: "-0.0123 [-0.0190, -0.0051], p = 0.001"}`: each row's avg MAP minus
  the `best` row's, paired over test queries pooled across seeds
  (`cmjax.significance.compare`), with its 95% interval and p-value."""
  out = {}
  for method, runs in table.items():
    if method == best:
      out[method] = "best"
      continue
    try:
      c = significance.compare(runs, table[best])
    except ValueError as e:
      out[method] = f"n/a ({e})" if "per-query" not in str(e) else "n/a (no per-query AP)"
      continue
    out[method] = f"{c.interval()}, p = {c.p_value:.2g}"
  return out


def read_reference(path: str) -> dict[tuple[str, str], float]:
  """`{(dataset, method): avg MAP}` of an earlier leaderboard markdown file."""
  table, dataset = {}, None
  if not os.path.isfile(path):
    raise configs.ConfigError(f"--reference={path}: file not found")
  with open(path) as f:
    for line in f:
      heading = re.match(r"^## (\S+)", line)
      if heading:
        dataset = heading.group(1)
      row = re.match(rf"^\| (\w+) \| {_CELL} \| {_CELL} \| ([\d.]+)[ ]", line)
      if row and dataset:
        table[(dataset, row.group(1))] = float(row.group(2))
  return table


def read_table_cells(path: str) -> dict[tuple[str, str], tuple[str, ...]]:
  """`{(dataset, method): (I->T, T->I, Avg, pair ROC AUC)}` cells ("mean ± std") of a
  leaderboard markdown file (a row's " (!)" flag mark is dropped)."""
  if not os.path.isfile(path):
    raise configs.ConfigError(f"{path}: file not found")
  table, dataset = {}, None
  with open(path) as f:
    for line in f:
      heading = re.match(r"^## (\S+)", line)
      if heading:
        dataset = heading.group(1)
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if dataset and len(cells) >= 6 and re.fullmatch(_CELL, cells[1]):
        table[(dataset, cells[0].replace(" (!)", ""))] = tuple(cells[i] for i in (1, 2, 3, 5))
  return table


def compare_tables(reference: str, table: str) -> list[str]:
  """Markdown lines: for every row of leaderboard `table` also in `reference`, whether
  its I->T, T->I, Avg and pair ROC AUC cells (mean ± std, 4 decimals) are the same."""
  old, new = read_table_cells(reference), read_table_cells(table)
  names = ("I->T", "T->I", "Avg", "pair ROC AUC")
  lines = ["| dataset | method | cells | differences (reference -> new) |", "|---|---|---|---|"]
  same = 0
  for key in new:
    if key not in old:
      lines.append(f"| {key[0]} | {key[1]} | not in the reference | |")
      continue
    diff = [f"{n}: {a} -> {b}" for n, a, b in zip(names, old[key], new[key]) if a != b]
    same += not diff
    lines.append(f"| {key[0]} | {key[1]} | {'identical' if not diff else 'differ'} | "
                 f"{'; '.join(diff)} |")
  shared = sum(key in old for key in new)
  return [f"{same} of {shared} rows identical to 4 decimals (I->T, T->I, Avg, pair ROC AUC: "
          "mean and std over seeds).", "", *lines]


def leaderboard_table(dataset: str, table: Mapping[str, Runs],
                      reference: Mapping[tuple[str, str], float] | None = None,
                      budgets: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
  """The markdown section of one dataset: rows by avg MAP, published numbers, ROC
  AUC, wall time, each row's paired difference to the best row (`versus_best`),
  the config each row ran (its preset, or `tuned` with the tuning budget of
  `budgets`), the difference to `reference` (`read_reference`), flags and each
  family's best member."""
  columns = ["method", "I->T", "T->I", "Avg", "published I->T / T->I", "pair ROC AUC",
             "wall s / run", "Avg - best [95% CI], p", "config"] + (
                 ["Avg - reference"] if reference else [])
  lines = [f"## {dataset}", "", "| " + " | ".join(columns) + " |",
           "|" + "---|" * len(columns)]
  mean_avg = lambda m: np.mean([r["map"]["avg"] for r in table[m]])
  ranked = sorted(table, key=lambda m: -mean_avg(m))
  versus = versus_best(table, ranked[0])
  for method in ranked:
    runs = table[method]
    published = registry.get(method).published.get(dataset)
    cells = [method + flag_mark(runs),
             *(_mean_std([r["map"][d] for r in runs]) for d in ("i2t", "t2i", "avg")),
             f"{published[0]:.4f} / {published[1]:.4f}" if published else "",
             _mean_std([r["roc_auc"] for r in runs]),
             f"{np.mean([r['wall_s'] for r in runs]):.0f}", versus[method],
             _config_cell(runs[0].get("preset"), (budgets or {}).get(method))]
    if reference:
      old = reference.get((dataset, method))
      cells.append("" if old is None else f"{mean_avg(method) - old:+.4f}")
    lines.append("| " + " | ".join(cells) + " |")
  lines += flag_notes(table)
  families = {}
  for method in table:
    family = registry.get(method).family
    if family:
      families.setdefault(family, []).append(method)
  for family, members in families.items():
    lines += ["", f"Best of the {family} family (as the UNCSM paper reports it): "
                  f"{max(members, key=mean_avg)}."]
  return lines


def _config_cell(preset: str | None, budget: Mapping[str, Any] | None) -> str:
  """`default`, or `tuned: 24 trials (5 pruned), 41,000 steps, 3,120 s`. A run that
  `experiments.claims` made for an unchanged tuned arm records its folder,
  `tuned-<config digest>`, as its preset: it is the tuned config too."""
  if preset != "tuned" and not (preset or "").startswith("tuned-"):
    return preset or ""
  if not budget:
    return "tuned"
  return (f"tuned: {budget['trials']} trials ({budget['pruned']} pruned), "
          f"{budget['steps']:,} steps, {budget['wall_s']:,.0f} s")


def leaderboard_figure(dataset: str, table: Mapping[str, Runs], path: str) -> str:
  """Every method's PR curves (precision averaged over seeds), both directions."""
  curves = {d: {m: (np.asarray(runs[0]["pr_curve"]["recall"]),
                    np.mean([r["pr_curve"][d] for r in runs], 0))
                for m, runs in table.items()} for d in ("i2t", "t2i")}
  return plotting.plot_pr_curves(curves, path, title=f"PR curves on {dataset}")


# ---------------------------------------------------------------------------
# The hashing tables: hashing methods x code lengths.
# ---------------------------------------------------------------------------


def hashing_runs(dataset: str, method: str, bits: int, seeds: int, *,
                 preset: str = "default", root: str = "/tmp/cmjax_hashing",
                 data_dir: str | None = None,
                 features: data.FeatureChoice = data.FeatureChoice(),
                 loop: train.LoopConfig = train.LoopConfig()) -> Runs:
  """The results of `method` at `bits` on `dataset` with the feature choice
  `features`, seeds 0..seeds-1; workdirs
  `<root>/<dataset><features.suffix>/<method>/<preset>/bits<bits>/seed<seed>`."""
  spec = registry.get(method)
  if not spec.hashing:
    raise configs.ConfigError(f"method {method} is not a hashing method")
  _check_seeds(seeds)
  config = registry.make_config(spec, preset, bits=bits)
  [view] = views_of([(spec, config)], dataset, data_dir, features)
  progress = Progress([method] * seeds, f"hashing {method} {bits} bits")
  return [progress.run(spec, config, view, os.path.join(
      root, dataset + features.suffix, method, preset, f"bits{bits}", f"seed{seed}"), seed,
                       f"{method} on {dataset}, seed {seed}", preset=preset, loop=loop)
          for seed in range(seeds)]


def hashing_markdown(results: Mapping[tuple[str, str, int], Runs], *, seeds: int, preset: str,
                     command: str, figure_stem: str | None = None) -> list[str]:
  """The hashing report of `{(dataset, method, bits): runs}`: a table per dataset and
  code length, and (with `figure_stem`) a PR figure each,
  `<figure_stem>_<dataset>_<bits>bits.png`."""
  cell = lambda runs, d, k: _mean_std([r["hashing"][d][k] for r in runs], decimals=3)
  datasets, methods, bits_list = (list(dict.fromkeys(key[i] for key in results))
                                  for i in range(3))
  lines = ["# Cross-modal hashing" + ("" if preset == "default" else
                                      f" (preset '{preset}': smoke run)"), "",
           f"Regenerate: `{command}`", "",
           "Database = training items, queries = test items, relevant = same class. mAP@50: "
           "AP over the relevant items within the top 50; MAP: over the full Hamming ranking "
           "(ties by database index); P@r2: precision within Hamming radius 2; "
           f"{over_seeds(seeds)}; {os.cpu_count()} CPU cores.", ""]
  for dataset in datasets:
    for bits in bits_list:
      lines += [f"## {dataset}, {bits} bits", "",
                "| method | mAP@50 I->T | mAP@50 T->I | MAP I->T | MAP T->I | P@r2 I->T | "
                "P@r2 T->I | published mAP@50 I->T / T->I | wall s / run |",
                "|---|---|---|---|---|---|---|---|---|"]
      for method in methods:
        runs = results[(dataset, method, bits)]
        ref = registry.get(method).published_hashing.get(dataset, {}).get(bits)
        lines.append(
            f"| {method} | {cell(runs, 'i2t', 'map@50')} | {cell(runs, 't2i', 'map@50')} | "
            f"{cell(runs, 'i2t', 'map')} | {cell(runs, 't2i', 'map')} | "
            f"{cell(runs, 'i2t', 'precision_radius2')} | "
            f"{cell(runs, 't2i', 'precision_radius2')} | "
            + (f"{ref[0]:.3f} / {ref[1]:.3f}" if ref else "")
            + f" | {np.mean([r['wall_s'] for r in runs]):.0f} |")
      lines.append("")
      if figure_stem:
        figure = hashing_figure({m: results[(dataset, m, bits)] for m in methods},
                                f"{figure_stem}_{dataset}_{bits}bits.png",
                                title=f"Hamming-ranking PR curves, {dataset}, {bits} bits")
        lines += [f"![PR curves, {dataset}, {bits} bits]({os.path.basename(figure)})", ""]
  return lines


def hashing_figure(runs_by_method: Mapping[str, Runs], path: str, title: str) -> str:
  """Every method's hashing PR curves (mean precision over seeds), both directions."""
  curves = {d: {m: (np.asarray(runs[0]["hashing"][d]["pr_curve"]["recall"]),
                    np.mean([r["hashing"][d]["pr_curve"]["precision"] for r in runs], 0))
                for m, runs in runs_by_method.items()} for d in ("i2t", "t2i")}
  return plotting.plot_pr_curves(curves, path, title=title)


# ---------------------------------------------------------------------------
# A method's presets on one dataset.
# ---------------------------------------------------------------------------


def _changes(config: Any, default: Any) -> str:
  """The fields where `config` differs from the default preset."""
  diff = [f"{k}={v}" for k, v in vars(config).items() if getattr(default, k) != v]
  return ", ".join(diff) if diff else "the default preset"


def preset_runs(method: str, dataset: str, presets: Sequence[str], seeds: Sequence[int], *,
                root: str = "/tmp/cmjax_report", data_dir: str | None = None,
                features: data.FeatureChoice = data.FeatureChoice(),
                loop: train.LoopConfig = train.LoopConfig()
                ) -> tuple[dict[str, tuple[str, Runs]], data.Dataset]:
  """`({preset: (its changes vs default, runs)}, the first preset's data view)`;
  workdirs `<root>/<dataset><features.suffix>/<method>/<preset>/seed<seed>`."""
  spec = registry.get(method)
  if not presets:
    raise configs.ConfigError("--presets needs at least one preset")
  for preset in presets:
    _check_preset(spec, preset)
  default = registry.make_config(spec, "default")
  configs_ = [registry.make_config(spec, preset) for preset in presets]
  views = views_of([(spec, c) for c in configs_], dataset, data_dir, features)
  progress = Progress([preset for preset in presets for _ in seeds], "report")
  table = {preset: (_changes(config, default), [
      progress.run(spec, config, view, os.path.join(root, dataset + features.suffix,
                                                    spec.name, preset,
                                                    f"seed{seed}"), seed,
                   f"{spec.name} {preset} on {dataset}, seed {seed}", preset=preset,
                   loop=loop) for seed in seeds])
           for preset, config, view in zip(presets, configs_, views)}
  return table, views[0]


def _preset_row(label: str, runs: Runs, first: Runs, alternative: str | None = None) -> str:
  """A row of `preset_markdown`: its MAPs (of `alternative`'s scorer if given), and its
  paired difference to the first preset's main row."""
  get = (lambda r: r["alternatives"][alternative]) if alternative else (lambda r: r["map"])
  cell = lambda d: _mean_std([get(r)[d] for r in runs])
  auc = np.mean([r["roc_auc"] for r in runs])
  if runs is first and alternative is None:
    versus = "first row"
  else:
    try:
      c = significance.compare(runs, first, alternative_a=alternative)
      versus = f"{c.interval()}, p = {c.p_value:.2g}"
    except ValueError as e:
      versus = "n/a (no per-query AP)" if "per-query" in str(e) else f"n/a ({e})"
  return (f"| {label} | {cell('i2t')} | {cell('t2i')} | {cell('avg')} | {auc:.4f} | "
          f"{len(runs)} | {np.mean([r['wall_s'] for r in runs]):.0f} | {versus} |")


def preset_markdown(method: str, dataset_name: str, table: Mapping[str, tuple[str, Runs]],
                    dataset: data.Dataset, command: str) -> list[str]:
  """The report of `preset_runs`: a row per preset (and per alternative scorer), the
  hashing protocol's table for hashing methods, and each run's stages."""
  spec = registry.get(method)
  first = next(iter(table.values()))[1][0]
  env = first["environment"]
  lines = [
      f"# {spec.name} on {dataset_name}", "", spec.description, "",
      f"Regenerate: `{command}`", "",
      f"Test MAP over all returned results, {first['num_test']} test queries each way; mean ± "
      f"std over seeds; pair ROC AUC; wall time per run (all stages and the evaluation) on "
      f"{os.cpu_count()} CPU cores, backend {env['backend']}.", "",
      f"Data: {first['num_train'] + first['num_val']} training pairs (a stratified share is "
      f"carved out for validation where a preset uses one), {first['num_test']} test pairs, "
      f"view '{first['view']}', image inputs {dataset.train.image.shape[1:]}, text inputs "
      f"{dataset.train.text.shape[1:]}"
      + (f"; {len(dataset.metadata['dropped'])} listed pairs dropped by the loader (missing "
         f"image files)" if dataset.metadata.get("dropped") else "") + ".", "",
      "Avg - first row: paired over the test queries of every seed (95% bootstrap interval, "
      "permutation test p-value; cmjax.significance).", "",
      "| preset (changes vs default) | I->T | T->I | Avg | pair ROC AUC | seeds | wall s / run "
      "| Avg - first row [95% CI], p |",
      "|---|---|---|---|---|---|---|---|",
  ]
  first_runs = next(iter(table.values()))[1]
  for preset, (changes, runs) in table.items():
    label = f"{preset} ({changes}){flag_mark(runs)}"
    lines.append(_preset_row(label, runs, first_runs))
    for name in runs[0]["alternatives"]:
      if runs[0]["config"].get("similarity") != name:
        lines.append(_preset_row(f"{label} — {name} instead", runs, first_runs, name))
  if first.get("hashing"):
    lines += ["", "Hashing protocol (database = training items, queries = test items; mAP@50 "
              "over the relevant items in the top 50, MAP over the full Hamming ranking, P@r2 "
              "within Hamming radius 2):", "",
              "| preset | bits | mAP@50 I->T | mAP@50 T->I | MAP I->T | MAP T->I | "
              "tie-aware MAP I->T | P@r2 I->T | P@r2 T->I |", "|---|---|---|---|---|---|---|---|---|"]
    for preset, (_, runs) in table.items():
      cell = lambda d, k: _mean_std([r["hashing"][d][k] for r in runs])
      lines.append(f"| {preset} | {runs[0]['hashing']['bits']} | {cell('i2t', 'map@50')} | "
                   f"{cell('t2i', 'map@50')} | {cell('i2t', 'map')} | {cell('t2i', 'map')} | "
                   f"{cell('i2t', 'map_tie_aware')} | {cell('i2t', 'precision_radius2')} | "
                   f"{cell('t2i', 'precision_radius2')} |")
  lines += flag_notes({preset: runs for preset, (_, runs) in table.items()})
  lines += ["", "Per run (seed: avg MAP; stage steps and best validation avg MAP):", ""]
  for preset, (_, runs) in table.items():
    for r in runs:
      stages = ", ".join(f"{k} {v['steps']} steps" + (
          f" val {v['best_val_avg_map']:.3f}" if v.get("best_val_avg_map") else "")
                         for k, v in r["stages"].items())
      lines.append(f"- {preset} seed {r['seed']}: avg {r['map']['avg']:.4f} ({stages})")
  return lines
