"""The web_news dataset: raw Chinese news photos and captions, Wikipedia layout.

Images are decoded by content (a file named `.jpg` may be PNG or BMP), converted
to RGB (RGBA over white, CMYK and grey-scale converted) and resized to a square.
Every listed pair is accounted for: pairs that cannot be used are dropped with
their ids and the reason, reported in the dataset's metadata and the log.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Callable, Literal

from absl import logging
import numpy as np
from PIL import Image

from cmjax import features, text_graph
from cmjax.pretrained import cache, efficientnet
from cmjax.data import listfiles
from cmjax.data.core import (DataError, Dataset, Features, PixelsChars, Split, View,
                             WordsGraph, validate_split)

__all__ = ["DroppedPair", "RawSplit", "efficientnet_features", "load_web_news",
           "load_web_news_pixels", "load_web_news_raw", "load_web_news_words", "square"]


@dataclasses.dataclass(frozen=True)
class DroppedPair:
  split: str
  text_id: str
  image_id: str
  reason: str


@dataclasses.dataclass(frozen=True)
class RawSplit:
  """Decoded pairs of one split.

  Attributes:
    images: `[n, size, size, 3]` uint8 RGB pixels.
    texts: n caption strings.
    labels: `[n]` class ids.
    ids: `[n]` text ids.
  """

  images: np.ndarray
  texts: tuple[str, ...]
  labels: np.ndarray
  ids: np.ndarray


def _to_8bit(im: Image.Image) -> Image.Image:
  """Grey images of more than 8 bits per pixel as 8-bit grey, scaled, not saturated.

  PIL's `convert("RGB")` clips 16-bit values at 255 (a 16-bit photo comes out
  almost white); here 0..65535 maps linearly onto 0..255. 32-bit integer and
  float grey images are refused (no range to scale them by).
  """
  if im.mode.startswith("I;16"):
    values = np.asarray(im, np.uint32)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
  if im.mode in ("I", "F"):
    raise ValueError(f"{im.mode}-mode ({'32-bit integer' if im.mode == 'I' else 'float'}) grey "
                     "image")
  return im


def square(size: int) -> Callable[[Image.Image], np.ndarray]:
  """The default image transform: an RGB image resized (bilinear) to `[size, size, 3]`."""
  return lambda im: np.asarray(im.resize((size, size), Image.BILINEAR), np.uint8)


# Pixels an image may have before it is decoded (the header says how many): more is
# refused, not decoded (a small file can declare a huge image).
MAX_IMAGE_PIXELS = 50_000_000


def _decode_image(path: str, transform: Callable[[Image.Image], np.ndarray]
                  ) -> tuple[np.ndarray | None, str, str]:
  """Returns `(transform(RGB image) or None, reason if None, format found by content)`.

  The work per image is bounded: an image of more than `MAX_IMAGE_PIXELS` is
  refused from its header, and a transform refuses what it cannot take (the
  EfficientNet transform: extreme aspect ratios) before resizing.
  """
  if not os.path.isfile(path):
    return None, "image file missing", ""
  try:
    with Image.open(path) as im:
      found = im.format or "unknown"
      if im.width * im.height > MAX_IMAGE_PIXELS:
        return None, (f"image of {im.width} x {im.height} pixels, more than "
                      f"{MAX_IMAGE_PIXELS:,}: not decoded"), found
      im.load()
      if im.mode.startswith("I;16"):
        found += " 16-bit"
      im = _to_8bit(im)
      if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
      rgb = im.convert("RGB")
  except Exception as e:  # PIL raises many types for corrupt files.
    return None, f"image undecodable ({type(e).__name__}: {e})"[:200], ""
  try:
    return transform(rgb), "", found
  except ValueError as e:  # What the transform refuses, e.g. an extreme aspect ratio.
    return None, f"image refused by the transform: {e}"[:200], found


def _read_caption(path: str) -> tuple[str | None, str]:
  if not os.path.isfile(path):
    return None, "text file missing"
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig").strip()
  except UnicodeDecodeError:
    return None, "text not valid UTF-8"
  if not text:
    return None, "text empty"
  return text, ""


def load_web_news_raw(
    data_dir: str, image_size: int = 64,
    transform: Callable[[Image.Image], np.ndarray] | None = None,
) -> tuple[dict[str, RawSplit], tuple[str, ...], list[DroppedPair], dict]:
  """Reads and decodes every listed pair of the raw release.

  Args:
    data_dir: directory with `images/`, `texts/`, `categories.list` and the
      two list files.
    image_size: side of the square the images are resized to.
    transform: RGB image -> pixels, instead of that square resize (e.g.
      `cmjax.pretrained.efficientnet.preprocess`).

  Returns:
    `(splits, class_names, dropped, stats)`: `splits["train"|"test"]`, the
    dropped pairs with reasons, and counts of what was found (formats).
  """
  class_names = listfiles.read_categories(os.path.join(data_dir, "categories.list"))
  splits, dropped = {}, []
  formats: dict[str, int] = {}
  for name in ("train", "test"):
    entries = listfiles.read_pair_list(
        os.path.join(data_dir, f"{name}set_txt_img_cat.list"), len(class_names)
    )
    paths = [
        os.path.join(data_dir, "images", class_names[e.label], f"{e.image_id}.jpg")
        for e in entries
    ]
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
      decoded = list(pool.map(lambda p: _decode_image(p, transform or square(image_size)),
                              paths))
    images, texts, labels, ids = [], [], [], []
    for entry, (pixels, image_problem, found) in zip(entries, decoded):
      text, text_problem = _read_caption(
          os.path.join(data_dir, "texts", f"{entry.text_id}.txt")
      )
      problem = "; ".join(p for p in (image_problem, text_problem) if p)
      if problem:
        dropped.append(DroppedPair(name, entry.text_id, entry.image_id, problem))
        continue
      formats[found] = formats.get(found, 0) + 1
      images.append(pixels)
      texts.append(text)
      labels.append(entry.label)
      ids.append(entry.text_id)
    if not images:
      raise DataError(f"{data_dir}: no usable pairs in the {name} split")
    splits[name] = RawSplit(
        images=np.stack(images),
        texts=tuple(texts),
        labels=np.array(labels, np.int32),
        ids=np.array(ids),
    )
  listed = sum(len(s.labels) for s in splits.values()) + len(dropped)
  stats = {"listed": listed, "kept": listed - len(dropped), "formats": formats}
  if dropped:
    _report_dropped(data_dir, dropped, listed)
  return splits, class_names, dropped, stats


_REPORTED: set[tuple] = set()  # The drops already warned about in this process.


def _report_dropped(data_dir: str, dropped: list[DroppedPair], listed: int) -> None:
  """A warning with the reasons and ids, once per process for the same release and
  drops (a load decodes the release more than once: features, EfficientNet input);
  later reads say it in one INFO line."""
  key = (os.path.realpath(data_dir), tuple(dropped))
  if key in _REPORTED:
    logging.info("web_news: the same %d of %d pairs dropped (reasons above)", len(dropped),
                 listed)
    return
  _REPORTED.add(key)
  reasons: dict[str, int] = {}
  for d in dropped:
    reasons[d.reason] = reasons.get(d.reason, 0) + 1
  logging.warning("web_news: dropped %d of %d listed pairs: %s; ids: %s", len(dropped), listed,
                  reasons, ", ".join(f"{d.split}:{d.text_id}" for d in dropped))


def _dataset(name_to_split: dict[str, Split], class_names, data_dir, dropped, stats,
             view: View = Features(), **metadata) -> Dataset:
  splits = {name: validate_split(s, len(class_names), data_dir, name)
            for name, s in name_to_split.items()}
  return Dataset(
      name="web_news",
      train=splits["train"],
      test=splits["test"],
      class_names=class_names,
      metadata={
          "source": os.path.abspath(data_dir),
          "dropped": [dataclasses.asdict(d) for d in dropped],
          **stats,
          **metadata,
      },
      view=view,
  )


def load_web_news_pixels(
    data_dir: str,
    image_size: int = 64,
    max_chars: int = 256,
    char_vocab: int = 4000,
) -> Dataset:
  """Loads web_news as decoded pixels and character ids, for networks trained from scratch.

  Images are `[n, image_size, image_size, 3]` uint8; captions `[n, max_chars]`
  int32 character ids (`cmjax.features.char_ids`) over the `char_vocab`
  characters found in the most training captions. Captions longer than
  `max_chars` are truncated; how many is logged and kept in the metadata. The
  view (`PixelsChars`) carries the character vocabulary's size.
  """
  raw, class_names, dropped, stats = load_web_news_raw(data_dir, image_size)
  vocab = features.char_ngram_vocabulary(raw["train"].texts, char_vocab, orders=(1,))
  splits, truncated = {}, {}
  for name, r in raw.items():
    lengths = np.array([len("".join(t.split())) for t in r.texts])
    truncated[name] = int((lengths > max_chars).sum())
    splits[name] = Split(image=r.images, text=features.char_ids(r.texts, vocab, max_chars),
                         labels=r.labels, ids=r.ids)
  logging.info("web_news pixels: %d characters in the vocabulary; captions longer than %d "
               "characters truncated: %s", len(vocab), max_chars, truncated)
  return _dataset(splits, class_names, data_dir, dropped, stats,
                  PixelsChars(vocabulary_size=len(vocab) + 2), truncated_captions=truncated)


ImageFeatures = Literal["color_hist", "efficientnet"]
TextFeatures = Literal["char_ngram", "words"]
# What the cached EfficientNet features depend on besides the files and the weights.
_EFFICIENTNET_RECIPE = {
    "model": "EfficientNet-Lite0, ImageNet, pooled 1280-d penultimate features",
    "preprocess": "RGB (RGBA over white), shorter side 256 bicubic, centre crop 224",
    "pillow": Image.__version__,
    "version": 1,
}


def _listed_image_paths(data_dir: str) -> list[str]:
  """The list files, then the image file of every listed pair, in list order."""
  class_names = listfiles.read_categories(os.path.join(data_dir, "categories.list"))
  lists = [os.path.join(data_dir, f"{name}set_txt_img_cat.list") for name in ("train", "test")]
  images = [os.path.join(data_dir, "images", class_names[e.label], f"{e.image_id}.jpg")
            for path in lists for e in listfiles.read_pair_list(path, len(class_names))]
  return [os.path.join(data_dir, "categories.list"), *lists, *images]


def efficientnet_features(data_dir: str, raw: dict[str, RawSplit],
                          cache_dir: str | None = None,
                          block: int | None = None) -> dict[str, np.ndarray]:
  """Pooled EfficientNet-Lite0 features `[n, 1280]` of each split's images, or
  with `block` the activation maps `[n, h, w, c]` entering that MBConv block.

  Computed once (`cmjax.pretrained.efficientnet.image_features`) and kept in
  the content-addressed cache (`cmjax.pretrained.cache`) under a key of the
  release files' contents, the weights' sha256 and the preprocessing.

  Args:
    data_dir: the release directory.
    raw: `load_web_news_raw(data_dir)`: which pairs are kept, in which order.
    cache_dir: the cache folder (default `$CMJAX_CACHE_DIR`, else ~/.cache/cmjax).
    block: None, or the MBConv block whose input maps are wanted.
  """
  weights = efficientnet.weights_path()
  key = {**_EFFICIENTNET_RECIPE, "weights_sha256": efficientnet.file_sha256(weights),
         "data_sha256": cache.files_sha256(_listed_image_paths(data_dir))}
  what = "web_news EfficientNet features"
  if block is not None:
    key["stop_block"] = block
    what = f"web_news EfficientNet maps entering block {block}"

  def compute() -> dict[str, np.ndarray]:
    decoded, *_ = load_web_news_raw(data_dir, transform=efficientnet.preprocess)
    names = list(decoded)
    pixels = np.concatenate([decoded[name].images for name in names])
    logging.info("web_news: EfficientNet-Lite0 features of %d images", len(pixels))
    computed = efficientnet.image_features(pixels, efficientnet.load_variables(weights),
                                           stop_block=block)
    ends = np.cumsum([len(decoded[name].labels) for name in names])
    out = dict(zip(names, np.split(computed, ends[:-1])))
    return {**out, **{f"{name}_ids": decoded[name].ids.astype(str) for name in names}}

  shape = efficientnet.feature_shape(block)

  def expect(arrays: dict[str, np.ndarray]) -> str:
    """The entry holds, for each split, float32 features of this shape for its pairs."""
    for name, split in raw.items():
      ids, got = arrays.get(f"{name}_ids"), arrays.get(name)
      if ids is None or got is None:
        return f"no {name if got is None else name + '_ids'} array"
      if not np.array_equal(ids, split.ids.astype(str)):
        return f"the {name} features are of other pairs than the release lists"
      if got.shape != (len(split.ids), *shape) or got.dtype != np.float32:
        return (f"{name} features {got.dtype} {list(got.shape)}, expected float32 "
                f"{[len(split.ids), *shape]}")
    return ""

  arrays = cache.cached_arrays(key, compute, cache_dir, what=what, expect=expect)
  return {name: arrays[name] for name in raw}


def _image_features(kind: ImageFeatures, data_dir: str, raw: dict[str, RawSplit],
                    color_bins: int, cache_dir: str | None,
                    efficientnet_block: int | None = None) -> dict[str, np.ndarray]:
  if efficientnet_block is not None and kind != "efficientnet":
    raise DataError(f"efficientnet_block={efficientnet_block} needs image features "
                    f"'efficientnet', not {kind!r}")
  if kind == "color_hist":
    return {name: features.color_histogram(r.images, color_bins) for name, r in raw.items()}
  if kind == "efficientnet":
    return efficientnet_features(data_dir, raw, cache_dir, efficientnet_block)
  raise DataError(f"unknown image features {kind!r}; choose color_hist or efficientnet")


def _text_features(kind: TextFeatures, raw: dict[str, RawSplit],
                   vocab_size: int) -> dict[str, np.ndarray]:
  """TF-IDF of character 1-2-grams or jieba words, vocabulary and idf from train."""
  if kind not in ("char_ngram", "words"):
    raise DataError(f"unknown text features {kind!r}; choose char_ngram or words")
  tokenize = features.char_ngrams if kind == "char_ngram" else features.words
  documents = {name: [tokenize(t) for t in r.texts] for name, r in raw.items()}
  vocab, idf = features.fit_tfidf(documents["train"], vocab_size)
  out = {name: features.tfidf(documents[name], vocab, idf) for name in raw}
  # Captions with no vocabulary token are kept (an all-zero row), and named.
  empty = {name: [str(i) for i, row in zip(r.ids, out[name]) if not row.any()]
           for name, r in raw.items()}
  logging.info("web_news %s TF-IDF: %d tokens; captions with no vocabulary token (kept, "
               "all-zero row): %s", kind, len(vocab), empty)
  return out


def load_web_news(
    data_dir: str,
    image_size: int = 64,
    color_bins: int = 4,
    ngram_vocab: int = 1024,
    image_features: ImageFeatures = "color_hist",
    text_features: TextFeatures = "char_ngram",
    efficientnet_block: int | None = None,
    cache_dir: str | None = None,
) -> Dataset:
  """Loads web_news as feature vectors computed from the raw data.

  Images: joint RGB colour histograms with a 2x2 spatial pyramid
  (`color_hist`, `[n, 5 * color_bins**3]`), or pooled ImageNet EfficientNet-Lite0
  features (`efficientnet`, `[n, 1280]`, cached: `efficientnet_features`), or
  with `efficientnet_block` the maps entering that block (`[n, h, w, c]`).
  Captions: TF-IDF weighted bags of character 1- and 2-grams (`char_ngram`) or
  of jieba words (`words`), `[n, ngram_vocab]`, vocabulary from the training
  split.
  """
  raw, class_names, dropped, stats = load_web_news_raw(data_dir, image_size)
  images = _image_features(image_features, data_dir, raw, color_bins, cache_dir,
                          efficientnet_block)
  texts = _text_features(text_features, raw, ngram_vocab)
  splits = {name: Split(image=images[name], text=texts[name], labels=r.labels, ids=r.ids)
            for name, r in raw.items()}
  return _dataset(splits, class_names, data_dir, dropped, stats, image_features=image_features,
                  text_features=text_features, efficientnet_block=efficientnet_block)


def load_web_news_words(
    data_dir: str,
    tokens: text_graph.Tokens = "bigrams",
    vocab_size: int = 2000,
    embedding_dim: int = 64,
    neighbors: int = 8,
    window: int = 5,
    image_size: int = 64,
    color_bins: int = 4,
    image_features: ImageFeatures = "color_hist",
    cache_dir: str | None = None,
) -> Dataset:
  """Loads web_news with captions as signals on a word graph (`cmjax.text_graph`).

  Images are the image features of `load_web_news` (`image_features`);
  captions are `[n, vocab_size]` log(1 + count) signals of their tokens
  (characters, character bigrams or jieba words). The word embeddings, the kNN
  graph and its scaled Laplacian are built from the training captions only and
  kept in the dataset's view (`WordsGraph.graph`, a `text_graph.Graph`).
  """
  raw, class_names, dropped, stats = load_web_news_raw(data_dir, image_size)
  images = _image_features(image_features, data_dir, raw, color_bins, cache_dir)
  tokenized = {name: [text_graph.tokenize(t, tokens) for t in r.texts] for name, r in raw.items()}
  vocab = text_graph.vocabulary(tokenized["train"], vocab_size)
  if len(vocab) < 2:
    raise DataError(f"{data_dir}: the training captions hold {len(vocab)} distinct {tokens} "
                    "(empty or punctuation only?); a word graph needs 2 at least")
  logging.info("web_news words: building the word graph of %d %s from %d training captions "
               "(co-occurrence PPMI, SVD, %d nearest neighbours)", len(vocab), tokens,
               len(tokenized["train"]), neighbors)
  embeddings = text_graph.word_embeddings(tokenized["train"], vocab, embedding_dim, window)
  graph = text_graph.build_graph(embeddings, neighbors, words=sorted(vocab, key=vocab.get))
  splits = {
      name: Split(image=images[name], text=text_graph.node_signals(tokenized[name], vocab),
                  labels=r.labels, ids=r.ids)
      for name, r in raw.items()
  }
  for name, split in splits.items():
    if not split.text.any():
      raise DataError(f"{data_dir}: no {name} caption has any of the {len(vocab)} {tokens} of "
                      "the training captions: every text signal would be zero")
  # Captions with no vocabulary word are kept (an all-zero signal), and counted.
  no_words = {name: [str(i) for i, row in zip(s.ids, s.text) if not row.any()]
              for name, s in splits.items()}
  logging.info("web_news words: %d %s, %d graph edges (k=%d), lambda_max %.3f; captions with "
               "no vocabulary word (kept, all-zero signal): %s", len(vocab), tokens,
               len(graph.rows), neighbors, graph.lambda_max,
               {name: ids for name, ids in no_words.items()})
  return _dataset(splits, class_names, data_dir, dropped, stats, WordsGraph(graph),
                  vocabulary_size=len(vocab), tokens=tokens, captions_without_words=no_words,
                  image_features=image_features)
