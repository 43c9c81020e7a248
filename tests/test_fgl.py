"""FGL: the word graph, the sparse Chebyshev convolution against a dense reference,
the losses against loops, learning on synthetic and real data."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import data, models, plotting, runner, text_graph
from cmjax.methods import fgl, registry


def _graph(v=40, seed=0):
  rng = np.random.default_rng(seed)
  return text_graph.build_graph(rng.normal(size=(v, 6)).astype(np.float32), neighbors=4)


def test_word_graph_is_symmetric_knn_with_scaled_spectrum():
  graph = _graph()
  dense = text_graph.dense_laplacian(graph)
  np.testing.assert_allclose(dense, dense.T, atol=1e-6)
  eigenvalues = np.linalg.eigvalsh(dense)
  assert eigenvalues.min() >= -1 - 1e-5 and eigenvalues.max() <= 1 + 1e-5
  degree = (np.abs(dense) > 0).sum(1) - 1  # Off-diagonal neighbours.
  assert degree.min() >= 4  # Every word keeps at least its own k neighbours.


def test_graph_neighbours_are_its_edges_strongest_first():
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(30)]
  graph = text_graph.build_graph(rng.normal(size=(30, 6)).astype(np.float32), 4, words)
  assert graph.words == tuple(words)
  dense = text_graph.dense_laplacian(graph)
  for node in (0, 7, 29):
    got = graph.neighbours(node)
    expected = set(np.flatnonzero(dense[node])) - {node}
    assert set(got.tolist()) == expected and len(got) == len(expected)
    assert np.all(np.diff(dense[node, got]) >= 0)  # Most negative L~ entry: strongest edge.
  with pytest.raises(ValueError, match="3 words for 30 embeddings"):
    text_graph.build_graph(rng.normal(size=(30, 6)), 4, words[:3])


def test_tokens_vocabulary_embeddings_and_signals():
  texts = [text_graph.tokenize(t, "bigrams") for t in ["北京 大学", "北京市", "大学生"]]
  assert texts[0] == ["北京", "京大", "大学"]
  vocab = text_graph.vocabulary(texts, 3)
  assert list(vocab) == ["北京", "大学", "京大"]  # Most documents first, ties by token.
  signals = text_graph.node_signals(texts, vocab)
  np.testing.assert_allclose(signals[0], np.log1p([1, 1, 1]))
  assert signals[1, vocab["大学"]] == 0
  assert text_graph.word_embeddings(texts, vocab, 2, window=2).shape == (3, 2)


def test_chebyshev_convolution_matches_dense_reference():
  graph = _graph()
  lap = text_graph.dense_laplacian(graph)
  x = jax.random.normal(jax.random.key(0), (3, graph.num_nodes, 2))
  conv = models.ChebConv(features=5, order=4)
  params = conv.init(jax.random.key(1), x, graph.arrays())
  got = conv.apply(params, x, graph.arrays())
  terms = [np.asarray(x), np.einsum("ij,bjf->bif", lap, x)]
  for _ in range(2, 4):
    terms.append(2 * np.einsum("ij,bjf->bif", lap, terms[-1]) - terms[-2])
  dense = params["params"]["Dense_0"]
  expected = np.concatenate(terms, -1) @ dense["kernel"] + dense["bias"]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_fine_grained_weights_and_losses_match_loops():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(5, 5)).astype(np.float32)
  labels = np.array([0, 1, 0, 1, 2])
  rel = (labels[:, None] == labels[None, :]).astype(np.float32)
  s = rng.random((5, 5)).astype(np.float32)
  w = np.asarray(fgl.fine_grained_weights(jnp.asarray(s), jnp.asarray(rel), 2.0))
  for i in range(5):
    for j in range(5):
      assert w[i, j] == pytest.approx(1 + 2 * (1 - s[i, j]) if rel[i, j] else 1 + 2 * s[i, j])
  softplus = lambda v: np.log1p(np.exp(v))
  pos = [(w[i, j], softplus(-z[i, j])) for i in range(5) for j in range(5) if rel[i, j]]
  neg = [(w[i, j], softplus(z[i, j])) for i in range(5) for j in range(5) if not rel[i, j]]
  weighted = lambda pairs: sum(a * b for a, b in pairs) / sum(a for a, _ in pairs)
  config = fgl.FGLConfig()
  got = fgl.matching_loss(jnp.asarray(z), jnp.asarray(rel), jnp.asarray(w), config)
  assert float(got) == pytest.approx(weighted(pos) + weighted(neg), rel=1e-5)
  # Distribution loss with unit weights: variances plus the hinge on the mean gap.
  sig = 1 / (1 + np.exp(-z))
  sp, sn = sig[rel > 0], sig[rel == 0]
  expected = sp.var() + sn.var() + 1.0 * max(0.0, 0.5 - (sp.mean() - sn.mean()))
  config = fgl.FGLConfig(loss="distribution")
  got = fgl.matching_loss(jnp.asarray(z), jnp.asarray(rel), jnp.ones((5, 5)), config)
  assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("labels", ["fine_grained", "binary"])
def test_fgl_learns_on_synthetic(tmp_path, labels):
  dataset = data.make_synthetic(num_train=600, num_test=200)
  out = registry.run("fgl", dataset, str(tmp_path), preset="quick", labels=labels, steps=300)
  assert out["map"]["avg"] > 0.5, out["map"]  # Chance is about 0.1.
  assert ("siamese" in out["stages"]) == (labels == "fine_grained")
  assert out["extras"]["text_encoder"] == "mlp"
  # The fitted model from the workdir (nothing retrained): fine-grained pair weights.
  fitted, prepared = registry.fit("fgl", dataset, str(tmp_path), preset="quick",
                                  labels=labels, steps=300)
  assert ("pair_weights" in fitted.parts) == (labels == "fine_grained")
  if labels == "fine_grained":
    test = prepared.test
    weights = np.asarray(fitted.parts["pair_weights"](test.text[:50], test.labels[:50]))
    assert weights.shape == (50, 50)
    np.testing.assert_allclose(weights, weights.T, atol=1e-5)
    assert weights.min() >= 1 - 1e-5 and weights.max() <= 2 + 1e-5  # beta = 1.
    # The siamese network has learned the classes: s = 2 - w for same-class pairs,
    # w - 1 for the others, is higher for the former.
    relevant = test.labels[:50, None] == test.labels[None, :50]
    s_same, s_other = 2 - weights[relevant].mean(), weights[~relevant].mean() - 1
    assert s_same > s_other + 0.1, (s_same, s_other)  # Seen: 0.88 vs 0.68 (50 steps).
    path = plotting.plot_pair_weights(weights, test.labels[:50], str(tmp_path / "w.png"))
    assert os.path.getsize(path) > 1000


@pytest.mark.parametrize("kind", ["mlp", "gcn"])
def test_bfloat16_paths_keep_the_graph_convolution_and_scores_in_float32(kind):
  """tower_dtype=bfloat16: the dense layers of both paths run in bfloat16; the
  Chebyshev recursion, the parameters, the representations and the pair
  scores stay float32."""
  config = registry.make_config(registry.get("fgl"), "quick", tower_dtype="bfloat16",
                                 embed=16, image_hidden=(32,), text_hidden=(32,))
  model = fgl.build_model(config, kind)
  graph = jax.tree.map(jnp.asarray, _graph().arrays())
  x, z = jnp.ones((4, 10)), jnp.ones((4, 40))
  params = model.init(jax.random.key(0), x, z, graph)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  text = jax.jit(model.apply).lower(params, x, z, graph).as_text()
  dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
  bf16 = [d for d in dots if "bf16" in d]
  # Image: 2 dense layers; text: 2 (MLP) or the dense after the graph convolution.
  assert len(bf16) == (4 if kind == "mlp" else 3), bf16
  assert all("bf16" not in d for d in dots if d not in bf16)
  fi = model.apply(params, x, method=fgl.FGLNet.encode_image)
  ft = model.apply(params, z, graph, method=fgl.FGLNet.encode_text)
  assert fi.dtype == ft.dtype == jnp.float32
  assert model.apply(params, fi, ft, method=fgl.FGLNet.logits).dtype == jnp.float32


def test_fgl_gcn_on_web_news(web_news_dir, tmp_path):
  spec = registry.get("fgl")
  config = registry.make_config(spec, "quick")
  dataset = registry.load_data(spec, config, "web_news", web_news_dir)
  graph = dataset.view.graph
  assert dataset.train.text.shape == (1693, 300) and graph.num_nodes == 300
  assert len(graph.words) == 300 and len(set(graph.words)) == 300
  assert np.all(dataset.train.text >= 0)
  # Captions without any of the 300 words stay in (all-zero signal) and are counted.
  empty = {name: int((split.text.sum(1) == 0).sum())
           for name, split in (("train", dataset.train), ("test", dataset.test))}
  assert {k: len(v) for k, v in dataset.metadata["captions_without_words"].items()} == empty
  out = runner.run(spec, config, dataset, str(tmp_path))
  assert out["extras"]["text_encoder"] == "gcn" and out["view"] == "words_graph"
  assert out["map"]["avg"] > 0.15 and out["num_test"] == 497  # Chance is about 0.11.
