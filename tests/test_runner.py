"""The registry, the runner and the CLIs: a method in one file, the workdir contract,
strict configs, and one-line errors for bad input."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cmjax import configs, data, runner
from cmjax.methods import deep, emd_cnn, fgl, linear, registry, uncsm
from experiments import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
TOY = ["--import_modules=toy_method", "--method=random_projection"]


def _cli(module, *args, check=True):
  env = dict(os.environ, PYTHONPATH=TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def _one_line_error(result, pattern):
  """Exit 1, no traceback, the last stderr line says `pattern`."""
  assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and pattern in last, last


def _npz(path, **changes):
  d = data.make_synthetic(num_train=120, num_test=40, seed=changes.pop("seed", 0))
  arrays = dict(image_train=d.train.image, text_train=d.train.text, label_train=d.train.labels,
                image_test=d.test.image, text_test=d.test.text, label_test=d.test.labels)
  arrays.update(changes)
  np.savez(path, **arrays)
  return str(path)


def test_every_registered_method_has_valid_presets():
  for name in registry.names():
    spec = registry.get(name)
    assert {"default", "quick"} <= set(spec.presets), name
    for preset in spec.presets:
      config = registry.make_config(spec, preset)
      assert all(getattr(config, k) == v for k, v in spec.fixed.items())
    docs = configs.field_docs(spec.config_class)
    missing = [f.name for f in dataclasses.fields(spec.config_class) if f.name not in docs]
    assert not missing, f"{name}: undocumented config fields {missing}"


def test_toy_method_in_one_file_runs_through_cli_and_leaderboard(tmp_path):
  assert sum(1 for _ in open(os.path.join(TESTS, "toy_method.py"))) < 60
  workdir = tmp_path / "toy"
  first = _cli("experiments.run", *TOY, f"--workdir={workdir}")
  assert "random_projection on synthetic seed 0: MAP" in first.stdout
  results = json.loads((workdir / "results.json").read_text())
  assert set(runner.RESULT_KEYS) == set(results)
  assert results["config"] == {"dims": 16, "nan_scores": False, "prepare": {
      "input_transform": "standardize", "validation_fraction": 0.0}}
  # A finished workdir: its results are printed again and nothing is rewritten.
  stamps = {f: os.stat(workdir / f).st_mtime_ns for f in ("results.json", "pr_curves.png")}
  again = _cli("experiments.run", *TOY, f"--workdir={workdir}")
  assert again.stdout == first.stdout
  assert stamps == {f: os.stat(workdir / f).st_mtime_ns for f in stamps}
  board = _cli("experiments.leaderboard", "--import_modules=toy_method",
               "--methods=random_projection,cca", "--datasets=synthetic", "--seeds=1",
               f"--root={tmp_path / 'runs'}", f"--output={tmp_path / 'board.md'}")
  assert "| random_projection |" in (tmp_path / "board.md").read_text(), board.stdout


@pytest.mark.slow
def test_workdir_refuses_other_data_and_concurrent_runs(tmp_path):
  workdir = str(tmp_path / "run")
  a, b = _npz(tmp_path / "a.npz"), _npz(tmp_path / "b.npz", seed=1)
  _cli("experiments.run", *TOY, "--dataset=arrays", f"--data_dir={a}", f"--workdir={workdir}")
  _one_line_error(_cli("experiments.run", *TOY, "--dataset=arrays", f"--data_dir={b}",
                       f"--workdir={workdir}", check=False), "data.fingerprint")
  with runner.Workdir(str(tmp_path / "busy")):  # Another run holds it.
    _one_line_error(_cli("experiments.run", *TOY, f"--workdir={tmp_path / 'busy'}",
                         check=False), "another run is using it right now")
  (tmp_path / "file").write_text("not a folder")
  _one_line_error(_cli("experiments.run", *TOY, f"--workdir={tmp_path / 'file'}", check=False),
                  "cannot be used")
  _one_line_error(_cli("experiments.run", *TOY, "--workdir=/proc/cmjax_run", check=False),
                  "cannot be used")


def test_strict_conversion():
  with pytest.raises(configs.ConfigError, match="unknown config field 'hiden'"):
    configs.from_dict(uncsm.UNCSMConfig, {"hiden": (8,)})
  with pytest.raises(configs.ConfigError, match="'steps' must be int"):
    configs.from_dict(deep.DeepConfig, {"steps": 1.5})
  with pytest.raises(configs.ConfigError, match="'activation' must be one of relu"):
    configs.from_dict(emd_cnn.EMDCNNConfig, {"activation": "gelu"})
  with pytest.raises(configs.ConfigError, match="'hidden' must be > 0"):
    dataclasses.replace(uncsm.UNCSMConfig(), hidden=(8, 0))
  assert configs.from_dict(deep.DeepConfig, {"hidden": [8, 4]}).hidden == (8, 4)


def test_shared_fields_live_in_nested_sections():
  """`training` and `prepare` are set by dotted path or by a mapping, field by field
  over the class's own defaults, and named by their dotted path in errors."""
  config = configs.from_dict(uncsm.UNCSMConfig, {"training.learning_rate": 0.01,
                                                 "prepare": {"validation_fraction": 0.2}})
  assert config.training == configs.TrainingConfig(  # UNCSM's own defaults, one changed.
      learning_rate=0.01, weight_decay=0.004, batch_size=128, eval_every=500, patience=0)
  assert config.prepare == configs.PrepareConfig("standardize", 0.2)
  assert configs.replace(config, training=dict(patience=2)).training.learning_rate == 0.01
  assert configs.merge({"training": {"batch_size": 8, "patience": 4}},
                       {"training.batch_size": 16}) == {"training": {"batch_size": 16,
                                                                     "patience": 4}}
  with pytest.raises(configs.ConfigError, match="did you mean 'training.learning_rate'"):
    configs.from_dict(uncsm.UNCSMConfig, {"learning_rate": 0.01})
  with pytest.raises(configs.ConfigError, match="'training.batch_size' must be > 0"):
    configs.from_dict(fgl.FGLConfig, {"training.batch_size": 0})
  with pytest.raises(configs.ConfigError, match="unknown config field 'prepare.split'"):
    configs.from_dict(linear.LinearConfig, {"prepare.split": 0.1})
  with pytest.raises(configs.ConfigError, match="'training.eval_every' must be int"):
    registry.make_config(registry.get("dbrc"), "quick", training=dict(eval_every=2.5))


def test_a_workdir_made_before_the_sections_resumes(tmp_path):
  """A `config.json` with the shared fields flat (as before `prepare` and
  `training` were nested) is the same run when the values agree, another when not."""
  dataset = data.make_synthetic(num_train=120, num_test=60)
  first = registry.run("cca", dataset, str(tmp_path), preset="quick")
  path = tmp_path / "config.json"
  identity = json.loads(path.read_text())
  flat = dict(identity["config"])
  flat.update(flat.pop("prepare"))
  path.write_text(json.dumps(dict(identity, config=flat)))
  assert registry.run("cca", dataset, str(tmp_path), preset="quick") == first
  with pytest.raises(runner.RunError, match="prepare.validation_fraction: 0.15 -> 0.2"):
    registry.run("cca", dataset, str(tmp_path), preset="quick",
                 prepare=dict(validation_fraction=0.2))


def test_runner_scores_raw_test_items_through_the_fitted_transform(tmp_path):
  """The runner's MAP equals CCA computed by hand on standardised features (the
  transform fitted on the training share of train, CCA refit on all of train)."""
  from cmjax import evaluation, preprocess
  from cmjax.methods import linear
  dataset = data.make_synthetic(num_train=300, num_test=100)
  out = registry.run("cca", dataset, str(tmp_path), prepare=dict(input_transform="standardize"),
                     reg_grid=(0.01,))
  prepared = preprocess.prepare(dataset, "standardize", 0.15, 0)
  projection = linear.fit_cca(prepared.full_train.image, prepared.full_train.text, 10, 0.01)
  scores = linear.similarity(projection.image(prepared.test.image),
                             projection.text(prepared.test.text), projection.similarity)
  assert out["map"] == evaluation.cross_modal_map(scores, dataset.test.labels,
                                                  dataset.test.labels)


def test_a_config_field_added_later_matches_only_at_its_default(tmp_path):
  identity = {"method": "m", "seed": 0, "config": {"a": 1, "new": False}}
  with runner.Workdir(str(tmp_path)) as wd:
    wd.claim({"method": "m", "seed": 0, "config": {"a": 1}})  # Made before `new` existed.
    wd.claim(identity, {"a": 1, "new": False})  # The default: the old behaviour.
    with pytest.raises(runner.RunError, match=r"config.new: None -> True"):
      wd.claim({**identity, "config": {"a": 1, "new": True}}, {"a": 1, "new": False})


def test_registry_run_converts_overrides_as_strictly_as_the_cli(tmp_path):
  dataset = data.make_synthetic(num_train=60, num_test=30)
  with pytest.raises(configs.ConfigError, match="'pretrain' must be bool, got 'no'"):
    registry.run("uncsm", dataset, str(tmp_path / "run"), preset="quick", pretrain="no")
  with pytest.raises(configs.ConfigError, match="unknown config field 'stpes'"):
    registry.run("uncsm", dataset, str(tmp_path / "run"), preset="quick", stpes=10)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("codes", [False, True])
def test_streamed_evaluation_equals_the_dense_one(codes):
  """Blocks of queries scored against everything rank as the whole matrix does, ties
  included (Hamming scores of 4-bit codes tie everywhere). Float scores can
  differ in their last bit (XLA's matrix products are not invariant to the
  block shape), so those agree to float32 rounding, integer-valued ones exactly."""
  from cmjax import hashing, similarity
  rng = np.random.default_rng(0)
  n = 300  # Not a multiple of the query block: the last block is padded.
  labels = rng.integers(0, 5, n)
  if codes:
    images, texts = (np.where(rng.normal(size=(n, 4)) > 0, 1.0, -1.0).astype(np.float32)
                     for _ in range(2))
    score = hashing.codes_score
  else:
    images, texts = (rng.normal(size=(n, 8)).astype(np.float32) for _ in range(2))
    score = similarity.cosine
  dense = runner.evaluate(score, images, texts, labels, "dense", max_dense_pairs=n * n)
  streamed = runner.evaluate(score, images, texts, labels, "streamed", max_dense_pairs=n * n - 1)
  assert dense.scores is not None and streamed.scores is None
  same = np.testing.assert_array_equal if codes else functools.partial(
      np.testing.assert_allclose, rtol=1e-6, atol=1e-6)
  for direction in ("i2t", "t2i"):
    a, b = dense.metrics[direction], streamed.metrics[direction]
    same(a.average_precisions, b.average_precisions)
    same(a.precision_curve, b.precision_curve)
    same(a.score_range, b.score_range)
  assert (dense.roc_auc_queries, streamed.roc_auc_queries) == (n, n - 1)
  assert abs(dense.roc_auc - streamed.roc_auc) < 0.01


def test_a_streamed_run_reports_what_a_dense_run_does(tmp_path):
  dataset = data.make_synthetic(num_train=200, num_test=90)
  spec = registry.get("cca")
  config = registry.make_config(spec, "default", reg_grid=(0.01,))
  dense = runner.run(spec, config, dataset, str(tmp_path / "dense"))
  streamed = runner.run(spec, config, dataset, str(tmp_path / "streamed"), max_dense_pairs=0)
  assert streamed["map"] == pytest.approx(dense["map"], abs=1e-6)
  np.testing.assert_allclose(streamed["pr_curve"]["i2t"], dense["pr_curve"]["i2t"], atol=1e-6)
  assert (tmp_path / "dense" / "test_scores.npy").exists()
  assert not (tmp_path / "streamed" / "test_scores.npy").exists()
  assert streamed["roc_auc_queries"] == 1 and dense["roc_auc_queries"] == 90


def test_a_validation_budget_ranks_the_whole_database_for_a_subset_of_queries():
  from cmjax import evaluation, similarity
  rng = np.random.default_rng(1)
  images, texts = (rng.normal(size=(120, 6)).astype(np.float32) for _ in range(2))
  labels = rng.integers(0, 4, 120)
  full, _ = evaluation.scored_metrics(similarity.cosine, images, texts, labels, labels)
  some, _ = evaluation.scored_metrics(similarity.cosine, images, texts, labels, labels,
                                      max_queries=30)
  rows = np.unique(np.linspace(0, 119, 30).round().astype(int))
  for direction in ("i2t", "t2i"):
    np.testing.assert_array_equal(some[direction].average_precisions,
                                  full[direction].average_precisions[rows])


def test_config_shorthand_names_a_config_family_from_any_directory():
  from experiments import cli
  [arg] = cli.expand_config_shorthand(["--config=uncsm:paper"])
  assert arg == f"--config={configs.config_file('uncsm')}:paper" and os.path.isabs(arg[9:-6])
  assert cli.expand_config_shorthand(["--seed=1"]) == ["--seed=1"]
  with pytest.raises(configs.ConfigError, match="no config file 'nope'.*uncsm"):
    cli.expand_config_shorthand(["--config=nope:default"])


def test_deterministic_flag_reaches_xla_and_results(tmp_path):
  """`--deterministic` sets XLA's deterministic-ops flag before the backend starts
  (recorded in results.json); a feature choice on a features-only dataset is one line."""
  workdir = tmp_path / "det"
  _cli("experiments.run", *TOY, "--deterministic", f"--workdir={workdir}")
  environment = json.loads((workdir / "results.json").read_text())["environment"]
  assert cli.DETERMINISTIC_XLA_FLAG in environment["xla_flags"].split()
  _one_line_error(_cli("experiments.run", *TOY, "--image_features=efficientnet",
                       f"--workdir={tmp_path / 'x'}", check=False),
                  "dataset 'synthetic' takes no view option image_features='efficientnet'")
  assert not (tmp_path / "x").exists()


def test_registry_fit_returns_the_run_model(tmp_path):
  """`registry.fit` on a run's workdir gives the model that scored the test split;
  on other data the workdir is refused."""
  dataset = data.make_synthetic(num_train=200, num_test=60, seed=0)
  workdir = str(tmp_path / "cca")
  registry.run("cca", dataset, workdir, dims=8)
  fitted, prepared = registry.fit("cca", dataset, workdir, dims=8)
  scores = fitted.score(fitted.encode_image(prepared.test.image),
                        fitted.encode_text(prepared.test.text))
  np.testing.assert_allclose(scores, np.load(os.path.join(workdir, "test_scores.npy")),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(runner.RunError):
    registry.fit("cca", data.make_synthetic(num_train=200, num_test=60, seed=1), workdir,
                 dims=8)


def _with_test(dataset, **fields):
  return dataclasses.replace(dataset, test=dataclasses.replace(dataset.test, **fields))


@pytest.mark.parametrize("change, message", [
    (lambda t: {"labels": t.labels.astype(np.int64) + 2**32},
     r"field 'label_test' has class ids in \[4294967296, "),
    (lambda t: {"labels": t.labels + 0.5}, "field 'label_test' has non-integer class ids"),
    (lambda t: {"labels": np.where(np.arange(len(t)) == 3, 10**6, t.labels)},
     r"class ids in \[0, 1000000\], outside \[0, 10\)"),
    (lambda t: {"image": t.image[:-1]}, "field 'image_test' has 29 rows but 'label_test' has 30"),
    (lambda t: {"text": None}, r"field 'text_test' is missing \(None\)"),
    (lambda t: {"image": np.where(np.arange(len(t))[:, None] == 2, np.nan, t.image)},
     r"field 'image_test' has a non-finite value \(nan\) at index \(2, 0\)"),
])
def test_hand_built_dataset_is_checked_as_the_loaders_do(tmp_path, change, message):
  dataset = data.make_synthetic(num_train=60, num_test=30)
  bad = _with_test(dataset, **change(dataset.test))
  for call in (registry.run, registry.fit):
    with pytest.raises(data.DataError, match=message):
      call("cca", bad, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")  # Before any work.
