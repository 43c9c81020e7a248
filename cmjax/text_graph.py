"""Texts as signals on a graph of words (the text model of Yu et al. 2018 and FGL).

1. Tokens: Chinese captions become characters (`chars`), overlapping
   character bigrams (`bigrams`, the dictionary-free stand-in for words) or
   words (`words`, jieba's segmentation, `cmjax.features.words`), whitespace
   removed.
2. Vocabulary: the `size` tokens found in the most training captions.
3. Word embeddings, trained here from the training captions (no download):
   co-occurrence counts within a window, positive PMI, truncated SVD
   (Levy & Goldberg 2014).
4. Graph: an edge between two words if either is among the other's `k` nearest
   neighbours by embedding cosine; weight max(cosine, 0) + 1e-6.
5. Laplacian: L = I - D^-1/2 W D^-1/2, scaled to L~ = 2 L / lambda_max - I so that
   its spectrum lies in [-1, 1] (Chebyshev filters); kept as a sparse edge list
   `(rows, cols, values)`, diagonal included.
6. A text's signal: log(1 + count) of each vocabulary word in it, `[V]`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Literal, Sequence

import numpy as np

from cmjax import features
from cmjax.features import vocabulary

__all__ = [
    "Graph",
    "build_graph",
    "dense_laplacian",
    "node_signals",
    "tokenize",
    "vocabulary",
    "word_embeddings",
]

Tokens = Literal["chars", "bigrams", "words"]


def tokenize(text: str, tokens: Tokens) -> list[str]:
  """The tokens of a caption, whitespace removed."""
  chars = "".join(text.split())
  if tokens == "chars":
    return list(chars)
  if tokens == "bigrams":
    return [chars[i:i + 2] for i in range(len(chars) - 1)]
  if tokens == "words":
    return features.words(text)
  raise ValueError(f"unknown tokens {tokens!r}; choose chars, bigrams or words")


def word_embeddings(texts: Sequence[list[str]], vocab: dict[str, int], dim: int,
                    window: int = 5) -> np.ndarray:
  """`[V, dim]` embeddings: truncated SVD of the positive PMI of co-occurrences."""
  v = len(vocab)
  counts = np.zeros((v, v), np.float64)
  for tokens in texts:
    ids = np.array([vocab[t] for t in tokens if t in vocab], np.int64)
    for offset in range(1, window + 1):
      if len(ids) > offset:
        np.add.at(counts, (ids[:-offset], ids[offset:]), 1.0)
  counts = counts + counts.T
  total = counts.sum()
  row = counts.sum(1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    pmi = np.log(counts * total / np.maximum(row * row.T, 1e-12))
  ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
  u, s, _ = np.linalg.svd(ppmi, hermitian=True)
  dim = min(dim, v)
  return (u[:, :dim] * np.sqrt(np.abs(s[:dim]))).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Graph:
  """The scaled Laplacian L~ of a word graph as a sparse edge list.

  Attributes:
    rows, cols: `[E]` int32 node ids; (L~ x)[i] = sum over edges with rows == i
      of values * x[cols].
    values: `[E]` float32 entries of L~ (the diagonal included).
    num_nodes: V.
    lambda_max: the largest eigenvalue of the unscaled L.
    words: the `V` nodes' words, in node order (empty when unnamed).
  """

  rows: np.ndarray
  cols: np.ndarray
  values: np.ndarray
  num_nodes: int
  lambda_max: float
  words: tuple[str, ...] = ()

  def arrays(self) -> dict[str, np.ndarray]:
    """The edge arrays (what a jitted function needs)."""
    return {"rows": self.rows, "cols": self.cols, "values": self.values}

  def neighbours(self, node: int) -> np.ndarray:
    """The ids of `node`'s graph neighbours (itself excluded), strongest edge first."""
    edges = (self.rows == node) & (self.cols != node)
    # Off the diagonal L~ = -2 W~ / lambda_max: the most negative entry is the strongest edge.
    order = np.argsort(self.values[edges], kind="stable")
    return self.cols[edges][order]


def build_graph(embeddings: np.ndarray, neighbors: int, words: Sequence[str] = ()) -> Graph:
  """The kNN word graph of `[V, d]` embeddings (of `words`, if named) and its
  scaled Laplacian."""
  if words and len(words) != embeddings.shape[0]:
    raise ValueError(f"{len(words)} words for {embeddings.shape[0]} embeddings")
  v = embeddings.shape[0]
  unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
  cosine = unit @ unit.T
  np.fill_diagonal(cosine, -np.inf)
  k = min(neighbors, v - 1)
  nearest = np.argpartition(-cosine, k - 1, axis=1)[:, :k]  # [V, k]
  adjacency = np.zeros((v, v), bool)
  adjacency[np.repeat(np.arange(v), k), nearest.ravel()] = True
  adjacency |= adjacency.T  # Either is among the other's neighbours.
  np.fill_diagonal(cosine, 0.0)
  weights = np.where(adjacency, np.maximum(cosine, 0.0) + 1e-6, 0.0)
  inv_sqrt_degree = 1.0 / np.sqrt(weights.sum(1))
  laplacian = np.eye(v) - weights * inv_sqrt_degree[:, None] * inv_sqrt_degree[None, :]
  lambda_max = float(np.linalg.eigvalsh(laplacian)[-1])
  scaled = 2.0 * laplacian / lambda_max - np.eye(v)
  rows, cols = np.nonzero(adjacency | np.eye(v, dtype=bool))
  return Graph(rows=rows.astype(np.int32), cols=cols.astype(np.int32),
               values=scaled[rows, cols].astype(np.float32), num_nodes=v,
               lambda_max=lambda_max, words=tuple(words))


def dense_laplacian(graph: Graph) -> np.ndarray:
  """`[V, V]` L~ (tests and small graphs only)."""
  dense = np.zeros((graph.num_nodes, graph.num_nodes), np.float32)
  dense[graph.rows, graph.cols] = graph.values
  return dense


def node_signals(texts: Sequence[list[str]], vocab: dict[str, int]) -> np.ndarray:
  """`[n, V]` log(1 + count) of each vocabulary word in each tokenised text."""
  signals = np.zeros((len(texts), len(vocab)), np.float32)
  for row, tokens in enumerate(texts):
    for token, count in collections.Counter(tokens).items():
      column = vocab.get(token)
      if column is not None:
        signals[row, column] = np.log1p(count)
  return signals
