"""EMD-CNN: losses against loop references, ROC AUC, learning on synthetic and real data."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import configs, data, evaluation, models, runner
from cmjax.methods import emd_cnn, registry


def _run(config, dataset, workdir, seed=0):
  """Runs `config` as the registered method its distance names."""
  name = "emd_cnn" if config.distance == "emd" else f"emd_cnn_{config.distance}"
  return runner.run(registry.get(name), config, dataset, str(workdir), seed)


def test_triplet_and_contrastive_losses_match_loops():
  rng = np.random.default_rng(0)
  d = rng.random((6, 6)).astype(np.float32)
  labels = np.array([0, 1, 0, 2, 1, 0])
  rel = labels[:, None] == labels[None, :]
  margin = 0.3
  per_direction = []
  for dist in (d, d.T):
    hinges = [max(0.0, margin + dist[a, j] - dist[a, k])
              for a in range(6) for j in range(6) for k in range(6) if rel[a, j] and not rel[a, k]]
    per_direction.append(np.mean(hinges))
  got = emd_cnn.pair_losses(jnp.asarray(d), jnp.asarray(rel), margin, "triplet")
  assert float(got) == pytest.approx(sum(per_direction), rel=1e-5)
  contrastive = d[rel].mean() + np.maximum(margin - d[~rel], 0).mean()
  got = emd_cnn.pair_losses(jnp.asarray(d), jnp.asarray(rel), margin, "contrastive")
  assert float(got) == pytest.approx(contrastive, rel=1e-5)


def test_roc_auc_counts_pairs_and_ties():
  rng = np.random.default_rng(1)
  scores = rng.integers(0, 5, 200).astype(float)  # Many ties.
  positive = rng.random(200) < 0.3
  pos, neg = scores[positive], scores[~positive]
  brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
  assert evaluation.roc_auc(scores, positive) == pytest.approx(brute, abs=1e-12)
  assert evaluation.roc_auc(positive.astype(float), positive) == 1.0
  with pytest.raises(ValueError, match="both positive and negative"):
    evaluation.roc_auc(scores, np.ones(200, bool))


def test_text_cnn_ignores_padding():
  ids = np.zeros((2, 40), np.int32)
  ids[0, :10] = np.arange(2, 12)
  ids[1, :25] = np.arange(2, 27)
  net = models.TextCNN(outputs=5, vocabulary_size=30, embedding=8, widths=(2, 3), filters=4)
  params = net.init(jax.random.key(0), ids)
  longer = np.concatenate([ids, np.zeros((2, 24), np.int32)], axis=1)
  np.testing.assert_allclose(net.apply(params, ids), net.apply(params, longer), atol=1e-6)


@pytest.mark.parametrize("ground_cost", ["matrix", "embedding"])
def test_learned_ground_cost_starts_at_the_fixed_cost(ground_cost):
  config = emd_cnn.EMDCNNConfig(ground_cost=ground_cost, image_bins=6, text_bins=4, hidden=(8,))
  model = emd_cnn.build_model(config, pixels=False, vocabulary_size=None)
  params = model.init(jax.random.key(0), jnp.zeros((1, 5)), jnp.zeros((1, 3)))
  cost = np.asarray(model.apply(params, method=emd_cnn.EMDCNN.cost))
  fixed = np.abs(np.linspace(0, 1, 6)[:, None] - np.linspace(0, 1, 4)[None, :])
  assert cost.shape == (6, 4) and np.all(cost > 0)
  assert cost.mean() == pytest.approx(1.0, rel=1e-5)
  assert np.corrcoef(cost.ravel(), fixed.ravel())[0, 1] > 0.99


SMALL = dict(hidden=(64,), steps=300,
             training=configs.TrainingConfig(batch_size=32, eval_every=100))


@pytest.mark.parametrize("distance", ["emd", "euclidean"])
def test_emd_cnn_learns_on_synthetic(tmp_path, distance):
  dataset = data.make_synthetic()
  config = emd_cnn.EMDCNNConfig(distance=distance, **SMALL)
  out = _run(config, dataset, tmp_path)
  chance = np.mean(dataset.test.labels[:, None] == dataset.test.labels[None, :])
  assert out["map"]["avg"] > chance + 0.3, out["map"]
  assert out["roc_auc"] > 0.8
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["method"] == ("emd_cnn" if distance == "emd" else "emd_cnn_euclidean")
  scores = np.load(tmp_path / "test_scores.npy")  # -distance.
  assert scores.shape == (len(dataset.test), len(dataset.test)) and np.all(scores <= 1e-6)


def test_emd_cnn_same_seed_same_numbers(tmp_path):
  dataset = data.make_synthetic()
  config = configs.replace(emd_cnn.EMDCNNConfig(**SMALL), steps=60,
                           training=dict(eval_every=30))
  runs = [_run(config, dataset, tmp_path / name, seed=3) for name in "ab"]
  assert runs[0]["map"] == runs[1]["map"] and runs[0]["roc_auc"] == runs[1]["roc_auc"]


@pytest.mark.slow
def test_emd_cnn_on_web_news_pixels_and_characters(web_news_dir, tmp_path):
  config = emd_cnn.EMDCNNConfig(image_channels=(4, 8), char_embedding=8, text_filters=8,
                                pixels_chars=data.PixelsCharsOptions(max_chars=64), steps=20,
                                training=configs.TrainingConfig(eval_every=10, batch_size=16))
  dataset = registry.load_data(registry.get("emd_cnn"), config, "web_news", web_news_dir)
  assert dataset.train.image.shape[1:] == (64, 64, 3) and dataset.train.image.dtype == np.uint8
  assert dataset.train.text.shape[1] == 64
  assert dataset.train.text.max() < dataset.view.vocabulary_size
  assert dataset.metadata["truncated_captions"]["train"] > 0
  out = _run(config, dataset, tmp_path)
  assert out["view"] == "pixels_chars"
  assert 0.0 < out["map"]["avg"] < 1.0 and 0.0 < out["roc_auc"] < 1.0
  assert out["num_test"] == 497


def test_identity_encoder_needs_histograms(tmp_path):
  dataset = data.make_synthetic()  # Features with negative values.
  config = emd_cnn.EMDCNNConfig(encoder="identity", **SMALL)
  with pytest.raises(ValueError, match="non-negative"):
    _run(config, dataset, tmp_path)


@pytest.mark.parametrize("ground_cost", ["fixed", "matrix"])
def test_identity_encoder_learns_only_the_ground_cost(tmp_path, ground_cost):
  synthetic = data.make_synthetic(num_train=400, num_test=100)
  histograms = lambda s: dataclasses.replace(s, image=np.abs(s.image), text=np.abs(s.text))
  dataset = dataclasses.replace(synthetic, train=histograms(synthetic.train),
                                test=histograms(synthetic.test))
  m, n = dataset.train.image.shape[1], dataset.train.text.shape[1]
  config = emd_cnn.EMDCNNConfig(encoder="identity", ground_cost=ground_cost, image_bins=m,
                                text_bins=n, steps=6,  # Batches of 32, as SMALL's (of
                                # the default 128, 6 steps took 55 s on 2 cores).
                                training=configs.TrainingConfig(batch_size=32, eval_every=3))
  out = _run(config, dataset, tmp_path)
  assert out["stages"]["emd_cnn"]["steps"] == (0 if ground_cost == "fixed" else 6)
  assert 0.0 < out["map"]["avg"] < 1.0


def test_bfloat16_towers_keep_the_transport_in_float32(tmp_path):
  """tower_dtype=bfloat16: the towers' products run in bfloat16, every Sinkhorn
  product stays float32 at HIGHEST precision, the histograms are float32; and
  the model still learns."""
  config = emd_cnn.EMDCNNConfig(tower_dtype="bfloat16", **SMALL)
  model = emd_cnn.build_model(config, pixels=False, vocabulary_size=None)
  x, z = jnp.ones((4, 10)), jnp.ones((4, 12))
  params = model.init(jax.random.key(0), x, z)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))

  def distances(params, x, z):
    return emd_cnn.batch_distances(config, *model.apply(params, x, z))[0]

  text = jax.jit(distances).lower(params, x, z).as_text()
  dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
  tower = [d for d in dots if "bf16" in d]
  transport = [d for d in dots if "bf16" not in d]
  assert len(tower) == 4 and transport  # 2 layers x 2 towers; the rest is Sinkhorn.
  assert all("precision = [HIGHEST, HIGHEST]" in d and "f32" in d for d in transport)
  p, q, _ = model.apply(params, x, z)
  assert p.dtype == q.dtype == jnp.float32
  dataset = data.make_synthetic(num_train=400, num_test=200)
  out = _run(configs.replace(config, steps=100, training=dict(eval_every=50)), dataset, tmp_path)
  chance = np.mean(dataset.test.labels[:, None] == dataset.test.labels[None, :])
  assert out["map"]["avg"] > chance + 0.2, out["map"]
