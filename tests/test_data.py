"""Loaders on the real release files, the embedded default, and bad input."""

import os
import shutil

import numpy as np
import pytest

from cmjax import data
from cmjax.data import web_news

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wikipedia_release(wikipedia_dir):
  d = data.load_dataset("wikipedia", wikipedia_dir)
  assert d.train.image.shape == (2173, 128) and d.test.image.shape == (693, 128)
  assert d.train.text.shape == (2173, 10) and d.test.text.shape == (693, 10)
  assert d.class_names[0] == "art" and d.num_classes == 10
  np.testing.assert_allclose(d.train.image.sum(1), 1.0, atol=1e-4)
  np.testing.assert_allclose(d.test.text.sum(1), 1.0, atol=1e-4)
  assert set(np.unique(d.train.labels)) == set(range(10))
  # First line of the train list: text id b3150b...-3, category 6 (0-based 5).
  assert d.train.ids[0].startswith("b3150b0c") and d.train.labels[0] == 5


def test_web_news_release_accounts_for_every_pair(web_news_dir):
  splits, names, dropped, stats = data.load_web_news_raw(web_news_dir, image_size=32)
  kept = len(splits["train"].labels) + len(splits["test"].labels)
  assert stats["listed"] == 2200 == kept + len(dropped)
  assert len(dropped) == 10
  assert all(d.reason == "image file missing" for d in dropped)
  assert {d.text_id for d in dropped} >= {"22", "1729"}
  # Decoded by content: files named .jpg that are PNG or BMP are read.
  assert stats["formats"]["PNG"] > 0 and stats["formats"]["BMP"] > 0
  images = splits["train"].images
  assert images.shape[1:] == (32, 32, 3) and images.dtype == np.uint8
  assert len(names) == 10 and names[5] == "National_defense"


def test_web_news_features(web_news_dir):
  d = data.load_dataset("web_news", web_news_dir)
  assert len(d.train) + len(d.test) == 2190
  assert d.train.image.shape[1] == 5 * 4**3 and d.train.text.shape[1] == 1024
  np.testing.assert_allclose(np.linalg.norm(d.test.text, axis=1), 1.0, atol=1e-4)
  assert len(d.metadata["dropped"]) == 10


def test_web_news_drops_undecodable_and_empty(web_news_dir, tmp_path):
  root = tmp_path / "wn"
  root.mkdir()
  for name in ("categories.list", "trainset_txt_img_cat.list", "testset_txt_img_cat.list"):
    shutil.copy(os.path.join(web_news_dir, name), root / name)
  shutil.copytree(os.path.join(web_news_dir, "texts"), root / "texts")
  shutil.copytree(os.path.join(web_news_dir, "images"), root / "images")
  first = open(root / "testset_txt_img_cat.list").readline().split("\t")
  category = open(root / "categories.list").read().split()[int(first[2]) - 1]
  (root / "images" / category / f"{first[1]}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  (root / "texts" / "354.txt").write_text("  \n")  # First train pair.
  _, _, dropped, _ = web_news.load_web_news_raw(str(root), image_size=16)
  reasons = {(d.split, d.text_id): d.reason for d in dropped}
  assert reasons[("test", first[0])].startswith("image undecodable")
  assert reasons[("train", "354")] == "text empty"
  assert len(dropped) == 12


def test_synthetic_is_deterministic_and_structured():
  a, b = data.make_synthetic(seed=3), data.make_synthetic(seed=3)
  np.testing.assert_array_equal(a.train.image, b.train.image)
  assert not np.array_equal(a.train.image, data.make_synthetic(seed=4).train.image)
  # Class structure: class means differ more than within-class spread at low difficulty.
  easy = data.make_synthetic(difficulty=0.2)
  means = np.stack([easy.train.text[easy.train.labels == c].mean(0) for c in range(10)])
  spread = np.mean([easy.train.text[easy.train.labels == c].std(0).mean() for c in range(10)])
  assert np.mean(np.abs(means - means.mean(0))) > spread
  multi = data.make_synthetic(multi_label=True)
  assert multi.train.labels.shape == (1000, 10) and multi.train.labels.sum(1).max() <= 2


def _write_npz(path, **overrides):
  rng = np.random.default_rng(0)
  arrays = dict(image_train=rng.normal(size=(20, 5)), text_train=rng.normal(size=(20, 3)),
                label_train=rng.integers(0, 4, 20), image_test=rng.normal(size=(6, 5)),
                text_test=rng.normal(size=(6, 3)), label_test=rng.integers(0, 4, 6))
  arrays.update(overrides)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  np.savez(path, **arrays)
  return str(path)


def test_arrays_roundtrip(tmp_path):
  path = _write_npz(tmp_path / "ok.npz")
  d = data.load_dataset("arrays", path)
  assert d.train.image.shape == (20, 5) and d.num_classes == 4
  multi = _write_npz(tmp_path / "multi.npz", label_train=np.eye(4)[np.arange(20) % 4],
                     label_test=np.eye(4)[np.arange(6) % 4])
  assert data.load_dataset("arrays", multi).train.multi_label


@pytest.mark.parametrize("overrides, message", [
    (dict(text_train=None), "missing field(s) text_train"),
    (dict(text_train=np.zeros((19, 3))), "mismatched row counts"),
    (dict(image_test=np.full((6, 5), np.nan)), "'image_test' has a non-finite value"),
    (dict(label_test=np.array([0, 1, 2, 3, 9, -1])), "outside [0, 4)"),
    (dict(text_test=np.zeros((6, 4))), "'text_test' has dims"),
])
def test_arrays_bad_input(tmp_path, overrides, message):
  path = _write_npz(tmp_path / "bad.npz", **overrides)
  with pytest.raises(data.DataError) as error:
    data.load_dataset("arrays", path)
  assert message in str(error.value) and "bad.npz" in str(error.value)


def test_truncated_files(tmp_path, wikipedia_dir):
  ok = _write_npz(tmp_path / "ok.npz")
  (tmp_path / "cut.npz").write_bytes(open(ok, "rb").read()[:100])
  with pytest.raises(data.DataError, match="cut.npz: cannot read .npz"):
    data.load_dataset("arrays", str(tmp_path / "cut.npz"))
  wiki = tmp_path / "wiki"
  shutil.copytree(wikipedia_dir, wiki)
  mat = wiki / "raw_features.mat"
  mat.write_bytes(mat.read_bytes()[: mat.stat().st_size // 2])
  with pytest.raises(data.DataError, match="raw_features.mat: cannot read MATLAB file"):
    data.load_dataset("wikipedia", str(wiki))


def test_wikipedia_list_mismatch(tmp_path, wikipedia_dir):
  wiki = tmp_path / "wiki"
  shutil.copytree(wikipedia_dir, wiki)
  lines = (wiki / "testset_txt_img_cat.list").read_text().splitlines()
  (wiki / "testset_txt_img_cat.list").write_text("\n".join(lines[:-1]))
  with pytest.raises(data.DataError, match="field 'I_te' has shape .693, 128. but .* lists 692"):
    data.load_dataset("wikipedia", str(wiki))
  (wiki / "testset_txt_img_cat.list").write_text("\n".join(lines + ["x\ty\t11"]))
  with pytest.raises(data.DataError, match=r"testset_txt_img_cat.list:694: category 11 outside"):
    data.load_dataset("wikipedia", str(wiki))
  os.remove(wiki / "raw_features.mat")
  with pytest.raises(data.DataError, match="raw_features.mat: file not found"):
    data.load_dataset("wikipedia", str(wiki))


def test_validation_split_is_stratified_and_disjoint():
  d = data.make_synthetic()
  train, val = data.validation_split(d.train, 0.2, seed=0)
  assert len(train) + len(val) == len(d.train)
  assert not set(train.ids) & set(val.ids)
  counts = np.bincount(val.labels, minlength=10) / np.bincount(d.train.labels, minlength=10)
  np.testing.assert_allclose(counts, 0.2, atol=0.03)
  again, _ = data.validation_split(d.train, 0.2, seed=0)
  np.testing.assert_array_equal(train.ids, again.ids)


def test_tfds_builder_matches_loader(wikipedia_dir, tmp_path):
  import tensorflow_datasets as tfds
  from cmjax.data import tfds_builders
  builder = tfds_builders.CmjaxWikipedia(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=wikipedia_dir))
  built, direct = tfds_builders.to_dataset(builder), data.load_wikipedia(wikipedia_dir)
  for name in ("train", "test"):
    for field in ("image", "text", "labels", "ids"):
      np.testing.assert_array_equal(getattr(getattr(built, name), field),
                                    getattr(getattr(direct, name), field))
  assert built.class_names == direct.class_names
