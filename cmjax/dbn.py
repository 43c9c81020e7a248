"""Deep belief networks: stacks of RBMs trained greedily with CD-1 in the shared loop.

Used by UNCSM's optional preprocessing stage (a DBN per modality, unrolled into
a softmax classifier) and by the Multimodal DBN baseline (a DBN per modality and
a joint RBM on top).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import optim, rbm, sampling, train

__all__ = ["DBN", "dbn_forward", "rows_stage", "train_dbn", "train_softmax_head"]

# A trained DBN: one (kind, params) per layer, bottom first.
DBN = list[tuple[rbm.RBMKind, dict]]


def rows_stage(name: str, loss_fn, optimizer, num_steps: int, batch_size: int) -> train.Stage:
  """A stage whose batches are random rows of every array in `data`."""
  return train.Stage(name=name, loss_fn=loss_fn,
                     sample_fn=lambda rng, data: sampling.sample_rows(rng, data, batch_size),
                     optimizer=optimizer, num_steps=num_steps)


def dbn_forward(layers: Sequence[tuple[str, dict]], x: jax.Array) -> jax.Array:
  """`[n, V] -> [n, H_top]`: hidden probabilities up the stack (a sigmoid net)."""
  h = x
  for kind, params in layers:
    h = rbm.hidden_probabilities(params, h, kind)
  return h


# Trains a stage in the run's workdir, mesh and loop: `(stage, params, data, seed) ->
# StageResult` (`cmjax.runner.FitContext.train`).
TrainFn = Callable[[train.Stage, Any, Any, int], train.StageResult]


def train_dbn(
    x: np.ndarray,
    kinds: Sequence[rbm.RBMKind],
    sizes: Sequence[int],
    *,
    name: str,
    train_fn: TrainFn,
    seed: int,
    steps: int,
    learning_rate: float,
    batch_size: int,
) -> DBN:
  """Greedy layer-wise CD-1 training; layer i is stage `<name>_<i+1>`.

  Args:
    train_fn: trains a stage in the run (`runner.FitContext.train`).
    x: `[n, V]` visible data of the bottom layer (counts for replicated softmax).
    kinds: RBM kind of each layer, bottom first.
    sizes: hidden units of each layer.
  """
  optimizer = optim.make_optimizer("sgd", learning_rate, momentum=0.9)
  layer_input = np.asarray(x, np.float32)
  layers: DBN = []
  for layer, (kind, width) in enumerate(zip(kinds, sizes)):
    params = rbm.init_rbm(jax.random.key(seed + layer), layer_input.shape[1], width)
    loss = lambda p, c, b, r, kind=kind: rbm.cd_loss(p, b["x"], r, kind)
    stage = rows_stage(f"{name}_{layer + 1}", loss, optimizer, steps, batch_size)
    params = train_fn(stage, params, {"x": jnp.asarray(layer_input)}, seed + 10 + layer).params
    layers.append((kind, params))
    layer_input = np.asarray(rbm.hidden_probabilities(params, jnp.asarray(layer_input), kind))
  return layers


def train_softmax_head(
    layers: DBN,
    x: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    name: str,
    train_fn: TrainFn,
    seed: int,
    steps: int,
    batch_size: int,
) -> DBN:
  """Unrolls the DBN into a sigmoid net with a softmax head and fine-tunes all of it
  with cross entropy; returns the fine-tuned layers (the head is dropped)."""
  kinds = [kind for kind, _ in layers]
  width = layers[-1][1]["hidden_bias"].shape[0]
  net = {"layers": [params for _, params in layers],
         "head": {"w": jnp.zeros((width, num_classes)), "b": jnp.zeros(num_classes)}}

  def loss_fn(p, context, batch, rng):
    logits = dbn_forward(list(zip(kinds, p["layers"])), batch["x"]) @ p["head"]["w"]
    target = batch["y"] / jnp.sum(batch["y"], -1, keepdims=True)
    return jnp.mean(optax.softmax_cross_entropy(logits + p["head"]["b"], target)), {}

  data = {"x": jnp.asarray(x), "y": jnp.asarray(sampling.multi_hot(labels, num_classes))}
  stage = rows_stage(name, loss_fn, optim.make_optimizer("adam", 1e-4), steps, batch_size)
  net = train_fn(stage, net, data, seed).params
  return list(zip(kinds, net["layers"]))
