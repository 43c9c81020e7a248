"""UNCSM: losses against hand computations, the full method on small data, the CLI."""

import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import configs, data, runner
from cmjax.methods import registry, uncsm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPEC = registry.get("uncsm")
SMALL = registry.make_config(
    SPEC, "default", hidden=(64, 32, 16), branch_size=16, metric_hidden=(32, 32, 32),
    pretrain_steps=300, finetune_steps=300, metric_pairs=128 * 100, metric_batch_size=128,
    training=dict(batch_size=64, eval_every=50, patience=0), dropout=0.0)


def test_contrastive_loss_matches_equation_1():
  fi = jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
  ft = jnp.array([[3.0, 4.0], [0.3, 0.4], [3.0, 4.0]])
  relevant = jnp.array([1.0, 0.0, 0.0])
  # Same label: squared distance 25. Different: (1 - 0.5)^2 and max(0, 1 - 5)^2 = 0.
  expected = (25.0 + 0.25 + 0.0) / 3
  assert float(uncsm.contrastive_loss(fi, ft, relevant, 1.0)) == pytest.approx(expected, rel=1e-5)
  grads = jax.grad(lambda f: uncsm.contrastive_loss(f, f, jnp.zeros(3), 1.0))(fi)
  assert np.all(np.isfinite(grads))  # Finite at zero distance.


def test_triplet_loss_random_and_hardest():
  anchor = jnp.zeros((1, 2))
  positive = jnp.array([[1.0, 0.0]])  # d+ = 1.
  negatives = jnp.array([[[3.0, 0.0], [0.5, 0.0], [0.1, 0.0]]])  # d- = 9, 0.25, 0.01.
  irrelevant = jnp.array([[True, True, False]])  # The closest one is relevant: ignored.
  assert float(uncsm.triplet_loss(anchor, positive, negatives, irrelevant, 1.0, "random")) == 0.0
  assert float(uncsm.triplet_loss(anchor, positive, negatives, irrelevant, 1.0, "hardest")) == (
      pytest.approx(1.0 - 0.25 + 1.0))
  none = jnp.zeros((1, 3), bool)
  assert float(uncsm.triplet_loss(anchor, positive, negatives, none, 1.0)) == 0.0


def test_metric_net_first_layer_is_a_dense_on_the_concatenation():
  net = uncsm.MetricNet((8, 8, 8))
  fi, ft = jax.random.normal(jax.random.key(0), (5, 4)), jax.random.normal(jax.random.key(1), (7, 4))
  params = net.init(jax.random.key(2), fi[:1], ft[:1])
  p = params["params"]
  kernel = jnp.concatenate([p["image_in"]["kernel"], p["text_in"]["kernel"]])
  pairs = jnp.concatenate([jnp.repeat(fi, 7, 0), jnp.tile(ft, (5, 1))], 1)
  h = nn.relu(pairs @ kernel + p["image_in"]["bias"])
  for name in ("Dense_0", "Dense_1"):
    h = nn.relu(h @ p[name]["kernel"] + p[name]["bias"])
  logits = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
  expected = jax.nn.softmax(logits)[:, 1].reshape(5, 7)
  np.testing.assert_allclose(uncsm.metric_scores(net, params, fi, ft), expected,
                             rtol=1e-5, atol=1e-6)
  # In steps of 3 queries x 4 items: 2 blocks (one padding row) x 2 tiles (one padding item).
  np.testing.assert_allclose(uncsm.metric_scores(net, params, fi, ft, pairs_per_step=14,
                                                 item_tile=4), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("similarity", ["metric", "cosine"])
def test_uncsm_learns_on_synthetic(tmp_path, similarity):
  dataset = data.make_synthetic(num_train=600, num_test=200)
  config = dataclasses.replace(SMALL, similarity=similarity)
  out = runner.run(SPEC, config, dataset, str(tmp_path), seed=0)
  assert out["map"]["avg"] > 0.4, out["map"]  # Chance is about 0.1.
  assert out["alternatives"]["cosine"]["avg"] > 0.4
  assert set(out["stages"]) == ({"pretrain", "finetune", "metric"} if similarity == "metric"
                                else {"pretrain", "finetune"})
  for stage in out["stages"].values():
    assert stage["best_val_avg_map"] is not None  # Selected on validation, not test.


def test_bfloat16_pathways_keep_the_rest_in_float32(tmp_path):
  """tower_dtype=bfloat16: the 6 pathway products run in bfloat16; parameters,
  representations and the triplet branches stay float32; and it still learns."""
  config = dataclasses.replace(SMALL, tower_dtype="bfloat16")
  model = uncsm.pathway_model(config)
  x, z = jnp.ones((4, 10)), jnp.ones((4, 12))
  params = model.init(jax.random.key(0), x, z)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  text = jax.jit(model.apply).lower(params, x, z).as_text()
  dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
  assert len(dots) == 8 and sum("bf16" in d for d in dots) == 6  # 3 layers x 2 pathways.
  assert all(out.dtype == jnp.float32 for out in model.apply(params, x, z))
  short = dataclasses.replace(config, pretrain=False, similarity="cosine", finetune_steps=200)
  out = runner.run(SPEC, short, data.make_synthetic(num_train=600, num_test=200),
                   str(tmp_path), seed=0)
  # Chance is about 0.1; seen 0.2996 (float32, the same run: 0.3005).
  assert out["map"]["avg"] > 0.25, out["map"]


@pytest.mark.slow
def test_uncsm_with_dbn_and_without_pretraining(tmp_path):
  dataset = data.make_synthetic(num_train=400, num_test=100)
  dataset = dataclasses.replace(dataset, train=dataclasses.replace(
      dataset.train, text=np.abs(dataset.train.text)), test=dataclasses.replace(
      dataset.test, text=np.abs(dataset.test.text)))
  config = configs.replace(
      SMALL, dbn=True, pretrain=False, prepare=dict(input_transform="none"),
      dbn_image_hidden=(32, 16),
      dbn_text_hidden=(16, 16), dbn_steps=100, softmax_steps=300, similarity="cosine")
  out = runner.run(SPEC, config, dataset, str(tmp_path), seed=0)
  assert "pretrain" not in out["stages"]
  assert os.path.isdir(tmp_path / "checkpoints" / "dbn_image_2")
  assert os.path.isdir(tmp_path / "checkpoints" / "softmax_text")
  assert out["map"]["avg"] > 0.2


def _cli(workdir, *extra):
  return [sys.executable, "-m", "experiments.uncsm", f"--workdir={workdir}",
          "--config.hidden=(64,32,16)", "--config.branch_size=16",
          "--config.metric_hidden=(32,32,32)", "--config.pretrain_steps=400",
          "--config.finetune_steps=400", "--config.metric_pairs=25600",
          "--config.training.batch_size=64", "--config.training.eval_every=100",
          "--checkpoint_every=100",
          "--steps_per_call=50", *extra]


@pytest.mark.slow
def test_cli_writes_the_workdir_and_a_rerun_reuses_it(tmp_path):
  """The CLI's workdir; a second invocation finds the finished run. (kill -9 in two
  stages and an exact resume: tests/bad_inputs.py, item 18.)"""
  straight = tmp_path / "straight"
  subprocess.run(_cli(straight), cwd=REPO, check=True, timeout=600, capture_output=True)
  results = json.loads((straight / "results.json").read_text())
  assert {"method", "dataset", "seed", "map", "wall_s"} <= set(results)
  assert results["method"] == "uncsm" and results["dataset"] == "synthetic"
  assert set(results["map"]) == {"i2t", "t2i", "avg"}
  assert (straight / "pr_curves.png").stat().st_size > 10_000
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(straight / "logs" / "finetune"))

  again = subprocess.run(_cli(straight), cwd=REPO, check=True, timeout=600,
                         capture_output=True, text=True)
  assert json.loads((straight / "results.json").read_text()) == results
  assert "finished run found" in again.stderr and "compiling its step" not in again.stderr


@pytest.mark.slow
def test_workdir_of_another_run_is_refused(tmp_path):
  dataset = data.make_synthetic(num_train=200, num_test=50)
  tiny = configs.replace(SMALL, pretrain_steps=10, finetune_steps=10, metric_pairs=1280,
                         training=dict(eval_every=10))
  runner.run(SPEC, tiny, dataset, str(tmp_path), seed=0)
  with pytest.raises(runner.RunError,
                     match=r"holds another run \(config.contrastive_margin: 1.0 -> 2.0\)"):
    runner.run(SPEC, dataclasses.replace(tiny, contrastive_margin=2.0), dataset, str(tmp_path),
               seed=0)
  with pytest.raises(runner.RunError, match=r"seed: 0 -> 1"):
    runner.run(SPEC, tiny, dataset, str(tmp_path), seed=1)
  # The same config on other data is another run too.
  other = data.make_synthetic(num_train=200, num_test=50, seed=1)
  with pytest.raises(runner.RunError, match=r"data.fingerprint"):
    runner.run(SPEC, tiny, other, str(tmp_path), seed=0)
