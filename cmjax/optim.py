"""The one optimizer factory of cmjax."""

from __future__ import annotations

from typing import Literal

import jax
import optax

__all__ = ["OPTIMIZERS", "make_optimizer", "scale_updates_under"]

OPTIMIZERS = ("sgd", "adam", "rmsprop")
Optimizer = Literal["sgd", "adam", "rmsprop"]


def make_optimizer(name: Optimizer, learning_rate: float, weight_decay: float = 0.0,
                   momentum: float = 0.0) -> optax.GradientTransformation:
  """An optax optimizer by name.

  - `sgd`: SGD with `momentum` (0: plain), weight decay as an L2 term added to
    the gradient (as Caffe does).
  - `adam`: AdamW (decoupled weight decay).
  - `rmsprop`: RMSProp with `momentum`, weight decay as an L2 gradient term.
  """
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=momentum or None))
  if name == "adam":
    return optax.adamw(learning_rate, weight_decay=weight_decay)
  if name == "rmsprop":
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.rmsprop(learning_rate, momentum=momentum or None))
  raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def scale_updates_under(optimizer: optax.GradientTransformation, module: str,
                        scale: float) -> optax.GradientTransformation:
  """`optimizer`, with the updates of every parameter below a module named
  `module` (anywhere in the tree) multiplied by `scale`: a smaller learning rate
  (weight decay included) for fine-tuned pretrained layers."""
  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "scaled" if any(getattr(k, "key", None) == module for k in path)
        else "plain", params)

  return optax.multi_transform(
      {"plain": optimizer, "scaled": optax.chain(optimizer, optax.scale(scale))}, labels)
