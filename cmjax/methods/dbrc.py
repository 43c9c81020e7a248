"""DBRC: deep binary reconstruction for cross-modal hashing (Hu, Nie, Li 2019).

Unsupervised: each modality goes through a dense layer (`hidden`, batch norm,
ReLU, dropout); the two are concatenated and a dense layer gives K
pre-activations z, and the hashing layer gives h = adaptive_tanh(z) in (-1, 1)^K.
Two decoders reconstruct both modalities from h (mean squared error): binary
reconstruction keeps the intra- and inter-modal structure in the code. The
code of an item is sign(h); a query of one modality is encoded with the other
modality zeroed, and training zeroes one modality of an example with
probability `modality_dropout` (each one half of that) so that one-modality
codes are trained for.

Adaptive tanh (`hashing_layer`), the paper's device against tiny gradients
while the outputs become binary:
- `plain`: tanh(z) (the ablation; codes are its signs);
- `linear`: tanh(alpha * z), a learned scale alpha > 0 per bit;
- `nonlinear`: tanh(alpha * z + gamma * z^3), learned alpha, gamma > 0 per bit
  (an odd, increasing scaling function).
A penalty `alpha_penalty * mean(1 / alpha^2)` drives alpha up so that tanh
approaches sign. `supervised=True` adds a label classifier on h (a variant).

The hashing protocol (database = the training items, queries = the test items;
`cmjax.runner` evaluates it through `Fitted.codes`) and the test-vs-test MAP of
every method are both reported.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import configs, evaluation, hashing, optim, preprocess, runner, sampling, train
from cmjax import data as data_lib
from cmjax.methods import registry

__all__ = ["AdaptiveTanh", "DBRCConfig", "DBRCNet", "fit"]


@dataclasses.dataclass(frozen=True)
class DBRCConfig:
  """Every setting of a DBRC run; presets in `cmjax/configs/dbrc.py`.

  Attributes:
    bits: code length K.
    hashing_layer: plain tanh, linear or nonlinear adaptive tanh.
    alpha_penalty: weight of mean(1 / alpha^2), which drives the scales up.
    hidden: width of each modality's dense layer (batch norm, ReLU, dropout).
    dropout: dropout after each modality's layer.
    decoder_hidden: hidden width of the two decoders.
    modality_dropout: probability that a training example has one modality
      zeroed (image or text, equally likely).
    balance_modalities: reconstruction error as the mean over each modality's
      dimensions (each modality weighs the same) instead of the sum (a
      modality weighs by its dimension).
    supervised: add a label classifier on the code (a variant; the paper's
      method is unsupervised).
    label_weight: weight of the classifier's cross entropy (supervised only).
    optimizer: rmsprop (as a public implementation) or adam.
    learning_rate: learning rate.
    weight_decay: weight decay (an L2 term for rmsprop).
    batch_size: items per step.
    steps: training steps.
    input_transform: transform of both modalities' features, fitted on train.
    validation_fraction: share of train carved out (stratified) to select the
      parameters by validation MAP of the sign codes; 0 disables.
    eval_every: steps between validation evaluations.
    patience: stop after this many evaluations without improvement (0: never).
  """

  bits: int = 64
  hashing_layer: Literal["plain", "linear", "nonlinear"] = "linear"
  alpha_penalty: float = 1e-3
  hidden: int = 512
  dropout: float = 0.2
  decoder_hidden: int = 512
  modality_dropout: float = 0.5
  balance_modalities: bool = False
  supervised: bool = False
  label_weight: float = 1.0
  optimizer: Literal["rmsprop", "adam"] = "rmsprop"
  learning_rate: float = 1e-3
  weight_decay: float = 0.0
  batch_size: int = 128
  steps: int = 3000
  input_transform: preprocess.InputTransform = "sqrt_standardize"
  validation_fraction: float = 0.15
  eval_every: int = 250
  patience: int = 4

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(self, "bits", "hidden", "decoder_hidden", "learning_rate",
                           "batch_size", "steps", "eval_every")
    configs.check_non_negative(self, "alpha_penalty", "label_weight", "weight_decay",
                               "patience")
    configs.check_fraction(self, "dropout", "modality_dropout", "validation_fraction")
    configs.check_batch_size(self, "batch_size")


class AdaptiveTanh(nn.Module):
  """`[B, K] -> ([B, K] in (-1, 1), penalty)`: tanh of a learned per-bit scaling."""

  kind: Literal["plain", "linear", "nonlinear"]

  @nn.compact
  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.kind == "plain":
      return jnp.tanh(z), jnp.zeros(())
    k = z.shape[-1]
    # softplus(0.5413) = 1: the scales start at 1 (plain tanh).
    alpha = nn.softplus(self.param("alpha", nn.initializers.constant(0.5413), (k,)))
    scaled = alpha * z
    if self.kind == "nonlinear":
      gamma = nn.softplus(self.param("gamma", nn.initializers.constant(-3.0), (k,)))
      scaled = scaled + gamma * z**3
    return jnp.tanh(scaled), jnp.mean(1.0 / alpha**2)


class DBRCNet(nn.Module):
  """Both modalities -> K-bit hashing layer -> reconstructions of both modalities."""

  config: DBRCConfig
  image_dim: int
  text_dim: int
  num_classes: int

  def _modality(self, x, name, train):
    x = nn.Dense(self.config.hidden, name=f"{name}_dense")(x)
    x = nn.BatchNorm(use_running_average=not train, name=f"{name}_norm")(x)
    return nn.Dropout(self.config.dropout, deterministic=not train)(nn.relu(x))

  @nn.compact
  def __call__(self, x: jax.Array, z: jax.Array, train: bool = False):
    """`[B, d_image], [B, d_text] -> (h [B, K], penalty, x_hat, z_hat, class logits)`."""
    joint = jnp.concatenate([self._modality(x, "image", train),
                             self._modality(z, "text", train)], -1)
    h, penalty = AdaptiveTanh(self.config.hashing_layer)(nn.Dense(self.config.bits)(joint))
    decode = lambda out, name: nn.Dense(out, name=f"{name}_out")(
        nn.relu(nn.Dense(self.config.decoder_hidden, name=f"{name}_up")(h)))
    logits = nn.Dense(self.num_classes, name="classifier")(h)
    return h, penalty, decode(self.image_dim, "image"), decode(self.text_dim, "text"), logits


def _stage(config: DBRCConfig, model: DBRCNet, eval_fn) -> train.Stage:
  def loss_fn(params, context, batch, rng):
    x, z = batch["image"], batch["text"]
    drop_rng, mode_rng, dropout_rng = jax.random.split(rng, 3)
    dropped = jax.random.bernoulli(drop_rng, config.modality_dropout, (x.shape[0], 1))
    image_only = jax.random.bernoulli(mode_rng, 0.5, (x.shape[0], 1))
    keep_x = ~(dropped & ~image_only)  # Dropped text when image_only, else dropped image.
    keep_z = ~(dropped & image_only)
    (h, penalty, x_hat, z_hat, logits), updated = model.apply(
        params, x * keep_x, z * keep_z, True, rngs={"dropout": dropout_rng},
        mutable=["batch_stats"])
    error = jnp.mean if config.balance_modalities else jnp.sum
    reconstruction = (jnp.mean(error((x - x_hat) ** 2, -1))
                      + jnp.mean(error((z - z_hat) ** 2, -1)))
    loss = reconstruction + config.alpha_penalty * penalty
    if config.supervised:
      labels = batch["labels"]
      target = (jax.nn.one_hot(labels, logits.shape[-1]) if labels.ndim == 1
                else labels.astype(jnp.float32))
      target = target / jnp.maximum(jnp.sum(target, -1, keepdims=True), 1.0)
      loss = loss + config.label_weight * jnp.mean(optax.softmax_cross_entropy(logits, target))
    return loss, {"reconstruction": reconstruction, "alpha_penalty": penalty,
                  "binariness": jnp.mean(jnp.abs(h)), train.STATE_KEY: updated}

  return train.Stage(
      name="dbrc", loss_fn=loss_fn,
      sample_fn=lambda rng, data: sampling.sample_rows(rng, data, config.batch_size),
      optimizer=optim.make_optimizer(config.optimizer, config.learning_rate,
                                     config.weight_decay),
      num_steps=config.steps, eval_fn=eval_fn, eval_every=config.eval_every,
      select_metric="avg" if eval_fn else None, patience=config.patience)


@functools.partial(jax.jit, static_argnames=("model",))
def _codes(model: DBRCNet, params, x: jax.Array, z: jax.Array):
  """Sign codes of images (text zeroed) and texts (image zeroed), `[n, K]` +-1."""
  image_h = model.apply(params, x, jnp.zeros_like(z))[0]
  text_h = model.apply(params, jnp.zeros_like(x), z)[0]
  sign = lambda h: jnp.where(h >= 0, 1.0, -1.0)
  return sign(image_h), sign(text_h)


def fit(config: DBRCConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  """Trains the network by reconstruction (unsupervised unless `supervised`)."""
  tr = prepared.train
  num_classes = context.dataset.num_classes
  model = DBRCNet(config, tr.image.shape[1], tr.text.shape[1], num_classes)
  params = model.init(jax.random.key(context.seed), jnp.asarray(tr.image[:2]),
                      jnp.asarray(tr.text[:2]))
  data = {"image": jnp.asarray(tr.image), "text": jnp.asarray(tr.text),
          "labels": jnp.asarray(tr.labels)}
  val = prepared.val

  def validation_map(p):
    image, text = (np.asarray(c) for c in _codes(model, p, jnp.asarray(val.image),
                                                 jnp.asarray(val.text)))
    return evaluation.cross_modal_map(image @ text.T, val.labels, val.labels)

  eval_fn = validation_map if len(val) else None
  result = context.train(_stage(config, model, eval_fn), params, data, context.seed * 1000 + 1)

  def codes(raw: data_lib.Split) -> tuple[np.ndarray, np.ndarray]:
    split = prepared.transform(raw)
    return tuple(np.asarray(c) for c in _codes(model, result.params, jnp.asarray(split.image),
                                                jnp.asarray(split.text)))

  alpha = result.params["params"].get("AdaptiveTanh_0", {}).get("alpha")
  extras = {} if alpha is None else {"mean_alpha": float(np.mean(np.logaddexp(0, alpha)))}
  return runner.Fitted(similarity=hashing.codes_similarity(codes), codes=codes,
                       stages={"dbrc": runner.stage_facts(result)}, extras=extras)


registry.register(registry.MethodSpec(
    name="dbrc",
    description="DBRC (Hu, Nie, Li 2019): deep binary reconstruction hashing with the "
                "adaptive tanh hashing layer.",
    config_class=DBRCConfig,
    config_module="cmjax.configs.dbrc",
    fit=fit,
    hashing=True,
    # DJSRH's re-run (ICCV 2019), Wikipedia, other image features; see ANCHORS.md.
    published_hashing={"wikipedia": {16: (0.253, 0.574), 32: (0.265, 0.588),
                                     64: (0.269, 0.598), 128: (0.288, 0.599)}},
))
