"""Features computed from raw pixels and raw text.

Colour histograms for images; TF-IDF bags of tokens for text, the tokens
character n-grams (language independent: Chinese needs no tokenizer) or words
(jieba's Chinese segmentation). Pretrained CNN features: `cmjax.pretrained`.
"""

from __future__ import annotations

import collections
import logging as std_logging
import os
from typing import Sequence

import numpy as np

from cmjax import checks, files
from cmjax.pretrained import cache

__all__ = [
    "char_ngram_vocabulary",
    "content_words",
    "char_ngrams",
    "char_ids",
    "color_histogram",
    "fit_tfidf",
    "inverse_document_frequency",
    "tfidf",
    "vocabulary",
    "words",
]


def _joint_histogram(pixels: np.ndarray, bins: int) -> np.ndarray:
  """`[n, h, w, 3]` uint8 -> `[n, bins**3]` L1-normalised joint RGB histogram."""
  q = (pixels.astype(np.int32) * bins) // 256
  code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
  code = code.reshape(code.shape[0], -1)
  n = code.shape[0]
  flat = code + (np.arange(n)[:, None] * bins**3)
  hist = np.bincount(flat.ravel(), minlength=n * bins**3).reshape(n, bins**3)
  return (hist / code.shape[1]).astype(np.float32)


def color_histogram(images: np.ndarray, bins: int = 8) -> np.ndarray:
  """Joint RGB histograms of the whole image and its four quadrants.

  Args:
    images: `[n, h, w, 3]` uint8.
    bins: levels per channel.

  Returns:
    `[n, 5 * bins**3]` float32; each of the 5 blocks sums to 1.
  """
  h, w = images.shape[1] // 2, images.shape[2] // 2
  parts = [images, images[:, :h, :w], images[:, :h, w:], images[:, h:, :w], images[:, h:, w:]]
  return np.concatenate([_joint_histogram(p, bins) for p in parts], axis=1)


def char_ngrams(text: str, orders: Sequence[int] = (1, 2)) -> list[str]:
  """Character n-grams of a text, whitespace removed."""
  chars = "".join(text.split())
  return [chars[i : i + k] for k in orders for i in range(len(chars) - k + 1)]


def _jieba():
  try:
    import jieba  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise checks.MissingPackageError("Chinese word segmentation needs the package jieba: pip install "
                      "'cmjax[pretrained]' (or jieba)") from None
  jieba.setLogLevel(std_logging.WARNING)  # Not its "Building prefix dict" lines.
  if jieba.dt.tmp_dir is None:  # Before its first use: where it keeps its cache.
    jieba.dt.tmp_dir = _private_jieba_dir()
  return jieba


def _private_jieba_dir() -> str:
  """A folder of cmjax's own for jieba's dictionary cache (`<cache dir>/jieba`),
  created private and checked like a workdir: jieba's default, `<tempdir>/jieba.cache`,
  is loaded whoever wrote it, so anyone sharing /tmp could change the segmentation.

  Raises:
    RunError: the folder cannot be made private (another user's, writable by all).
  """
  folder = os.path.join(cache.default_cache_dir(), "jieba")
  try:
    os.makedirs(folder, mode=0o700, exist_ok=True)
  except OSError as e:
    raise files.RunError(f"jieba cache {folder}: cannot be created ({e.strerror or e}); "
                         "set CMJAX_CACHE_DIR to a folder of your own") from None
  files.check_private(folder, "jieba cache", "set CMJAX_CACHE_DIR to a folder of your own")
  return folder


def words(text: str) -> list[str]:
  """The words of a (Chinese) text by jieba's dictionary segmentation (its HMM for
  unknown words), keeping only tokens with a letter or a digit: no whitespace or
  punctuation."""
  return [w for w in _jieba().lcut(text) if any(c.isalnum() for c in w)]


def content_words(tokens: Sequence[str], min_idf_fraction: float = 0.25) -> list[str]:
  """The tokens of `tokens` that carry content, for showing words to a person.

  Function words (的, 了, 在, 是...) occur in nearly every document: their
  inverse document frequency in jieba's own table (shipped with jieba, from a
  large corpus) is below `min_idf_fraction` times the table's median (0.88 for
  的, against a median near 12). Tokens the table lacks count as the median.
  """
  table = _jieba_idf()
  floor = min_idf_fraction * table.median_idf
  return [t for t in tokens if table.idf_freq.get(t, table.median_idf) >= floor]


def _jieba_idf():
  _jieba()  # The same install check and private cache.
  import jieba.analyse  # pylint: disable=g-import-not-at-top
  return jieba.analyse.default_tfidf


def vocabulary(documents: Sequence[Sequence[str]], size: int) -> dict[str, int]:
  """The `size` tokens found in the most documents (ties by token), token -> column."""
  df = collections.Counter()
  for tokens in documents:
    df.update(set(tokens))
  ranked = sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
  return {token: i for i, (token, _) in enumerate(ranked)}


def char_ngram_vocabulary(texts: Sequence[str], size: int,
                          orders: Sequence[int] = (1, 2)) -> dict[str, int]:
  """The `size` n-grams found in the most documents (ties by n-gram)."""
  return vocabulary([char_ngrams(t, orders) for t in texts], size)


def _counts(documents: Sequence[Sequence[str]], vocab: dict[str, int]) -> np.ndarray:
  counts = np.zeros((len(documents), len(vocab)), np.float32)
  for row, tokens in enumerate(documents):
    for token in tokens:
      column = vocab.get(token)
      if column is not None:
        counts[row, column] += 1
  return counts


def inverse_document_frequency(documents: Sequence[Sequence[str]],
                               vocab: dict[str, int]) -> np.ndarray:
  """`[len(vocab)]` smoothed idf of tokenized documents: log((1 + n) / (1 + df)) + 1."""
  df = (_counts(documents, vocab) > 0).sum(0)
  return (np.log((1 + len(documents)) / (1 + df)) + 1).astype(np.float32)


def tfidf(documents: Sequence[Sequence[str]], vocab: dict[str, int],
          idf: np.ndarray) -> np.ndarray:
  """`[n, len(vocab)]` L2-normalised TF-IDF rows (sublinear tf) of tokenized documents."""
  counts = _counts(documents, vocab)
  weights = np.where(counts > 0, 1 + np.log(np.maximum(counts, 1)), 0) * idf
  norm = np.linalg.norm(weights, axis=1, keepdims=True)
  return (weights / np.maximum(norm, 1e-12)).astype(np.float32)


def fit_tfidf(train: Sequence[Sequence[str]], size: int) -> tuple[dict[str, int], np.ndarray]:
  """`(vocabulary, idf)` of tokenized training documents, for `tfidf`."""
  vocab = vocabulary(train, size)
  return vocab, inverse_document_frequency(train, vocab)


PAD_ID, UNKNOWN_ID = 0, 1


def char_ids(texts: Sequence[str], vocab: dict[str, int], max_chars: int) -> np.ndarray:
  """`[n, max_chars]` int32 character ids (whitespace removed), for a character CNN.

  Id 0 pads, 1 is a character outside `vocab`, `vocab[c] + 2` otherwise;
  texts longer than `max_chars` keep their first `max_chars` characters.
  """
  ids = np.full((len(texts), max_chars), PAD_ID, np.int32)
  for row, text in enumerate(texts):
    chars = "".join(text.split())[:max_chars]
    ids[row, :len(chars)] = [vocab[c] + 2 if c in vocab else UNKNOWN_ID for c in chars]
  return ids
