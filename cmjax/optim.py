"""The one optimizer factory of cmjax."""

from __future__ import annotations

from typing import Literal

import optax

__all__ = ["OPTIMIZERS", "make_optimizer"]

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
