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

Choices the paper's abstract leaves open are `EMDCNNConfig` fields
(`--config.<field>` of `experiments/emd_cnn.py`; presets in
`cmjax/configs/emd_cnn.py`):

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

Training samples `training.batch_size` documents and scores all batch_size^2
image/text pairs in the batch (one shared-cost Sinkhorn call).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cmjax import data as data_lib
from cmjax import (configs, devices, evaluation, optim, ot, preprocess, runner, sampling,
                   similarity, sources, train)
from cmjax.configs.emd_cnn import EMDCNNConfig
from cmjax.methods import registry
from cmjax.models import MLP, ImageCNN, TextCNN
from cmjax.pretrained import efficientnet

__all__ = [
    "EMDCNN",
    "EMDCNNConfig",
    "batch_distances",
    "build_model",
    "distance_matrix",
    "fit",
    "pair_losses",
    "training_stage",
]


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
  """The EMD-CNN of a dataset: CNNs on pixels/characters, else feature MLPs (on
  the image side after the fine-tuned EfficientNet top, with `finetune_blocks`)."""
  m, n = config.bins
  dtype = jnp.dtype(config.tower_dtype)
  if pixels:
    image_net = ImageCNN(m, config.image_channels, config.dropout, dtype)
    text_net = TextCNN(n, vocabulary_size, config.char_embedding, config.text_widths,
                       config.text_filters, config.dropout, dtype)
  else:
    # Dropout acts on the input of every layer after the first: here, the hidden layers.
    mlp = lambda out: MLP(tuple(config.hidden) + (out,), config.activation, "none",
                          config.dropout, dtype)
    image_net, text_net = mlp(m), mlp(n)
    if config.finetune_blocks:
      image_net = efficientnet.FineTunedTop(_start_block(config), image_net, dtype)
  return EMDCNN(image_net, text_net, config)


def _start_block(config: EMDCNNConfig) -> int:
  """The first fine-tuned EfficientNet-Lite0 block."""
  return efficientnet.NUM_BLOCKS - config.finetune_blocks


def _optimizer(config: EMDCNNConfig):
  """AdamW; the fine-tuned pretrained layers at `finetune_learning_rate_scale`."""
  optimizer = optim.make_optimizer("adam", config.training.learning_rate,
                                   config.training.weight_decay)
  if not config.finetune_blocks:
    return optimizer
  return optim.scale_updates_under(optimizer, "efficientnet",
                                   config.finetune_learning_rate_scale)


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
    return similarity.cosine_distance(p, q)
  if kind == "euclidean":
    return similarity.euclidean_distance(p, q)
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
                    on_nonconvergence: Literal["raise", "warn"] = "warn") -> jax.Array:
  """`[Q, m]` x `[N, n]` -> `[Q, N]` distances for retrieval (EMD to convergence)."""
  if config.distance == "emd":
    return ot.pairwise_emd(p, q, cost, _solver_config(config, False), solver="shared_cost",
                           on_nonconvergence=on_nonconvergence)
  return _plain_distances(config.distance, p, q)


# ---------------------------------------------------------------------------
# Training and evaluation.
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model", "modality"))
def _histogram_block(model: EMDCNN, params, inputs: jax.Array, modality: str) -> jax.Array:
  method = EMDCNN.image_histogram if modality == "image" else EMDCNN.text_histogram
  return model.apply(params, inputs, method=method)


def encoder(model: EMDCNN, params, modality: str, block: int = 256):
  """Inputs of `modality` `[N, ...]` -> their `[N, bins]` histograms, in blocks."""
  return lambda inputs: runner.in_blocks(
      lambda x: _histogram_block(model, params, x, modality), inputs, block)


def histograms(model: EMDCNN, params, image: np.ndarray, text: np.ndarray):
  """All `[N, m]` image and `[N, n]` text histograms and the `[m, n]` cost."""
  return (encoder(model, params, "image")(image), encoder(model, params, "text")(text),
          model.apply(params, method=EMDCNN.cost))


def model_functions(config: EMDCNNConfig, model: EMDCNN) -> runner.Model:
  """The model as pure functions of its variables: histograms of each modality,
  scored by minus their distance under the learned ground cost."""
  return runner.Model(
      encode_image=lambda v, x: model.apply(v, x, method=EMDCNN.image_histogram),
      encode_text=lambda v, z: model.apply(v, z, method=EMDCNN.text_histogram),
      score=lambda v, p, q: -distance_matrix(config, p, q, model.apply(v, method=EMDCNN.cost)))


def training_stage(config: EMDCNNConfig, model: EMDCNN, val: data_lib.Split | None,
                   frozen: Any = None) -> train.Stage:
  """The joint training stage of both networks and the ground cost.

  The loss's context holds the variable collections that are not trained
  (`frozen`: the pretrained batch-norm statistics), merged into the parameters.
  """
  def sample_fn(rng, data):
    return sampling.sample_rows(rng, data, config.training.batch_size)

  def loss_fn(params, context, batch, rng):
    p, q, cost = model.apply({**params, **context}, batch["image"], batch["text"], True,
                             rngs={"dropout": rng})
    distances, converged = batch_distances(config, p, q, cost)
    relevant = evaluation.relevance(batch["labels"], batch["labels"])
    loss = pair_losses(distances, relevant, config.margin, config.loss)
    gap = (jnp.sum(distances * ~relevant) / jnp.maximum(jnp.sum(~relevant), 1)
           - jnp.sum(distances * relevant) / jnp.maximum(jnp.sum(relevant), 1))
    return loss, {"sinkhorn_converged": converged, "distance_gap": gap}

  validation = None
  if val is not None:  # The stage's parameters, with the frozen collections merged in.
    functions = model_functions(config, model)
    merged = lambda fn: lambda params, *args: fn({**params, **(frozen or {})}, *args)
    validation = runner.Validation(
        runner.Model(merged(functions.encode_image), merged(functions.encode_text),
                     merged(functions.score)), val.image, val.text, val.labels)

  return train.Stage(
      name="emd_cnn", loss_fn=loss_fn, sample_fn=sample_fn, optimizer=_optimizer(config),
      num_steps=config.steps if config.encoder == "network" or config.ground_cost != "fixed"
      else 0,
      validation=validation, eval_every=config.training.eval_every,
      patience=config.training.patience)


def view(config: EMDCNNConfig, dataset: str) -> data_lib.ViewOptions:
  """Pixels and characters where the dataset has them (web_news), else features;
  with `finetune_blocks`, EfficientNet maps and TF-IDF features of the raw data."""
  raw = dataset in data_lib.VIEWS["pixels_chars"]
  if config.finetune_blocks:
    if not raw:
      raise configs.ConfigError(f"finetune_blocks={config.finetune_blocks} needs raw images; "
                                f"dataset {dataset!r} is released as features")
    return data_lib.FeaturesOptions(image_features="efficientnet",
                                    efficientnet_block=_start_block(config))
  if config.encoder == "network" and raw:
    return config.pixels_chars
  return data_lib.FeaturesOptions()


def prepare(config: EMDCNNConfig, dataset: data_lib.Dataset, seed: int) -> preprocess.Prepared:
  """Train/validation/test; feature vectors get `prepare.input_transform` (not pixels, ids
  or EfficientNet maps)."""
  pixels = isinstance(dataset.view, data_lib.PixelsChars)
  transform = config.prepare.input_transform
  if config.finetune_blocks:
    if dataset.train.image.ndim != 4:
      raise data_lib.DataError(f"finetune_blocks needs EfficientNet maps [n, h, w, c] as "
                               f"images, got {dataset.train.image.shape[1:]}")
    return preprocess.prepare(dataset, "none", config.prepare.validation_fraction, seed,
                              text_transform=transform)
  if pixels or config.encoder == "identity":
    transform = "none"
  if config.encoder == "identity":
    if pixels:
      raise configs.ConfigError("encoder='identity' needs histogram features, not pixels")
    if np.any(dataset.train.image < 0) or np.any(dataset.train.text < 0):
      raise data_lib.DataError("encoder='identity' needs non-negative (histogram) features")
    sizes = (dataset.train.image.shape[1], dataset.train.text.shape[1])
    if config.bins != sizes:
      raise configs.ConfigError(f"encoder='identity' compares the input histograms themselves: set "
                       f"--config.image_bins={sizes[0]} --config.text_bins={sizes[1]}")
  return preprocess.prepare(dataset, transform, config.prepare.validation_fraction, seed)


def train_model(config: EMDCNNConfig, prepared: preprocess.Prepared,
                context: runner.FitContext) -> tuple[EMDCNN, Any, train.StageResult]:
  """Trains EMD-CNN (or a control) on `prepared.train`: `(model, params, stage result)`.

  The data holds feature vectors, or pixels `[n, H, W, 3]` and character ids
  `[n, L]` (the `pixels_chars` view). `histograms(model, params, ...)` gives
  the learned histograms and ground cost.
  """
  pixels = isinstance(prepared.view, data_lib.PixelsChars)
  vocabulary_size = prepared.view.vocabulary_size if pixels else None
  model = build_model(config, pixels, vocabulary_size)
  variables = model.init(jax.random.key(context.seed), jnp.asarray(prepared.train.image[:1]),
                         jnp.asarray(prepared.train.text[:1]))
  if config.finetune_blocks:
    variables = efficientnet.pretrained_top(variables, ("image_net",), _start_block(config))
  params = {k: v for k, v in variables.items() if k == "params"}  # Empty without networks.
  frozen = {k: v for k, v in variables.items() if k != "params"}
  rows = {"image": prepared.train.image, "text": prepared.train.text,
          "labels": prepared.train.labels}
  val = prepared.val if len(prepared.val) else None
  stage = dataclasses.replace(training_stage(config, model, val, frozen),
                              loops_convolutions=pixels or config.finetune_blocks > 0)
  seed = train.stage_seed(context.seed, 1)
  if config.stream_inputs:  # The rows stay on the host; batches stream to the devices.
    stage = dataclasses.replace(stage, sample_fn=None, source=sources.HostSource(
        rows, config.training.batch_size, seed=seed))
    train_data = {}
  else:
    train_data = devices.put(rows)
  result = context.train(stage, params, train_data, seed=seed, context=frozen)
  return model, {**result.params, **frozen}, result


def fit(config: EMDCNNConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  """Trains EMD-CNN (or a control) on `prepared.train`; similarity = -distance."""
  model, params, result = train_model(config, prepared, context)
  cost = model.apply(params, method=EMDCNN.cost)
  return runner.Fitted(encode_image=encoder(model, params, "image"),
                       encode_text=encoder(model, params, "text"),
                       score=lambda p, q: -distance_matrix(config, p, q, cost),
                       stages={"emd_cnn": runner.stage_facts(result)},
                       parts={"ground_cost": cost})


for _name, _distance, _description in (
    ("emd_cnn", "emd", "EMD-CNN (Zuo et al. 2020): softmax histograms of different sizes "
     "compared by a learned-cost differentiable EMD."),
    ("emd_cnn_cosine", "cosine", "EMD-CNN control row: the same networks compared by cosine."),
    ("emd_cnn_euclidean", "euclidean", "EMD-CNN control row: the same networks compared by "
     "Euclidean distance."),
):
  registry.register(registry.MethodSpec(
      name=_name, description=_description, config_class=EMDCNNConfig,
      config_module="cmjax.configs.emd_cnn", fit=fit, prepare=prepare, view=view,
      fixed={"distance": _distance}))
