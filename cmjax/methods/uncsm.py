"""UNCSM: Unified Network for Cross-media Similarity Metric (Qi, Huang, Peng 2017).

Stages, each run by the shared loop (`cmjax.train.train_stage`):

0. optional DBN preprocessing (paper sec. 4.4): per modality a two-layer DBN
   (Gaussian RBM for images, replicated softmax for text, then a binary RBM),
   trained with CD-1, then the DBN unrolled into a softmax classifier and
   fine-tuned with cross entropy; its top hidden layer is the new input.
1. `pretrain`: the two pathways f_i, f_t (1024 -> 512 -> 256) with the
   contrastive loss (eq. 1, margin lambda) on relevant/irrelevant pairs.
2. `finetune`: the double triplet loss (eq. 2, 3; margins alpha, beta) with
   online triplet sampling (I+, T+, T-) and (T+, I+, I-). Each loss branch is
   a 256-unit sigmoid layer on top of the pathways, applied to both the anchor
   and the candidates of its triplets; gradients of both branches add on the
   pathways. The shared representation is the pathway output.
3. `metric`: the metric network on [f_i(x), f_t(z)]: three 512-unit ReLU
   layers and a 2-way softmax, cross entropy (eq. 4) on randomly sampled
   relevant/irrelevant pairs (1:1) of the frozen shared representation; the
   similarity is p_hat (eq. 5).

Ablations (paper Tables 5, 6 and Fig. 5): `similarity="cosine"` ranks by the
cosine of the shared representations instead of the metric network;
`pretrain=False` skips stage 1; the three margins are config fields.

Choices the paper leaves open are `UNCSMConfig` fields (`--config.<field>` of
`experiments/uncsm.py`): batch size, activations, input transform, optimizer
details, validation-based model selection. Presets: `cmjax/configs/uncsm.py`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import data as data_lib
from cmjax import dbn, optim, preprocess, runner, sampling, similarity, train
from cmjax.configs.uncsm import UNCSMConfig
from cmjax.methods import registry
from cmjax.models import MLP

__all__ = [
    "MetricNet",
    "TwoPathway",
    "UNCSMConfig",
    "contrastive_loss",
    "finetune_stage",
    "fit",
    "metric_loss",
    "pathway_model",
    "pretrain_stage",
    "triplet_loss",
]




class TwoPathway(nn.Module):
  """Image and text pathways plus the two sigmoid triplet branches."""

  hidden: Sequence[int]
  activation: str
  output_activation: str
  dropout: float
  branch_size: int
  dtype: Any = jnp.float32  # The pathways' compute dtype (outputs stay float32).

  def setup(self):
    path = functools.partial(
        MLP, self.hidden, self.activation, self.output_activation, self.dropout, self.dtype
    )
    self.image_path, self.text_path = path(), path()
    self.image_branch = nn.Dense(self.branch_size)
    self.text_branch = nn.Dense(self.branch_size)

  def encode_image(self, x: jax.Array, train: bool = False) -> jax.Array:
    """`[..., d_image] -> [..., hidden[-1]]` shared representation f_i."""
    return self.image_path(x, train)

  def encode_text(self, z: jax.Array, train: bool = False) -> jax.Array:
    """`[..., d_text] -> [..., hidden[-1]]` shared representation f_t."""
    return self.text_path(z, train)

  def image_triplet_branch(self, f: jax.Array) -> jax.Array:
    """Branch of the image-anchored triplets: `[..., h] -> [..., branch_size]`."""
    return nn.sigmoid(self.image_branch(f))

  def text_triplet_branch(self, f: jax.Array) -> jax.Array:
    """Branch of the text-anchored triplets: `[..., h] -> [..., branch_size]`."""
    return nn.sigmoid(self.text_branch(f))

  def __call__(self, x, z, train: bool = False):
    fi, ft = self.encode_image(x, train), self.encode_text(z, train)
    return fi, ft, self.image_triplet_branch(fi), self.text_triplet_branch(ft)


class MetricNet(nn.Module):
  """`(f_i [..., h], f_t [..., h]) -> [..., 2]` logits of (irrelevant, relevant).

  The first layer is a dense layer on the concatenation [f_i, f_t], written as
  two dense maps added, so that broadcasting `[Q, 1, h]` against `[1, N, h]`
  scores all Q x N pairs without materialising their concatenations.
  """

  hidden: Sequence[int] = (512, 512, 512)

  @nn.compact
  def __call__(self, fi: jax.Array, ft: jax.Array) -> jax.Array:
    h = nn.Dense(self.hidden[0], name="image_in")(fi)
    h = nn.relu(h + nn.Dense(self.hidden[0], use_bias=False, name="text_in")(ft))
    for width in self.hidden[1:]:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(2)(h)


# ---------------------------------------------------------------------------
# Losses (pure functions of arrays).
# ---------------------------------------------------------------------------


def _squared_distance(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.sum((a - b) ** 2, axis=-1)


def contrastive_loss(fi: jax.Array, ft: jax.Array, relevant: jax.Array, margin: float) -> jax.Array:
  """Eq. 1 averaged over pairs.

  Args:
    fi: `[B, h]` image representations.
    ft: `[B, h]` text representations.
    relevant: `[B]` 1 for same-label pairs, 0 otherwise.
    margin: lambda.
  """
  d2 = _squared_distance(fi, ft)
  push = jax.nn.relu(margin - jnp.sqrt(d2 + 1e-9)) ** 2
  return jnp.mean(relevant * d2 + (1 - relevant) * push)


def triplet_loss(
    anchor: jax.Array,
    positive: jax.Array,
    negatives: jax.Array,
    irrelevant: jax.Array,
    margin: float,
    mining: Literal["random", "hardest"] = "random",
) -> jax.Array:
  """Eq. 2 (or 3) averaged over anchors, a mean over rows (`Stage.row_mean_loss`); an
  anchor with no irrelevant candidate adds 0 (`sampling.sample_negatives`: with 10
  classes and 8 candidates, about once in 10^7 anchors).

  Args:
    anchor: `[B, h]` anchor representations (I+ for eq. 2).
    positive: `[B, h]` relevant other-modality items (T+).
    negatives: `[B, K, h]` candidate other-modality items.
    irrelevant: `[B, K]` which candidates are irrelevant to the anchor.
    margin: alpha (eq. 2) or beta (eq. 3).
    mining: `random` uses the first irrelevant candidate (random sampling);
      `hardest` the irrelevant candidate closest to the anchor (online hard
      negative mining on the current representations).
  """
  d_neg = _squared_distance(anchor[:, None, :], negatives)
  if mining == "hardest":
    choice = jnp.argmin(jnp.where(irrelevant, d_neg, jnp.inf), axis=1)
  else:
    choice = jnp.argmax(irrelevant, axis=1)
  d_neg = jnp.take_along_axis(d_neg, choice[:, None], 1)[:, 0]
  valid = jnp.any(irrelevant, axis=1).astype(anchor.dtype)
  hinge = jax.nn.relu(_squared_distance(anchor, positive) - d_neg + margin)
  return jnp.mean(valid * hinge)


def metric_loss(logits: jax.Array, relevant: jax.Array) -> jax.Array:
  """Eq. 4: cross entropy of `[B, 2]` logits against `[B]` 0/1 relevance."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, relevant.astype(jnp.int32)))


# ---------------------------------------------------------------------------
# Scoring.
# ---------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("net",))
def _metric_block(net: MetricNet, params, fi_block: jax.Array, ft: jax.Array) -> jax.Array:
  logits = net.apply(params, fi_block[:, None, :], ft[None, :, :])
  return jax.nn.softmax(logits, axis=-1)[..., 1]


def metric_scores(net: MetricNet, params, fi: jax.Array, ft: jax.Array,
                  pairs_per_step: int = 16384, item_tile: int = 4096) -> jax.Array:
  """`[Q, h] x [N, h] -> [Q, N]` p_hat of every image/text pair (eq. 5), on device in
  steps of about `pairs_per_step` pairs: blocks of queries against tiles of at
  most `item_tile` items (a block scorer, `cmjax.runner.ScoreFn`). The network's
  activations of one step, `pairs_per_step x width` floats, are the memory it
  needs, whatever Q and N; against few items (the text-to-image direction scores
  all images against a block of texts) a step takes more queries, so that every
  step is as large a product."""
  q, n = fi.shape[0], ft.shape[0]
  tiles = -(-n // item_tile)
  size = -(-n // tiles)  # Equal tiles, the last item repeated to fill the last one.
  num_blocks = -(-q // max(1, pairs_per_step // size))
  block = -(-q // num_blocks)  # Equal blocks: at most num_blocks - 1 padding rows.
  pad = num_blocks * block - q
  fi = jnp.concatenate([fi, jnp.repeat(fi[-1:], pad, axis=0)]) if pad else fi
  score_block = lambda f: _metric_block(net, params, f, ft)
  if tiles > 1:
    ft_tiles = jnp.concatenate([ft, jnp.repeat(ft[-1:], tiles * size - n, axis=0)])
    ft_tiles = ft_tiles.reshape(tiles, size, ft.shape[1])
    score_block = lambda f: jnp.moveaxis(
        jax.lax.map(lambda t: _metric_block(net, params, f, t), ft_tiles), 0, 1
    ).reshape(f.shape[0], tiles * size)[:, :n]
  out = jax.lax.map(score_block, fi.reshape(num_blocks, block, fi.shape[1]))
  return out.reshape(num_blocks * block, n)[:q]


# ---------------------------------------------------------------------------
# Stages.
# ---------------------------------------------------------------------------


def pathway_model(config: UNCSMConfig) -> TwoPathway:
  """The two pathways and triplet branches of `config`."""
  return TwoPathway(config.hidden, config.activation, config.output_activation,
                    config.dropout, config.branch_size, jnp.dtype(config.tower_dtype))


@functools.partial(jax.jit, static_argnames=("model",))
def _encode(model: TwoPathway, params, x, z):
  return (model.apply(params, x, method=TwoPathway.encode_image),
          model.apply(params, z, method=TwoPathway.encode_text))


@functools.partial(jax.jit, static_argnames=("model", "modality"))
def _encode_one(model: TwoPathway, params, inputs, modality: str):
  """`[n, d]` inputs of one modality -> `[n, h]` shared representations."""
  method = TwoPathway.encode_image if modality == "image" else TwoPathway.encode_text
  return model.apply(params, inputs, method=method)


def pathway_functions(model: TwoPathway) -> runner.Model:
  """The pathways as pure functions of their parameters, compared by cosine (stages 1
  and 2 validate this; the `cosine` ablation ranks by it)."""
  return runner.Model(
      encode_image=lambda p, x: model.apply(p, x, method=TwoPathway.encode_image),
      encode_text=lambda p, z: model.apply(p, z, method=TwoPathway.encode_text),
      score=lambda p, fi, ft: similarity.cosine(fi, ft))


def metric_functions(net: MetricNet) -> runner.Model:
  """The metric network on fixed shared representations (stage 3 validates this)."""
  identity = lambda p, f: f
  return runner.Model(encode_image=identity, encode_text=identity,
                      score=functools.partial(metric_scores, net))


def _validation(model: runner.Model, val: dict | None) -> runner.Validation | None:
  return None if val is None else runner.Validation(model, val["image"], val["text"],
                                                     val["labels"])


def _selected_stage(config: UNCSMConfig, name: str, loss_fn, sample_fn, num_steps: int,
                    validation: runner.Validation | None) -> train.Stage:
  """A stage that keeps the parameters with the best validation avg MAP, if any; every
  UNCSM loss (eqs. 1-4) is a mean over the rows of its batch."""
  return train.Stage(
      name=name, loss_fn=loss_fn, sample_fn=sample_fn, optimizer=optim.make_optimizer(
          config.optimizer, config.training.learning_rate, config.training.weight_decay,
          config.momentum),
      num_steps=num_steps, validation=validation, eval_every=config.training.eval_every,
      patience=config.training.patience, row_mean_loss=True,
  )


def pretrain_stage(config: UNCSMConfig, model: TwoPathway, val) -> train.Stage:
  """Stage 1: the contrastive loss on sampled pairs; `val` (or None) for selection."""
  def sample_fn(rng, data):
    anchor, partner, relevant = sampling.sample_pairs(rng, config.training.batch_size,
                                                      data["index"])
    return {"image": data["image"][anchor], "text": data["text"][partner], "relevant": relevant}

  def loss_fn(params, context, batch, rng):
    rngs = {"dropout": rng}
    fi = model.apply(params, batch["image"], True, method=TwoPathway.encode_image, rngs=rngs)
    ft = model.apply(params, batch["text"], True, method=TwoPathway.encode_text, rngs=rngs)
    loss = contrastive_loss(fi, ft, batch["relevant"], config.contrastive_margin)
    return loss, {"positive_fraction": jnp.mean(batch["relevant"])}

  return _selected_stage(config, "pretrain", loss_fn, sample_fn, config.pretrain_steps,
                         _validation(pathway_functions(model), val))


def finetune_stage(config: UNCSMConfig, model: TwoPathway, val) -> train.Stage:
  """Stage 2: the double triplet loss with online sampling; `val` (or None) for selection."""
  k = config.negative_candidates if config.negatives == "hardest" else 8

  def sample_fn(rng, data):
    index = data["index"]
    keys = jax.random.split(rng, 5)
    b = config.training.batch_size
    image_anchor = jax.random.randint(keys[0], (b,), 0, index.labels.shape[0])
    text_anchor = jax.random.randint(keys[1], (b,), 0, index.labels.shape[0])
    text_pos = sampling.sample_positives(keys[2], index.labels[image_anchor], index)
    image_pos = sampling.sample_positives(keys[3], index.labels[text_anchor], index)
    neg_keys = jax.random.split(keys[4])
    text_neg, text_irr = sampling.sample_negatives(neg_keys[0], index.labels[image_anchor], index, k)
    image_neg, image_irr = sampling.sample_negatives(neg_keys[1], index.labels[text_anchor], index, k)
    if config.negatives == "random":  # Only the first irrelevant candidate is needed.
      pick = lambda c, irr: jnp.take_along_axis(c, jnp.argmax(irr, 1)[:, None], 1)
      text_neg, text_irr = pick(text_neg, text_irr), jnp.any(text_irr, 1, keepdims=True)
      image_neg, image_irr = pick(image_neg, image_irr), jnp.any(image_irr, 1, keepdims=True)
    return {
        "i_anchor": data["image"][image_anchor], "t_pos": data["text"][text_pos],
        "t_neg": data["text"][text_neg], "t_irr": text_irr,
        "t_anchor": data["text"][text_anchor], "i_pos": data["image"][image_pos],
        "i_neg": data["image"][image_neg], "i_irr": image_irr,
    }

  def loss_fn(params, context, batch, rng):
    rngs = {"dropout": rng}
    enc_i = lambda x: model.apply(params, x, True, method=TwoPathway.encode_image, rngs=rngs)
    enc_t = lambda z: model.apply(params, z, True, method=TwoPathway.encode_text, rngs=rngs)
    br_i = lambda f: model.apply(params, f, method=TwoPathway.image_triplet_branch)
    br_t = lambda f: model.apply(params, f, method=TwoPathway.text_triplet_branch)
    s_i = triplet_loss(
        br_i(enc_i(batch["i_anchor"])), br_i(enc_t(batch["t_pos"])),
        br_i(enc_t(batch["t_neg"])), batch["t_irr"], config.image_triplet_margin,
        config.negatives)
    s_t = triplet_loss(
        br_t(enc_t(batch["t_anchor"])), br_t(enc_i(batch["i_pos"])),
        br_t(enc_i(batch["i_neg"])), batch["i_irr"], config.text_triplet_margin,
        config.negatives)
    return s_i + s_t, {"image_triplet": s_i, "text_triplet": s_t}

  return _selected_stage(config, "finetune", loss_fn, sample_fn, config.finetune_steps,
                         _validation(pathway_functions(model), val))


def _metric_stage(config: UNCSMConfig, net: MetricNet, val) -> train.Stage:
  def sample_fn(rng, data):
    anchor, partner, relevant = sampling.sample_pairs(rng, config.metric_batch_size, data["index"])
    return {"fi": data["fi"][anchor], "ft": data["ft"][partner], "relevant": relevant}

  def loss_fn(params, context, batch, rng):
    logits = net.apply(params, batch["fi"], batch["ft"])
    accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["relevant"]).astype(jnp.float32))
    return metric_loss(logits, batch["relevant"]), {"accuracy": accuracy}

  return _selected_stage(config, "metric", loss_fn, sample_fn, config.metric_steps,
                         _validation(metric_functions(net), val))


# ---------------------------------------------------------------------------
# DBN preprocessing (optional stage 0).
# ---------------------------------------------------------------------------


def _dbn_encoder(config: UNCSMConfig, modality: str, train_x: np.ndarray, labels: np.ndarray,
                 num_classes: int, context: runner.FitContext, seed: int
                 ) -> Callable[[np.ndarray], np.ndarray]:
  """Trains a 2-layer DBN + softmax net on one modality; returns its top-layer encoder."""
  if modality == "image":
    kinds, sizes = ("gaussian", "binary"), config.dbn_image_hidden
    visible = lambda x: x
  else:
    kinds, sizes = ("replicated_softmax", "binary"), config.dbn_text_hidden
    if np.any(train_x < 0):
      raise data_lib.DataError("the replicated softmax DBN layer needs non-negative text "
                       "features (counts, tf-idf or topic proportions)")
    visible = lambda x: config.dbn_doc_length * x / np.maximum(x.sum(1, keepdims=True), 1e-12)
  common = dict(train_fn=context.train, batch_size=config.training.batch_size)
  layers = dbn.train_dbn(visible(train_x), kinds, sizes, name=f"dbn_{modality}", seed=seed,
                         steps=config.dbn_steps, learning_rate=config.dbn_learning_rate,
                         **common)
  layers = dbn.train_softmax_head(layers, visible(train_x), labels, num_classes,
                                  name=f"softmax_{modality}", seed=seed + 20,
                                  steps=config.softmax_steps, **common)
  encode = jax.jit(lambda v: dbn.dbn_forward(layers, v))
  return lambda x: np.asarray(encode(jnp.asarray(visible(x))))


# ---------------------------------------------------------------------------
# The whole method.
# ---------------------------------------------------------------------------


def fit(config: UNCSMConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  """Trains UNCSM's stages on `prepared.train` (selection on `prepared.val`).

  Returns:
    the metric network's p_hat (or the cosine, `similarity="cosine"`) of the
    shared representations, and the cosine of the same representations as the
    `cosine` alternative (Table 5 on the same pathways).
  """
  seed, num_classes = context.seed, prepared.num_classes
  train_split, val_split = prepared.train, prepared.val
  use_val = len(val_split) > 0
  # Inputs of the pathways: the prepared features, or their DBN codes.
  image_in = text_in = lambda x: x
  if config.dbn:
    image_in = _dbn_encoder(config, "image", train_split.image, train_split.labels,
                            num_classes, context, train.stage_seed(seed, 100))
    # Replicated softmax models counts: `prepare` leaves the text features untransformed.
    text_in = _dbn_encoder(config, "text", train_split.text, train_split.labels,
                           num_classes, context, train.stage_seed(seed, 200))
  image_tr, text_tr = image_in(train_split.image), text_in(train_split.text)
  index = sampling.label_index(train_split.labels, num_classes)
  train_data = {"image": jnp.asarray(image_tr), "text": jnp.asarray(text_tr), "index": index}
  val = None
  if use_val:
    val = {"image": jnp.asarray(image_in(val_split.image)),
           "text": jnp.asarray(text_in(val_split.text)), "labels": val_split.labels}

  model = pathway_model(config)
  params = model.init(jax.random.key(seed), jnp.zeros((1, image_tr.shape[1])),
                      jnp.zeros((1, text_tr.shape[1])))
  stages = {}

  def train_stage(stage, params, data, stage_seed):
    result = context.train(stage, params, data, stage_seed)
    stages[stage.name] = runner.stage_facts(result)
    return result.params

  if config.pretrain:
    params = train_stage(pretrain_stage(config, model, val), params, train_data,
                         train.stage_seed(seed, 1))
  params = train_stage(finetune_stage(config, model, val), params, train_data, train.stage_seed(seed, 2))
  encode_image = lambda x: _encode_one(model, params, jnp.asarray(image_in(x)), "image")
  encode_text = lambda z: _encode_one(model, params, jnp.asarray(text_in(z)), "text")
  fitted = functools.partial(runner.Fitted, encode_image=encode_image, encode_text=encode_text,
                             stages=stages, alternatives={"cosine": similarity.cosine})
  if config.similarity == "cosine":
    return fitted(score=similarity.cosine)

  net = MetricNet(config.metric_hidden)
  fi, ft = _encode(model, params, train_data["image"], train_data["text"])
  net_params = net.init(jax.random.key(seed + 1), fi[:1], ft[:1])
  metric_val = None
  if use_val:
    metric_val = dict(zip(("image", "text"), _encode(model, params, val["image"], val["text"])),
                      labels=val_split.labels)
  net_params = train_stage(_metric_stage(config, net, metric_val), net_params,
                           {"fi": fi, "ft": ft, "index": index}, train.stage_seed(seed, 3))
  return fitted(score=functools.partial(metric_scores, net, net_params))


def prepare(config: UNCSMConfig, dataset: data_lib.Dataset, seed: int) -> preprocess.Prepared:
  """The config's validation split and input transform; with the DBN stage the
  texts stay untransformed (its replicated softmax layer models counts)."""
  return preprocess.prepare(dataset, config.prepare.input_transform,
                            config.prepare.validation_fraction, seed,
                            text_transform="none" if config.dbn else None)

registry.register(registry.MethodSpec(
    name="uncsm",
    description="UNCSM (Qi, Huang, Peng 2017): two pathways, contrastive pretraining, double "
                "triplet fine-tuning, a learned metric network.",
    config_class=UNCSMConfig,
    config_module="cmjax.configs.uncsm",
    fit=fit,
    prepare=prepare,
))
