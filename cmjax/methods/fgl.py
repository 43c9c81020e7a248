"""FGL: fine-grained label learning via a siamese network (Xu et al. 2019).

A text/image matching model in a common space, trained on relevant and
irrelevant (image, text) pairs, where each pair's weight says how hard it is:

1. `siamese` stage: a siamese text network g (shared weights for both texts of
   a pair) is trained on text pairs: cosine up for same-class texts, down to
   at most `siamese_margin` for different-class ones.
2. Fine-grained labels: for a pair (image I, text T), T_I is the text of I's
   own document and s = (1 + cos(g(T_I), g(T))) / 2 in [0, 1]. A relevant
   pair whose texts differ (low s) is a hard positive, an irrelevant pair whose
   texts agree (high s) a hard negative:
   weight+ = 1 + beta (1 - s), weight- = 1 + beta s (`labels="binary"`: all 1,
   the ablation).
3. `fgl` stage: image path (features -> dense `embed`) and text path (a
   Chebyshev graph-convolutional encoder on the word graph, or an MLP on
   feature vectors) give f_i, f_t; the pair score is a learned layer on their
   elementwise product, z = w . (f_i * f_t) + b, s = sigmoid(z). Every image/text
   pair of a batch is used: same class = positive, other class = negative.
   Losses (`loss`):
   - `pairwise`: weighted cross entropy, sum_+ w softplus(-z) / sum_+ w +
     sum_- w softplus(z) / sum_- w (the weighted pairwise similarity loss);
   - `distribution`: the group's base loss on weighted statistics of s,
     Var(s+) + Var(s-) + lambda max(0, m - (mean s+ - mean s-)).
   Retrieval ranks by z.

What the abstract leaves open is a documented `FGLConfig` field (presets in
`cmjax/configs/fgl.py`). On datasets without raw captions (wikipedia) the text
path, and the siamese network, read the feature vectors through MLPs.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cmjax import configs, evaluation, optim, preprocess, runner, sampling, similarity, train
from cmjax import data as data_lib
from cmjax.configs.fgl import FGLConfig
from cmjax.methods import registry
from cmjax.models import MLP, GraphTextEncoder

__all__ = ["FGLConfig", "FGLNet", "TextPath", "build_model", "fine_grained_weights", "fit",
           "matching_loss", "siamese_loss"]


class TextPath(nn.Module):
  """`[B, V]` graph signals (gcn) or `[B, d]` features (mlp) -> `[B, outputs]`."""

  kind: Literal["gcn", "mlp"]
  outputs: int
  hidden: Sequence[int] = ()
  filters: int = 4
  order: int = 3
  activation: str = "tanh"
  dropout: float = 0.0
  dtype: Any = jnp.float32  # Compute dtype (the output stays float32).

  @nn.compact
  def __call__(self, z: jax.Array, graph: Any, train: bool = False) -> jax.Array:
    if self.kind == "gcn":
      return GraphTextEncoder(self.filters, self.order, self.outputs, self.activation,
                              self.dropout, self.dtype)(z, graph, train)
    return MLP(tuple(self.hidden) + (self.outputs,), "relu", self.activation,
               self.dropout, self.dtype)(z, train)


class FGLNet(nn.Module):
  """Image and text paths to `embed` and the product-layer pair score."""

  text_path: TextPath
  image_hidden: Sequence[int]
  embed: int
  activation: str
  dropout: float
  dtype: Any = jnp.float32  # The image path's compute dtype (the output stays float32).

  def setup(self):
    self.image_path = MLP(tuple(self.image_hidden) + (self.embed,), "relu", self.activation,
                          self.dropout, self.dtype)
    self.score_weight = self.param("score_weight", nn.initializers.ones, (self.embed,))
    self.score_bias = self.param("score_bias", nn.initializers.zeros, ())

  def encode_image(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[B, d_image] -> [B, embed]`."""
    return self.image_path(x, train)

  def encode_text(self, z: jax.Array, graph: Any, train: bool = False) -> jax.Array:
    """`[B, V]` or `[B, d_text] -> [B, embed]`."""
    return self.text_path(z, graph, train)

  def logits(self, fi: jax.Array, ft: jax.Array) -> jax.Array:
    """`[Q, embed] x [N, embed] -> [Q, N]` z = w . (f_i * f_t) / sqrt(embed) + b of every
    pair (the product layer, written as one matrix product)."""
    return (fi * self.score_weight) @ ft.T / np.sqrt(self.embed) + self.score_bias

  def __call__(self, x, z, graph, train: bool = False):
    return self.logits(self.encode_image(x, train), self.encode_text(z, graph, train))


# ---------------------------------------------------------------------------
# Losses (pure functions of arrays).
# ---------------------------------------------------------------------------


def siamese_loss(cosine: jax.Array, relevant: jax.Array, margin: float) -> jax.Array:
  """`[B, B]` text-pair cosines: mean (1 - c)^2 over same-class pairs plus mean
  max(0, c - margin)^2 over different-class ones (the diagonal excluded)."""
  off_diagonal = 1.0 - jnp.eye(cosine.shape[0])
  pos, neg = relevant * off_diagonal, (1.0 - relevant) * off_diagonal
  mean = lambda x, w: jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)
  return mean((1.0 - cosine) ** 2, pos) + mean(jax.nn.relu(cosine - margin) ** 2, neg)


def fine_grained_weights(text_similarity: jax.Array, relevant: jax.Array,
                         beta: float) -> jax.Array:
  """`[B, B]` pair weights from s in [0, 1]: 1 + beta (1 - s) for relevant pairs
  (hard positives: their texts differ), 1 + beta s for irrelevant ones."""
  return jnp.where(relevant > 0, 1.0 + beta * (1.0 - text_similarity),
                   1.0 + beta * text_similarity)


def matching_loss(logits: jax.Array, relevant: jax.Array, weights: jax.Array,
                  config: FGLConfig) -> jax.Array:
  """The weighted pairwise or distribution loss of `[B, B]` pair logits."""
  pos, neg = weights * relevant, weights * (1.0 - relevant)
  mean = lambda x, w: jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1e-12)
  if config.loss == "pairwise":
    return mean(jax.nn.softplus(-logits), pos) + mean(jax.nn.softplus(logits), neg)
  s = jax.nn.sigmoid(logits)
  mu_pos, mu_neg = mean(s, pos), mean(s, neg)
  var = lambda mu, w: mean((s - mu) ** 2, w)
  return (var(mu_pos, pos) + var(mu_neg, neg)
          + config.distribution_lambda * jax.nn.relu(config.distribution_margin
                                                     - (mu_pos - mu_neg)))


def siamese_weights(siamese: TextPath, params, text: jax.Array, graph, relevant: jax.Array,
                    beta: float) -> jax.Array:
  """`[B, B]` fine-grained weights of the pairs of `[B, ...]` texts: s = (1 + cosine
  of their siamese embeddings) / 2 in `fine_grained_weights`."""
  g = siamese.apply(params, text, graph)
  return fine_grained_weights((1.0 + similarity.cosine(g, g)) / 2.0, relevant, beta)


# ---------------------------------------------------------------------------
# Stages.
# ---------------------------------------------------------------------------


def _text_kind(config: FGLConfig, view: data_lib.View) -> str:
  graph = isinstance(view, data_lib.WordsGraph)
  if config.text_encoder == "gcn" and not graph:
    raise configs.ConfigError("text_encoder='gcn' needs the words_graph view (raw captions)")
  return "gcn" if graph and config.text_encoder != "mlp" else "mlp"


def _text_path(config: FGLConfig, kind: str, outputs: int) -> TextPath:
  return TextPath(kind, outputs, config.text_hidden, config.gcn_filters, config.gcn_order,
                  config.activation, config.dropout, jnp.dtype(config.tower_dtype))


def build_model(config: FGLConfig, kind: str) -> FGLNet:
  """The matching network of `config` with a `kind` ("gcn" or "mlp") text path."""
  return FGLNet(_text_path(config, kind, config.embed), config.image_hidden, config.embed,
                config.activation, config.dropout, jnp.dtype(config.tower_dtype))


def _optimizer(config: FGLConfig):
  return optim.make_optimizer("adam", config.training.learning_rate, config.training.weight_decay)


def siamese_stage(config: FGLConfig, net: TextPath) -> train.Stage:
  """Stage 1: the siamese text network on the batch's text pairs."""

  def loss_fn(params, context, batch, rng):
    g = net.apply(params, batch["text"], context["graph"], True, rngs={"dropout": rng})
    relevant = evaluation.relevance(batch["labels"], batch["labels"]).astype(jnp.float32)
    return siamese_loss(similarity.cosine(g, g), relevant, config.siamese_margin), {}

  return train.Stage(name="siamese", loss_fn=loss_fn,
                     sample_fn=lambda rng, data: sampling.sample_rows(rng, data,
                                                                      config.training.batch_size),
                     optimizer=_optimizer(config), num_steps=config.siamese_steps)


def matching_stage(config: FGLConfig, model: FGLNet, siamese: TextPath,
                   validation: runner.Validation | None = None) -> train.Stage:
  """Stage 2: the matching model with fine-grained (or binary) pair weights."""

  def loss_fn(params, context, batch, rng):
    graph = context["graph"]
    logits = model.apply(params, batch["image"], batch["text"], graph, True,
                         rngs={"dropout": rng})
    relevant = evaluation.relevance(batch["labels"], batch["labels"]).astype(jnp.float32)
    weights = jnp.ones_like(logits)
    if config.labels == "fine_grained":  # T_I of row i is text i.
      weights = siamese_weights(siamese, context["siamese"], batch["text"], graph, relevant,
                                config.beta)
    loss = matching_loss(logits, relevant, weights, config)
    gap = (jnp.sum(logits * relevant) / jnp.sum(relevant)
           - jnp.sum(logits * (1 - relevant)) / jnp.maximum(jnp.sum(1 - relevant), 1.0))
    return loss, {"logit_gap": gap, "mean_weight": jnp.mean(weights)}

  return train.Stage(
      name="fgl", loss_fn=loss_fn,
      sample_fn=lambda rng, data: sampling.sample_rows(rng, data, config.training.batch_size),
      optimizer=_optimizer(config), num_steps=config.steps, validation=validation,
      eval_every=config.training.eval_every, patience=config.training.patience)


def matching_functions(model: FGLNet, graph) -> runner.Model:
  """The matching model as pure functions of its parameters: encoders and the
  product-layer logits z of every pair (`graph`: the word graph's device arrays)."""
  return runner.Model(
      encode_image=lambda p, x: model.apply(p, x, method=FGLNet.encode_image),
      encode_text=lambda p, z: model.apply(p, z, graph, method=FGLNet.encode_text),
      score=lambda p, fi, ft: model.apply(p, fi, ft, method=FGLNet.logits))


@functools.partial(jax.jit, static_argnames=("siamese", "beta"))
def _pair_weights(siamese: TextPath, params, text: jax.Array, labels: jax.Array, *, graph,
                  beta: float) -> jax.Array:
  """`[n, n]` fine-grained weights of the pairs of `[n, ...]` texts with `[n]` labels."""
  relevant = evaluation.relevance(labels, labels).astype(jnp.float32)
  return siamese_weights(siamese, params, text, graph, relevant, beta)


def view(config: FGLConfig, dataset: str) -> data_lib.ViewOptions:
  """The word graph where the dataset has raw captions (unless mlp), else features."""
  if config.text_encoder != "mlp" and dataset in data_lib.VIEWS["words_graph"]:
    return config.words_graph
  return data_lib.FeaturesOptions()


def prepare(config: FGLConfig, dataset: data_lib.Dataset, seed: int) -> preprocess.Prepared:
  """Feature vectors get `prepare.input_transform`; graph signals stay as they are."""
  graph = isinstance(dataset.view, data_lib.WordsGraph)
  return preprocess.prepare(dataset, config.prepare.input_transform,
                            config.prepare.validation_fraction, seed,
                            text_transform="none" if graph else None)


def fit(config: FGLConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  """Trains the siamese text network, then the matching model; ranks by z."""
  kind = _text_kind(config, prepared.view)
  graph = prepared.view.graph.arrays() if kind == "gcn" else None
  graph = jax.tree.map(jnp.asarray, graph)
  tr, seed = prepared.train, context.seed
  data = {"image": jnp.asarray(tr.image), "text": jnp.asarray(tr.text),
          "labels": jnp.asarray(tr.labels)}
  stages = {}
  siamese = _text_path(config, kind, config.siamese_dim)
  siamese_params = None
  if config.labels == "fine_grained":
    siamese_params = siamese.init(jax.random.key(seed + 7), data["text"][:1], graph)
    result = context.train(siamese_stage(config, siamese), siamese_params, data,
                           train.stage_seed(seed, 1), context={"graph": graph})
    siamese_params, stages["siamese"] = result.params, runner.stage_facts(result)

  model = build_model(config, kind)
  params = model.init(jax.random.key(seed), data["image"][:1], data["text"][:1], graph)
  val = prepared.val
  functions = matching_functions(model, graph)
  validation = runner.Validation(functions, val.image, val.text, val.labels) if len(val) else None
  result = context.train(matching_stage(config, model, siamese, validation), params, data,
                         train.stage_seed(seed, 2), context={"graph": graph, "siamese": siamese_params})
  stages["fgl"] = runner.stage_facts(result)

  parts = {}
  if siamese_params is not None:
    parts["pair_weights"] = functools.partial(_pair_weights, siamese, siamese_params,
                                              graph=graph, beta=config.beta)
  return functions.bind(result.params, stages=stages, extras={"text_encoder": kind},
                        parts=parts)

registry.register(registry.MethodSpec(
    name="fgl",
    description="FGL (Xu et al. 2019): fine-grained labels from a siamese text network weight "
                "a pairwise loss; graph-convolutional text encoder.",
    config_class=FGLConfig,
    config_module="cmjax.configs.fgl",
    fit=fit,
    prepare=prepare,
    view=view,
))
