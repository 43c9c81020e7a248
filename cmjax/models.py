"""Small flax (linen) building blocks shared by the methods."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "ImageCNN", "MLP", "TextCNN"]

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
