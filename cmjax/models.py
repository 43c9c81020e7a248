"""Small flax (linen) building blocks shared by the methods."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "ACTIVATIONS", "ChebConv", "GraphTextEncoder", "ImageCNN", "MLP", "TextCNN",
    "sparse_matmul",
]

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
    dtype: compute dtype (parameters and the output stay float32).
  """

  features: Sequence[int]
  activation: str = "relu"
  output_activation: str = "none"
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, width in enumerate(self.features):
      if i and self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      x = nn.Dense(width, dtype=self.dtype)(x)
      last = i == len(self.features) - 1
      x = ACTIVATIONS[self.output_activation if last else self.activation](x)
    return x.astype(jnp.float32)


class ImageCNN(nn.Module):
  """`[B, H, W, 3]` uint8 pixels -> `[B, outputs]` logits.

  Stride-2 3x3 convolutions with ReLU, global average pooling, dropout, dense.
  `dtype`: compute dtype (parameters and the output stay float32).
  """

  outputs: int
  channels: Sequence[int] = (32, 64, 128)
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array, train: bool = False) -> jax.Array:
    x = (pixels.astype(jnp.float32) / 127.5 - 1.0).astype(self.dtype)
    for width in self.channels:
      x = nn.relu(nn.Conv(width, (3, 3), strides=(2, 2), dtype=self.dtype)(x))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.outputs, dtype=self.dtype)(x).astype(jnp.float32)


class TextCNN(nn.Module):
  """`[B, L]` character ids (0 pads, at the end) -> `[B, outputs]` logits.

  Kim (2014): embeddings, one convolution per width, ReLU, max over the
  windows that start on a real character, dropout, dense. `dtype`: compute
  dtype (parameters and the output stay float32).
  """

  outputs: int
  vocabulary_size: int
  embedding: int = 64
  widths: Sequence[int] = (2, 3, 4)
  filters: int = 128
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids: jax.Array, train: bool = False) -> jax.Array:
    ids = ids.astype(jnp.int32)
    x = nn.Embed(self.vocabulary_size, self.embedding, dtype=self.dtype)(ids)
    pooled = []
    for width in self.widths:
      h = nn.relu(nn.Conv(self.filters, (width,), padding="VALID", dtype=self.dtype)(x))
      real = (ids[:, : h.shape[1]] > 0)[:, :, None]  # h: [B, L - w + 1, f]
      pooled.append(jnp.max(jnp.where(real, h, 0.0), axis=1))
    x = nn.Dropout(self.dropout, deterministic=not train)(jnp.concatenate(pooled, axis=-1))
    return nn.Dense(self.outputs, dtype=self.dtype)(x).astype(jnp.float32)


def sparse_matmul(graph: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
  """`L~ x` for a sparse `[V, V]` matrix given as edges and a batch `x` `[B, V, F]`.

  `graph` holds `rows`, `cols` (`[E]` int) and `values` (`[E]`); the cost is
  O(B E F) and no dense `[V, V]` matrix exists.
  """
  messages = x[:, graph["cols"], :] * graph["values"][None, :, None]  # [B, E, F]
  summed = jax.ops.segment_sum(jnp.swapaxes(messages, 0, 1), graph["rows"],
                               num_segments=x.shape[1])  # [V, B, F]
  return jnp.swapaxes(summed, 0, 1)


class ChebConv(nn.Module):
  """Chebyshev spectral graph convolution (Defferrard et al. 2016).

  `[B, V, F_in] -> [B, V, features]`: y = sum_k T_k(L~) x W_k + b with
  T_0 = I, T_1 = L~, T_k = 2 L~ T_{k-1} - T_{k-2}, k < order, for the scaled
  Laplacian L~ (spectrum in [-1, 1]) given as a sparse edge list.

  Attributes:
    features: output channels per node.
    order: number of Chebyshev terms K (filters are K-1 hops local).
  """

  features: int
  order: int = 3

  @nn.compact
  def __call__(self, x: jax.Array, graph: Mapping[str, jax.Array]) -> jax.Array:
    terms = [x]
    if self.order > 1:
      terms.append(sparse_matmul(graph, x))
    for _ in range(2, self.order):
      terms.append(2.0 * sparse_matmul(graph, terms[-1]) - terms[-2])
    stacked = jnp.concatenate(terms, axis=-1)  # [B, V, K * F_in]
    return nn.Dense(self.features)(stacked)


class GraphTextEncoder(nn.Module):
  """A text as a signal on a word graph -> `[B, outputs]` (Yu et al. 2018).

  `[B, V]` node signals -> Chebyshev convolution (`filters` per node, ReLU) ->
  flattened `[B, V * filters]` -> dropout -> dense `outputs` with `activation`.

  Attributes:
    filters: graph-convolution channels per node.
    order: Chebyshev terms K.
    outputs: width of the text representation.
    activation: name in `ACTIVATIONS` after the dense layer.
    dropout: dropout before the dense layer.
    dtype: compute dtype of the dense layer; the graph convolution (a
      Chebyshev recursion), the parameters and the output stay float32.
  """

  filters: int = 4
  order: int = 3
  outputs: int = 1024
  activation: str = "relu"
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, signals: jax.Array, graph: Mapping[str, jax.Array],
               train: bool = False) -> jax.Array:
    h = nn.relu(ChebConv(self.filters, self.order)(signals[..., None], graph))
    h = h.reshape(h.shape[0], -1)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Dense(self.outputs, dtype=self.dtype)(h)
    return ACTIVATIONS[self.activation](h).astype(jnp.float32)
