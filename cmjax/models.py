"""Small flax (linen) building blocks shared by the methods."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "none": lambda x: x,
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
}


class MLP(nn.Module):
  """Fully connected layers: `[..., d_in] -> [..., features[-1]]`.

  Attributes:
    features: width of each layer.
    activation: name in `ACTIVATIONS`, after every layer but the last.
    output_activation: name in `ACTIVATIONS`, after the last layer.
    dropout: dropout rate on the input of every layer but the first
      (active when `train=True`; needs a `'dropout'` rng).
  """

  features: Sequence[int]
  activation: str = "relu"
  output_activation: str = "none"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, width in enumerate(self.features):
      if i and self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.Dense(width)(x)
      last = i == len(self.features) - 1
      x = ACTIVATIONS[self.output_activation if last else self.activation](x)
    return x
