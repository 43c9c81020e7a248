"""TFDS builders for the two release datasets, following TFDS manual-download rules.

The release files cannot be downloaded by code: put them in the manual dir
(default `~/tensorflow_datasets/downloads/manual/`, or pass
`download_config=tfds.download.DownloadConfig(manual_dir=...)`), then build:

  import tensorflow_datasets as tfds
  from cmjax.data import tfds_builders
  builder = tfds_builders.CmjaxWikipedia(data_dir="~/tensorflow_datasets",
                                         file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir="../shared/data/wikipedia"))
  source = builder.as_data_source()   # random access, no TensorFlow needed
  dataset = tfds_builders.to_dataset(builder)   # the cmjax `Dataset`

The examples are produced by the same loaders as `cmjax.data` (one pipeline);
`array_record` files need no TensorFlow to write or read.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from cmjax.data.core import Dataset, Split
from cmjax.data.web_news import load_web_news_raw
from cmjax.data.wikipedia import load_wikipedia

__all__ = ["CmjaxWebNews", "CmjaxWikipedia", "to_dataset"]

_WIKIPEDIA_CLASSES = ("art", "biology", "geography", "history", "literature", "media",
                      "music", "royalty", "sport", "warfare")
_WEB_NEWS_CLASSES = ("culture", "ecology", "economy", "education", "international",
                     "National_defense", "people's_livelihood", "politics",
                     "Science_and_technology", "sports")


class CmjaxWikipedia(tfds.core.GeneratorBasedBuilder):
  """Wikipedia cross-modal dataset (Rasiwasia et al. 2010): SIFT BoVW and LDA features."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place raw_features.mat, categories.list, trainset_txt_img_cat.list and "
      "testset_txt_img_cat.list of the Wikipedia release in the manual dir."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="2,866 Wikipedia image/text documents, 10 categories.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(128,), dtype=np.float32),
            "text": tfds.features.Tensor(shape=(10,), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=_WIKIPEDIA_CLASSES),
            "id": tfds.features.Text(),
        }),
        disable_shuffling=True,  # Keep the release order of the list files.
    )

  def _split_generators(self, dl_manager):
    dataset = load_wikipedia(str(dl_manager.manual_dir))
    return {"train": self._generate_examples(dataset.train),
            "test": self._generate_examples(dataset.test)}

  def _generate_examples(self, split: Split):
    for i in range(len(split)):
      yield i, {"image": split.image[i], "text": split.text[i],
                "label": int(split.labels[i]), "id": str(split.ids[i])}


class CmjaxWebNews(tfds.core.GeneratorBasedBuilder):
  """web_news: Chinese news photos (decoded, RGB, 64x64) and raw captions."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the web_news release (images/, texts/, categories.list and the two "
      "*_txt_img_cat.list files) in the manual dir."
  )
  IMAGE_SIZE = 64

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="2,200 listed news photo/caption pairs, 10 categories; pairs "
                    "without a usable image or text are dropped and logged.",
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(self.IMAGE_SIZE, self.IMAGE_SIZE, 3),
                                          dtype=np.uint8),
            "text": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=_WEB_NEWS_CLASSES),
            "id": tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager):
    splits, *_ = load_web_news_raw(str(dl_manager.manual_dir), self.IMAGE_SIZE)
    return {name: self._generate_examples(raw) for name, raw in splits.items()}

  def _generate_examples(self, raw):
    for i in range(len(raw.labels)):
      yield i, {"image": raw.images[i], "text": raw.texts[i],
                "label": int(raw.labels[i]), "id": str(raw.ids[i])}


def _decode(value):
  return value.decode("utf-8") if isinstance(value, bytes) else value


def to_dataset(builder: tfds.core.DatasetBuilder) -> Dataset:
  """Reads a prepared builder (random access, in key order) into a cmjax `Dataset`.

  For `CmjaxWebNews` the `text` arrays hold the caption strings.
  """
  source = builder.as_data_source()
  splits = {}
  for name in ("train", "test"):
    rows = [source[name][i] for i in range(len(source[name]))]
    stack = lambda key: np.stack([r[key] for r in rows]) if not isinstance(
        rows[0][key], (str, bytes)) else np.array([_decode(r[key]) for r in rows])
    splits[name] = Split(image=stack("image"), text=stack("text"),
                         labels=np.array([r["label"] for r in rows], np.int32),
                         ids=stack("id"))
  names = tuple(builder.info.features["label"].names)
  return Dataset(name=builder.name, train=splits["train"], test=splits["test"],
                 class_names=names, metadata={"tfds_dir": str(builder.data_dir)})
