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

The encoders map each modality to its +-1 codes and the block scorer is minus
the Hamming distance (`cmjax.hashing.codes_score`); the runner reports the
test-vs-test MAP of every method and, for hashing methods, the hashing protocol
(database = the training items, queries = the test items; `cmjax.hashing` on
packed codes).
"""

from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import hashing, optim, preprocess, runner, sampling, train
from cmjax.configs.dbrc import DBRCConfig
from cmjax.methods import registry

__all__ = ["AdaptiveTanh", "DBRCConfig", "DBRCNet", "fit"]


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


def _stage(config: DBRCConfig, model: DBRCNet,
           validation: runner.Validation | None) -> train.Stage:
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
      sample_fn=lambda rng, data: sampling.sample_rows(rng, data, config.training.batch_size),
      optimizer=optim.make_optimizer(config.optimizer, config.training.learning_rate,
                                     config.training.weight_decay),
      num_steps=config.steps, validation=validation, eval_every=config.training.eval_every,
      patience=config.training.patience)


def _codes(model: DBRCNet, params, inputs: jax.Array, modality: str) -> jax.Array:
  """`[n, d]` inputs of one modality (the other zeroed) -> `[n, K]` +-1 sign codes."""
  zeros = lambda dim: jnp.zeros((inputs.shape[0], dim), inputs.dtype)
  x, z = ((inputs, zeros(model.text_dim)) if modality == "image"
          else (zeros(model.image_dim), inputs))
  return jnp.where(model.apply(params, x, z)[0] >= 0, 1.0, -1.0)


def fit(config: DBRCConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  """Trains the network by reconstruction (unsupervised unless `supervised`)."""
  tr = prepared.train
  num_classes = prepared.num_classes
  model = DBRCNet(config, tr.image.shape[1], tr.text.shape[1], num_classes)
  params = model.init(jax.random.key(context.seed), jnp.asarray(tr.image[:2]),
                      jnp.asarray(tr.text[:2]))
  data = {"image": jnp.asarray(tr.image), "text": jnp.asarray(tr.text),
          "labels": jnp.asarray(tr.labels)}
  val = prepared.val
  functions = runner.Model(encode_image=lambda p, x: _codes(model, p, x, "image"),
                           encode_text=lambda p, z: _codes(model, p, z, "text"),
                           score=lambda p, a, b: hashing.codes_score(a, b))
  validation = runner.Validation(functions, val.image, val.text, val.labels) if len(val) else None
  result = context.train(_stage(config, model, validation), params, data,
                         train.stage_seed(context.seed, 1))
  alpha = result.params["params"].get("AdaptiveTanh_0", {}).get("alpha")
  extras = {} if alpha is None else {"mean_alpha": float(np.mean(np.logaddexp(0, alpha)))}
  return functions.bind(result.params, stages={"dbrc": runner.stage_facts(result)},
                        extras=extras)

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
