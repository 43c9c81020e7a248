"""EMD-CNN: cross-modal earth mover's distance-driven networks (Zuo et al. 2020).

Each modality has its own network ending in a softmax, so that every image
becomes a histogram p over `image_bins` bins and every text a histogram q over
`text_bins` bins (the sizes differ). The dissimilarity of an image/text pair
is EMD(p, q; D) under a ground cost D (`[image_bins, text_bins]`), computed by
entropic OT (`cmjax.ot.shared_cost_sinkhorn`, differentiated by unrolling).
Both networks and the ground cost are learned jointly from relevant /
irrelevant pairs with a margin loss. Retrieval ranks the whole database by EMD
(`cmjax.ot.pairwise_emd`); pair classification thresholds it (ROC AUC).

Encoders: on feature datasets (wikipedia) an MLP per modality over the feature
vector; on `web_news` pixels and characters (`load_web_news_pixels`) a small
image CNN and a Kim-2014 style text CNN over character embeddings, trained
from scratch. `encoder="identity"` skips the networks: the (non-negative)
input features themselves, L1-normalised, are the histograms and only the
ground cost is learned.

Choices the paper's abstract leaves open are `EMDCNNConfig` fields (and flags
of `experiments/emd_cnn.py`):

- `ground_cost`: `fixed` (|i/(m-1) - j/(n-1)|, scaled to mean 1), `matrix`
  (a learned positive matrix, scaled to mean 1) or `embedding` (distances
  between learned bin embeddings, scaled to mean 1); the learned ones start at
  the fixed cost.
- `loss`: `triplet` (hinge on every relevant/irrelevant pair of each anchor in
  the batch, both directions) or `contrastive` (EMD of relevant pairs down,
  irrelevant pairs pushed beyond the margin).
- `distance`: `emd`, or the control rows `cosine` / `euclidean`: the same
  networks with equal-size outputs (`image_bins` bins each), the same loss,
  compared bin by bin.

Training samples `batch_size` documents and scores all batch_size^2
image/text pairs in the batch (one shared-cost Sinkhorn call).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Literal, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import data as data_lib
from cmjax import evaluation, ot, preprocess, results, sampling, train
from cmjax.models import MLP

__all__ = [
    "EMDCNN",
    "EMDCNNConfig",
    "ImageCNN",
    "TextCNN",
    "distance_matrix",
    "load_dataset",
    "pair_losses",
    "run",
]


@dataclasses.dataclass(frozen=True)
class EMDCNNConfig:
  """Every setting of an EMD-CNN run."""

  # Comparison.
  distance: Literal["emd", "cosine", "euclidean"] = "emd"
  image_bins: int = 16
  text_bins: int = 8  # Ignored by the cosine/euclidean controls (they use image_bins).
  ground_cost: Literal["fixed", "matrix", "embedding"] = "matrix"
  cost_embedding_dim: int = 4
  epsilon: float = 0.1  # In units of the mean ground cost (1).
  sinkhorn_iterations: int = 50  # Unrolled iterations in training.
  sinkhorn_domain: Literal["auto", "scaling", "log"] = "auto"
  eval_max_iterations: int = 2000  # Retrieval: until the marginal error < eval_threshold.
  eval_threshold: float = 1e-3
  # Loss.
  loss: Literal["triplet", "contrastive"] = "triplet"
  margin: float = 0.1
  # Encoders.
  encoder: Literal["network", "identity"] = "network"
  hidden: tuple[int, ...] = (512,)  # Feature MLPs.
  activation: str = "relu"
  dropout: float = 0.2
  image_channels: tuple[int, ...] = (16, 32, 64)  # Image CNN (stride-2 3x3 convolutions).
  char_embedding: int = 32
  text_widths: tuple[int, ...] = (2, 3, 4)
  text_filters: int = 64
  max_chars: int = 256
  char_vocab: int = 4000
  # Optimisation and model selection.
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  batch_size: int = 32
  steps: int = 2000
  input_transform: str = "sqrt_standardize"  # Feature datasets only.
  validation_fraction: float = 0.15
  eval_every: int = 250
  patience: int = 4

  @property
  def method_name(self) -> str:
    """`emd_cnn`, or `emd_cnn_cosine` / `emd_cnn_euclidean` for the control rows."""
    return "emd_cnn" if self.distance == "emd" else f"emd_cnn_{self.distance}"

  @property
  def bins(self) -> tuple[int, int]:
    """(image, text) output sizes: different for EMD, equal for the controls."""
    if self.distance == "emd":
      return self.image_bins, self.text_bins
    return self.image_bins, self.image_bins


# ---------------------------------------------------------------------------
# Encoders.
# ---------------------------------------------------------------------------


class ImageCNN(nn.Module):
  """`[B, H, W, 3]` uint8 pixels -> `[B, outputs]` logits.

  Stride-2 3x3 convolutions with ReLU, global average pooling, dropout, dense.
  """

  outputs: int
  channels: Sequence[int] = (32, 64, 128)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, pixels: jax.Array, train: bool = False) -> jax.Array:
    x = pixels.astype(jnp.float32) / 127.5 - 1.0
    for width in self.channels:
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2))(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(jnp.mean(x, axis=(1, 2)))
    return nn.Dense(self.outputs)(x)


class TextCNN(nn.Module):
  """`[B, L]` character ids (0 pads, at the end) -> `[B, outputs]` logits.

  Kim (2014): embeddings, one convolution per width, ReLU, max over the
  windows that start on a real character, dropout, dense.
  """

  outputs: int
  vocabulary_size: int
  embedding: int = 64
  widths: Sequence[int] = (2, 3, 4)
  filters: int = 128
  dropout: float = 0.0

  @nn.compact
  def __call__(self, ids: jax.Array, train: bool = False) -> jax.Array:
    ids = ids.astype(jnp.int32)
    x = nn.Embed(self.vocabulary_size, self.embedding)(ids)
    pooled = []
    for width in self.widths:
      h = nn.relu(nn.Conv(self.filters, (width,), padding="VALID")(x))  # [B, L - w + 1, f]
      real = (ids[:, : h.shape[1]] > 0)[:, :, None]
      pooled.append(jnp.max(jnp.where(real, h, 0.0), axis=1))
    x = nn.Dropout(self.dropout, deterministic=not train)(jnp.concatenate(pooled, axis=-1))
    return nn.Dense(self.outputs)(x)


class EMDCNN(nn.Module):
  """Two networks ending in softmax histograms, plus the learned ground cost.

  Attributes:
    image_net, text_net: modules `(inputs, train) -> [B, bins]` logits.
    config: the run's settings (bins, ground cost, encoder).
  """

  image_net: nn.Module
  text_net: nn.Module
  config: EMDCNNConfig

  def setup(self):
    m, n = self.config.bins
    fixed, x, y = ot.ground_cost_on_line(m, n)
    if self.config.ground_cost == "matrix":
      # softplus^-1 of the fixed cost (+0.05 keeps it finite): starts at the fixed cost.
      start = fixed + 0.05
      self.cost_logits = self.param("cost_logits", lambda _: jnp.log(jnp.expm1(start)))
    elif self.config.ground_cost == "embedding":
      d = self.config.cost_embedding_dim
      on_line = lambda points: lambda _: jnp.zeros((points.shape[0], d)).at[:, 0].set(points)
      self.image_points = self.param("image_points", on_line(x))
      self.text_points = self.param("text_points", on_line(y))

  def cost(self) -> jax.Array:
    """`[m, n]` ground cost with mean 1."""
    kind = self.config.ground_cost
    if kind == "matrix":
      return ot.learned_ground_cost({"logits": self.cost_logits}, "matrix")
    if kind == "embedding":
      return ot.learned_ground_cost(
          {"image_points": self.image_points, "text_points": self.text_points}, "embedding")
    if kind == "fixed":
      fixed, _, _ = ot.ground_cost_on_line(*self.config.bins)
      return fixed / jnp.mean(fixed)
    raise ValueError(f"unknown ground cost {kind!r}")

  def image_histogram(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[B, ...]` images -> `[B, m]` histograms."""
    if self.config.encoder == "identity":
      return _normalise(x)
    return jax.nn.softmax(self.image_net(x, train), axis=-1)

  def text_histogram(self, z: jax.Array, train: bool = False) -> jax.Array:
    """`[B, ...]` texts -> `[B, n]` histograms."""
    if self.config.encoder == "identity":
      return _normalise(z)
    return jax.nn.softmax(self.text_net(z, train), axis=-1)

  def __call__(self, x: jax.Array, z: jax.Array, train: bool = False):
    return self.image_histogram(x, train), self.text_histogram(z, train), self.cost()


def _normalise(h: jax.Array) -> jax.Array:
  return h / jnp.maximum(jnp.sum(h, axis=-1, keepdims=True), 1e-12)


def build_model(config: EMDCNNConfig, pixels: bool, vocabulary_size: int | None) -> EMDCNN:
  """The EMD-CNN of a dataset: CNNs on pixels/characters, else feature MLPs."""
  m, n = config.bins
  if pixels:
    image_net = ImageCNN(m, config.image_channels, config.dropout)
    text_net = TextCNN(n, vocabulary_size, config.char_embedding, config.text_widths,
                       config.text_filters, config.dropout)
  else:
    # Dropout acts on the input of every layer after the first: here, the hidden layers.
    mlp = lambda out: MLP(tuple(config.hidden) + (out,), config.activation, "none",
                          config.dropout)
    image_net, text_net = mlp(m), mlp(n)
  return EMDCNN(image_net, text_net, config)


# ---------------------------------------------------------------------------
# Distances and losses (pure functions of arrays).
# ---------------------------------------------------------------------------


def _solver_config(config: EMDCNNConfig, training: bool) -> ot.SinkhornConfig:
  if training:
    return ot.SinkhornConfig(epsilon=config.epsilon, max_iterations=config.sinkhorn_iterations)
  return ot.SinkhornConfig(epsilon=config.epsilon, max_iterations=config.eval_max_iterations,
                           threshold=config.eval_threshold)


def batch_distances(config: EMDCNNConfig, p: jax.Array, q: jax.Array,
                    cost: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`[B, m]` x `[B, n]` -> (`[B, B]` distances of every image/text pair, fraction converged).

  Training form: a fixed number of unrolled Sinkhorn iterations for EMD.
  """
  b = p.shape[0]
  if config.distance == "emd":
    rows = jnp.repeat(p, b, axis=0)  # [B*B, m]: pair (i, j) at i * B + j.
    cols = jnp.tile(q, (b, 1))
    out = ot.shared_cost_sinkhorn(rows, cols, cost, _solver_config(config, True),
                                  domain=config.sinkhorn_domain)
    return out.cost.reshape(b, b), jnp.mean(out.converged.astype(jnp.float32))
  return _plain_distances(config.distance, p, q), jnp.ones(())


def _plain_distances(kind: str, p: jax.Array, q: jax.Array) -> jax.Array:
  """`[Q, d]` x `[N, d]` -> `[Q, N]` cosine distance (1 - cos) or Euclidean distance."""
  if kind == "cosine":
    unit = lambda h: h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
    return 1.0 - unit(p) @ unit(q).T
  if kind == "euclidean":
    sq = jnp.sum(p**2, -1)[:, None] + jnp.sum(q**2, -1)[None, :] - 2 * p @ q.T
    return jnp.sqrt(jnp.maximum(sq, 0.0) + 1e-12)
  raise ValueError(f"unknown distance {kind!r}")


def pair_losses(distances: jax.Array, relevant: jax.Array, margin: float,
                kind: Literal["triplet", "contrastive"]) -> jax.Array:
  """Margin loss of a `[B, B]` image/text distance matrix with `[B, B]` relevance.

  - `triplet`: for every image anchor i, relevant text j and irrelevant text
    k: relu(margin + d(i, j) - d(i, k)); the same for text anchors; the mean
    over valid triplets of each direction, summed over both directions.
  - `contrastive`: mean d over relevant pairs + mean relu(margin - d) over
    irrelevant pairs.
  """
  rel = relevant.astype(distances.dtype)
  irr = 1.0 - rel
  if kind == "contrastive":
    mean_over = lambda x, w: jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)
    return mean_over(distances, rel) + mean_over(jax.nn.relu(margin - distances), irr)
  if kind != "triplet":
    raise ValueError(f"unknown loss {kind!r}")

  def one_direction(d, r, i):  # Anchors on rows: d[a, j] relevant, d[a, k] irrelevant.
    hinge = jax.nn.relu(margin + d[:, :, None] - d[:, None, :])  # [A, j, k]
    valid = r[:, :, None] * i[:, None, :]
    return jnp.sum(hinge * valid) / jnp.maximum(jnp.sum(valid), 1.0)

  return one_direction(distances, rel, irr) + one_direction(distances.T, rel.T, irr.T)


def distance_matrix(config: EMDCNNConfig, p: jax.Array, q: jax.Array, cost: jax.Array,
                    on_nonconvergence: Literal["raise", "warn"] = "warn") -> np.ndarray:
  """`[Q, m]` x `[N, n]` -> `[Q, N]` distances for retrieval (EMD to convergence)."""
  if config.distance == "emd":
    return np.asarray(ot.pairwise_emd(p, q, cost, _solver_config(config, False),
                                      on_nonconvergence=on_nonconvergence))
  return np.asarray(_plain_distances(config.distance, p, q))


# ---------------------------------------------------------------------------
# Training and evaluation.
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model", "modality"))
def _histogram_block(model: EMDCNN, params, inputs: jax.Array, modality: str) -> jax.Array:
  method = EMDCNN.image_histogram if modality == "image" else EMDCNN.text_histogram
  return model.apply(params, inputs, method=method)


def _histograms(model: EMDCNN, params, image: np.ndarray, text: np.ndarray, block: int = 256):
  """All `[N, m]` image and `[N, n]` text histograms and the `[m, n]` cost, in blocks."""
  in_blocks = lambda a, modality: jnp.concatenate(
      [_histogram_block(model, params, jnp.asarray(a[s:s + block]), modality)
       for s in range(0, len(a), block)])
  return (in_blocks(image, "image"), in_blocks(text, "text"),
          model.apply(params, method=EMDCNN.cost))


def evaluate(config: EMDCNNConfig, model: EMDCNN, params, split: data_lib.Split,
             on_nonconvergence: Literal["raise", "warn"] = "warn") -> dict:
  """Test-protocol metrics of one split: MAP both ways, PR curves, ROC AUC, distances."""
  p, q, cost = _histograms(model, params, split.image, split.text)
  distances = distance_matrix(config, p, q, cost, on_nonconvergence)
  metrics = evaluation.cross_modal_metrics(-distances, -distances.T, split.labels, split.labels)
  relevant = np.asarray(evaluation.relevance(jnp.asarray(split.labels),
                                             jnp.asarray(split.labels)))
  return {"metrics": metrics, "roc_auc": evaluation.roc_auc(-distances, relevant),
          "distances": distances}


def _stage(config: EMDCNNConfig, model: EMDCNN, val: data_lib.Split | None) -> train.Stage:
  def sample_fn(rng, data):
    return sampling.sample_rows(rng, data, config.batch_size)

  def loss_fn(params, context, batch, rng):
    p, q, cost = model.apply(params, batch["image"], batch["text"], True, rngs={"dropout": rng})
    distances, converged = batch_distances(config, p, q, cost)
    relevant = evaluation.relevance(batch["labels"], batch["labels"])
    loss = pair_losses(distances, relevant, config.margin, config.loss)
    gap = (jnp.sum(distances * ~relevant) / jnp.maximum(jnp.sum(~relevant), 1)
           - jnp.sum(distances * relevant) / jnp.maximum(jnp.sum(relevant), 1))
    return loss, {"sinkhorn_converged": converged, "distance_gap": gap}

  eval_fn = None
  if val is not None:
    def eval_fn(params):
      m = evaluate(config, model, params, val)["metrics"]
      return {"i2t": m["i2t"].map, "t2i": m["t2i"].map,
              "avg": (m["i2t"].map + m["t2i"].map) / 2}

  return train.Stage(
      name="emd_cnn", loss_fn=loss_fn, sample_fn=sample_fn,
      optimizer=optax.adamw(config.learning_rate, weight_decay=config.weight_decay),
      num_steps=config.steps if config.encoder == "network" or config.ground_cost != "fixed"
      else 0,
      eval_fn=eval_fn, eval_every=config.eval_every,
      select_metric="avg" if eval_fn else None, patience=config.patience)


def load_dataset(name: str, data_dir: str | None, config: EMDCNNConfig) -> data_lib.Dataset:
  """The dataset as EMD-CNN reads it: web_news as pixels and characters, others as features."""
  if name == "web_news":
    return data_lib.load_web_news_pixels(data_dir or data_lib.default_data_dir(name),
                                         max_chars=config.max_chars, char_vocab=config.char_vocab)
  return data_lib.load_dataset(name, data_dir)


def _prepare(config: EMDCNNConfig, dataset: data_lib.Dataset, seed: int) -> preprocess.Prepared:
  """Train/validation/test; feature datasets get `input_transform` (not pixels or ids)."""
  pixels = dataset.train.image.ndim == 4
  transform = config.input_transform
  if pixels or config.encoder == "identity":
    transform = "none"
  if config.encoder == "identity" and (np.any(dataset.train.image < 0)
                                       or np.any(dataset.train.text < 0)):
    raise ValueError("encoder='identity' needs non-negative (histogram) features")
  return preprocess.prepare(dataset, transform, config.validation_fraction, seed)


def run(
    config: EMDCNNConfig,
    dataset: data_lib.Dataset,
    workdir: str,
    seed: int = 0,
    *,
    mesh: jax.sharding.Mesh | None = None,
    loop: train.LoopConfig = train.LoopConfig(),
) -> dict:
  """Trains EMD-CNN (or a control) on `dataset.train`, evaluates on `dataset.test`.

  `dataset` holds feature vectors, or pixels `[n, H, W, 3]` and character ids
  `[n, L]` (`cmjax.data.load_web_news_pixels`). Writes the workdir like UNCSM
  (`results.json` with `roc_auc`, `pr_curves.png`, `test_distances.npy`).
  """
  start = time.time()
  method = config.method_name
  os.makedirs(workdir, exist_ok=True)
  results.claim_workdir(workdir, {"method": method, "dataset": dataset.name, "seed": seed,
                                  "config": dataclasses.asdict(config)})
  prepared = _prepare(config, dataset, seed)
  pixels = prepared.train.image.ndim == 4
  if config.encoder == "identity":
    if pixels:
      raise ValueError("encoder='identity' needs histogram features, not pixels")
    sizes = (prepared.train.image.shape[1], prepared.train.text.shape[1])
    if config.bins != sizes:
      raise ValueError(f"encoder='identity' compares the input histograms themselves: set "
                       f"--image_bins={sizes[0]} --text_bins={sizes[1]}")
  vocabulary_size = dataset.metadata.get("vocabulary_size") if pixels else None
  model = build_model(config, pixels, vocabulary_size)
  params = model.init(jax.random.key(seed), jnp.asarray(prepared.train.image[:1]),
                      jnp.asarray(prepared.train.text[:1]))
  train_data = {"image": jnp.asarray(prepared.train.image),
                "text": jnp.asarray(prepared.train.text),
                "labels": jnp.asarray(prepared.train.labels)}
  val = prepared.val if len(prepared.val) else None
  if pixels and jax.default_backend() == "cpu" and loop.steps_per_call > 1:
    # XLA:CPU runs convolutions inside a device-side loop many times slower
    # than in a plain jitted step (reports/benchmark_emd_cnn_step.md).
    logging.info("emd_cnn: CNNs on CPU train one step per call (steps_per_call=1)")
    loop = dataclasses.replace(loop, steps_per_call=1)
  result = train.train_stage(_stage(config, model, val), params, train_data, workdir=workdir,
                             seed=seed * 1000 + 1, mesh=mesh, loop=loop)
  test = evaluate(config, model, result.params, prepared.test)
  out = results.write_results(
      workdir, method=method, dataset=dataset.name, seed=seed, metrics=test["metrics"],
      wall_s=time.time() - start,
      extra={"config": dataclasses.asdict(config), "roc_auc": test["roc_auc"],
             "stages": {"emd_cnn": {"steps": result.steps, "best_val_avg_map": result.best_score,
                                    "wall_s": result.wall_s,
                                    "resumed_from": result.resumed_from}},
             "num_train": len(prepared.train), "num_val": len(prepared.val),
             "num_test": len(prepared.test)})
  np.save(os.path.join(workdir, "test_distances.npy"), test["distances"])
  logging.info("%s on %s (seed %d): MAP i2t %.4f t2i %.4f avg %.4f, ROC AUC %.4f in %.0fs",
               method, dataset.name, seed, out["map"]["i2t"], out["map"]["t2i"],
               out["map"]["avg"], test["roc_auc"], out["wall_s"])
  return out
