"""The one data interface of cmjax: paired image/text arrays with labels.

Every dataset loader returns a `Dataset` with a train and a test `Split`. A split
holds row-aligned arrays: row i of `image`, `text` and `labels` describe the same
image/text document. Labels are either integer class ids `[n]` (single label) or
multi-hot rows `[n, num_classes]` (two items are relevant when they share a label).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Literal, Mapping

import numpy as np

from cmjax import checks, text_graph

__all__ = [
    "MAX_CLASSES",
    "DataError",
    "Dataset",
    "FeatureChoice",
    "Features",
    "FeaturesOptions",
    "PixelsChars",
    "PixelsCharsOptions",
    "Split",
    "View",
    "ViewOptions",
    "WordsGraph",
    "WordsGraphOptions",
    "check_array",
    "check_evaluable",
    "check_multi_hot",
    "check_num_classes",
    "check_splits_agree",
    "validate_split",
    "validation_split",
    "with_features",
]


class DataError(checks.UserError, ValueError):
  """Bad input data. The message names the file, the field and the problem."""


@dataclasses.dataclass(frozen=True)
class Split:
  """Row-aligned image/text pairs.

  Attributes:
    image: `[n, ...]` image inputs (feature vectors `[n, d_image]` or pixels).
    text: `[n, ...]` text inputs (feature vectors `[n, d_text]` or token ids).
    labels: `[n]` integer class ids, or `[n, num_classes]` multi-hot rows.
    ids: optional `[n]` document ids (strings), for showing retrieved items.
  """

  image: np.ndarray
  text: np.ndarray
  labels: np.ndarray
  ids: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def take(self, index: np.ndarray) -> "Split":
    """Returns the rows `index` of every array."""
    return Split(
        image=self.image[index],
        text=self.text[index],
        labels=self.labels[index],
        ids=None if self.ids is None else self.ids[index],
    )

  @property
  def multi_label(self) -> bool:
    return self.labels.ndim == 2


@dataclasses.dataclass(frozen=True)
class Features:
  """The `features` view: feature vectors `[n, d]` of both modalities."""

  name: ClassVar[str] = "features"


@dataclasses.dataclass(frozen=True)
class PixelsChars:
  """The `pixels_chars` view: pixels `[n, H, W, 3]` and caption character ids `[n, L]`.

  Attributes:
    vocabulary_size: character ids are in [0, vocabulary_size).
  """

  vocabulary_size: int
  name: ClassVar[str] = "pixels_chars"


@dataclasses.dataclass(frozen=True)
class WordsGraph:
  """The `words_graph` view: image feature vectors, and captions as `[n, V]` signals
  on a word graph built from the training captions.

  Attributes:
    graph: the word graph (`cmjax.text_graph.Graph`, V nodes).
  """

  graph: text_graph.Graph
  name: ClassVar[str] = "words_graph"


# How a method reads a dataset: the view's name and its payload, typed.
View = Features | PixelsChars | WordsGraph


# How each view is loaded: a view config, a field of the configs of the methods
# that read the view (`--config.<field>.<option>=...`).


ImageFeatures = Literal["color_hist", "efficientnet"]
TextFeatures = Literal["char_ngram", "words"]


@dataclasses.dataclass(frozen=True)
class FeaturesOptions:
  """How the `features` view is loaded: which features a raw dataset (web_news) is
  given. Datasets released as features (wikipedia, the hashing sets, arrays,
  synthetic) have their own, and take only the defaults.

  Attributes:
    image_features: joint colour histograms (`color_hist`) or pooled ImageNet
      EfficientNet-Lite0 features (`efficientnet`, `cmjax.pretrained`).
    text_features: TF-IDF of character 1-2-grams (`char_ngram`) or of jieba
      words (`words`).
    efficientnet_block: with `efficientnet`: None for the pooled features, or b
      for the `[h, w, c]` activation maps entering MBConv block b (0-15): the
      input of an image tower that fine-tunes blocks b.. and the head.
  """

  image_features: ImageFeatures = "color_hist"
  text_features: TextFeatures = "char_ngram"
  efficientnet_block: int | None = None
  name: ClassVar[str] = "features"

  def __post_init__(self):
    checks.check_literals(self)
    block = self.efficientnet_block
    if block is not None and (self.image_features != "efficientnet" or not 0 <= block < 16):
      raise DataError(f"efficientnet_block={block} needs image_features='efficientnet' and a "
                      f"block in 0..15 (got image_features={self.image_features!r})")


@dataclasses.dataclass(frozen=True)
class PixelsCharsOptions:
  """How the `pixels_chars` view is loaded.

  Attributes:
    max_chars: captions are truncated to this many characters (counted in the log).
    char_vocab: characters in the vocabulary (most frequent in train).
  """

  max_chars: int = 256
  char_vocab: int = 4000
  name: ClassVar[str] = "pixels_chars"

  def __post_init__(self):
    checks.check_positive(self, "max_chars", "char_vocab")


@dataclasses.dataclass(frozen=True)
class WordsGraphOptions:
  """How the `words_graph` view is loaded.

  Attributes:
    tokens: caption tokens: characters, character bigrams or jieba words.
    vocab_size: graph nodes (the most frequent training tokens).
    embedding_dim: dimension of the PPMI-SVD word embeddings.
    neighbors: k of the kNN word graph.
    window: co-occurrence window of the word embeddings.
    image_features: as `FeaturesOptions.image_features`.
  """

  tokens: text_graph.Tokens = "bigrams"
  vocab_size: int = 2000
  embedding_dim: int = 64
  neighbors: int = 8
  window: int = 5
  image_features: ImageFeatures = "color_hist"
  name: ClassVar[str] = "words_graph"

  def __post_init__(self):
    checks.check_literals(self)
    checks.check_positive(self, "vocab_size", "embedding_dim", "neighbors", "window")


ViewOptions = FeaturesOptions | PixelsCharsOptions | WordsGraphOptions


@dataclasses.dataclass(frozen=True)
class FeatureChoice:
  """The command line's feature choice (`--image_features`, `--text_features`),
  applied to whichever view a method reads (`with_features`); None keeps the
  view's own.

  Attributes:
    image: `color_hist` or `efficientnet`, or None.
    text: `char_ngram` or `words`, or None.
  """

  image: ImageFeatures | None = None
  text: TextFeatures | None = None

  def __post_init__(self):
    for field, value in (("image", self.image), ("text", self.text)):
      hint = ImageFeatures if field == "image" else TextFeatures
      if value is not None and value not in typing.get_args(hint):
        raise DataError(f"unknown {field} features {value!r}; choose "
                        f"{' or '.join(typing.get_args(hint))}")

  @property
  def suffix(self) -> str:
    """`+<image>+<text>` of the choices made, for run folders and report titles."""
    return "".join(f"+{v}" for v in (self.image, self.text) if v is not None)


def with_features(view: ViewOptions, choice: FeatureChoice) -> ViewOptions:
  """`view` with `choice` applied.

  `features`: both fields. `words_graph`: the image features; text `words`
  makes its graph's tokens jieba words (`char_ngram` keeps character tokens).
  `pixels_chars` (a CNN on pixels, a character CNN): image `efficientnet` makes
  it the `features` view, so that the frozen pretrained network is the trunk of
  the image tower and the text tower reads the chosen TF-IDF features; a text
  choice alone does not apply.

  Raises:
    DataError: a choice the view cannot take.
  """
  if choice == FeatureChoice():
    return view
  if isinstance(view, FeaturesOptions):
    return dataclasses.replace(view, image_features=choice.image or view.image_features,
                               text_features=choice.text or view.text_features)
  if isinstance(view, WordsGraphOptions):
    tokens = view.tokens
    if choice.text == "words":
      tokens = "words"
    elif choice.text == "char_ngram" and tokens == "words":
      raise DataError("text features char_ngram contradict the words_graph view's tokens=words")
    return dataclasses.replace(view, tokens=tokens,
                               image_features=choice.image or view.image_features)
  if choice.image == "efficientnet":  # The pretrained network as a frozen image trunk.
    return FeaturesOptions(image_features="efficientnet",
                           text_features=choice.text or "char_ngram")
  raise DataError(f"the {view.name} view reads raw pixels and characters: text features "
                  f"({choice.text}) apply to it only with image features efficientnet")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A cross-modal dataset: train and test splits plus metadata.

  Attributes:
    name: dataset name, e.g. "wikipedia".
    train: training pairs.
    test: test pairs (queries and database of the evaluation protocol).
    class_names: one name per class id.
    metadata: facts about the load, recorded in a run's results (source files,
      dropped pairs...); nothing a method reads.
    view: what the splits hold and the view's payload (`Features`,
      `PixelsChars`, `WordsGraph`).
  """

  name: str
  train: Split
  test: Split
  class_names: tuple[str, ...]
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  view: View = Features()

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


# At most this many classes: labels become `[n, C]` multi-hot rows for sampling
# and relevance, so C bounds memory (58,620 x 10,000 float32 rows: 2.3 GB).
MAX_CLASSES = 10_000
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])


def check_array(array: np.ndarray, source: str, field: str) -> np.ndarray:
  """Checks a numeric input array: real numbers, finite, within float32's range.

  Nothing is cast, clipped or dropped here: a value cmjax cannot take is a
  `DataError` naming `source`, `field`, the index and the problem.
  """
  array = np.asarray(array)
  if np.iscomplexobj(array):
    raise DataError(f"{source}: field '{field}' is complex ({array.dtype}); cmjax takes real "
                    "numbers (an imaginary part would be dropped)")
  if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
    raise DataError(f"{source}: field '{field}' is not numeric ({array.dtype})")
  if np.issubdtype(array.dtype, np.floating):
    bad = ~np.isfinite(array)
    if bad.any():
      index = _first_bad(bad)
      raise DataError(f"{source}: field '{field}' has a non-finite value ({array[index]}) at "
                      f"index {index}")
    if array.dtype.itemsize > 4:
      big = np.abs(array) > _FLOAT32_MAX
      if big.any():
        index = _first_bad(big)
        raise DataError(f"{source}: field '{field}' has the value {array[index]:.6g} at index "
                        f"{index}, beyond float32's range (+-3.4e38)")
  return array


def _check_ids(labels: np.ndarray, num_classes: int, source: str, field: str) -> np.ndarray:
  """`[n]` class ids in [0, num_classes), checked in their own dtype; -> int32."""
  if labels.size:
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.mod(labels, 1) == 0):
      index = _first_bad(np.mod(labels, 1) != 0)
      raise DataError(f"{source}: field '{field}' has non-integer class ids ({labels[index]} "
                      f"at index {index})")
    low, high = labels.min(), labels.max()  # Compared before any cast: no wrap-around.
    if low < 0 or high >= num_classes:
      raise DataError(f"{source}: field '{field}' has class ids in [{low:.20g}, {high:.20g}], "
                      f"outside [0, {num_classes})")
  return labels.astype(np.int32)


def check_multi_hot(labels: np.ndarray, num_classes: int, source: str,
                     field: str) -> np.ndarray:
  """`[n, C]` rows of 0 and 1 only, C = num_classes; -> float32."""
  if labels.shape[1] != num_classes:
    raise DataError(f"{source}: field '{field}' has {labels.shape[1]} columns, expected "
                    f"{num_classes}")
  bad = (labels != 0) & (labels != 1)
  if bad.any():
    index = _first_bad(bad)
    raise DataError(f"{source}: field '{field}' multi-hot rows must be 0/1, found "
                    f"{labels[index]} at index {index}")
  return labels.astype(np.float32)


def check_num_classes(num_classes: int, source: str) -> None:
  """At most `MAX_CLASSES` classes (see there)."""
  if num_classes > MAX_CLASSES:
    raise DataError(f"{source}: {num_classes:,} classes, more than cmjax takes "
                    f"({MAX_CLASSES:,}); number the classes 0..C-1")


def validate_split(split: Split, num_classes: int, source: str, name: str) -> Split:
  """Checks a split's shapes, values and labels; returns it with canonical dtypes.

  Args:
    split: the split to check.
    num_classes: labels must be ids in `[0, num_classes)` or rows of that width.
    source: the file the split came from, named in errors.
    name: the split's name ("train" or "test"), named in errors.

  Raises:
    DataError: on mismatched row counts, complex or non-numeric values,
      NaN/Inf, values beyond float32, labels out of range or not 0/1.
  """
  check_num_classes(num_classes, source)
  labels = check_array(split.labels, source, f"label_{name}")
  n = labels.shape[0] if labels.ndim else -1
  for field, array in (("image", split.image), ("text", split.text)):
    if array.ndim < 2:
      raise DataError(
          f"{source}: field '{field}_{name}' must be 2-D [rows, dims] or more, "
          f"got shape {array.shape}"
      )
    if array.shape[0] != n:
      raise DataError(
          f"{source}: field '{field}_{name}' has {array.shape[0]} rows but "
          f"'label_{name}' has {n}: mismatched row counts"
      )
    check_array(array, source, f"{field}_{name}")
  if labels.ndim == 1:
    labels = _check_ids(labels, num_classes, source, f"label_{name}")
  elif labels.ndim == 2:
    labels = check_multi_hot(labels, num_classes, source, f"label_{name}")
  else:
    raise DataError(
        f"{source}: field 'label_{name}' must be [n] ids or [n, classes] "
        f"multi-hot, got shape {labels.shape}"
    )
  image = split.image.astype(np.float32) if split.image.dtype != np.uint8 else split.image
  return dataclasses.replace(split, image=image, text=split.text, labels=labels)


def check_splits_agree(train: Split, test: Split, source: str) -> None:
  """The test split has the train split's label format and input shapes.

  Raises:
    DataError: ids in one split and multi-hot rows in the other, multi-hot
      rows of different widths, or inputs of different shapes.
  """
  kind = lambda s: ("class ids [n]" if s.labels.ndim == 1
                    else f"multi-hot rows [n, {s.labels.shape[1]}]")
  if kind(train) != kind(test):
    raise DataError(f"{source}: field 'label_test' holds {kind(test)} but 'label_train' holds "
                    f"{kind(train)}")
  for field in ("image", "text"):
    shapes = [getattr(s, field).shape[1:] for s in (train, test)]
    if shapes[0] != shapes[1]:
      raise DataError(f"{source}: field '{field}_test' has dims {shapes[1]} but "
                      f"'{field}_train' has {shapes[0]}")


def check_evaluable(test: Split, source: str) -> None:
  """The test labels make a retrieval task: some pairs relevant, some not.

  Raises:
    DataError: a single-class test split (every pair relevant: MAP is 1 and
      the ROC AUC undefined whatever the model), or multi-hot test labels with
      no positive (no query has a relevant item).
  """
  if test.labels.ndim == 1:
    classes = np.unique(test.labels)
    if len(classes) < 2:
      raise DataError(f"{source}: field 'label_test' holds one class only ({classes[0]}): "
                      "every test pair is relevant, so retrieval cannot be evaluated")
  elif not test.labels.any():
    raise DataError(f"{source}: field 'label_test' has no positive label: no test query has "
                    "a relevant item, so retrieval cannot be evaluated")


def validation_split(
    split: Split, fraction: float, seed: int
) -> tuple[Split, Split]:
  """Carves a stratified validation set out of a training split.

  Args:
    split: training pairs.
    fraction: share of each class that goes to validation (0 disables).
    seed: seed of the permutation; the same seed gives the same carve.

  Returns:
    `(train, validation)`, disjoint, together every row of `split`.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
  rng = np.random.default_rng(seed)
  n = len(split)
  if fraction == 0.0:
    return split, split.take(np.arange(0))
  strata = split.labels if split.labels.ndim == 1 else np.argmax(split.labels, 1)
  val = []
  for c in np.unique(strata):
    members = rng.permutation(np.flatnonzero(strata == c))
    val.append(members[: int(round(fraction * len(members)))])
  val_index = np.sort(np.concatenate(val))
  train_index = np.setdiff1d(np.arange(n), val_index)
  return split.take(train_index), split.take(val_index)
