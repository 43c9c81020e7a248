"""MIRFlickr-25K / NUS-WIDE loaders on small fixture files written in the release formats."""

import numpy as np
import pytest
import scipy.io

from cmjax import data, runner
from cmjax.methods import registry


def _fixture(n, tags, classes, seed):
  rng = np.random.default_rng(seed)
  labels = (rng.random((n, classes)) < 0.3).astype(np.uint8)
  labels[np.arange(n), rng.integers(0, classes, n)] = 1  # Every item has a label.
  images = rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)
  text = (rng.random((n, tags)) < 0.05).astype(np.float64) + labels @ rng.random((classes, tags))
  return images, text, labels


def test_features_file_layout(tmp_path):
  _, text, labels = _fixture(90, 20, 5, 0)
  image = np.random.default_rng(1).normal(size=(90, 12))
  path = tmp_path / "mirflickr25k.mat"
  scipy.io.savemat(path, {"XTrain": image[:70], "XTest": image[70:], "YTrain": text[:70],
                          "YTest": text[70:], "LTrain": labels[:70], "LTest": labels[70:]})
  d = data.load_dataset("mirflickr", str(path))
  assert (len(d.train), len(d.test), d.num_classes) == (70, 20, 5) and d.train.multi_label
  np.testing.assert_allclose(d.test.image, image[70:], rtol=1e-6)


def test_cleared_set_layout_and_a_run(tmp_path):
  images, text, labels = _fixture(120, 30, 6, 2)
  scipy.io.savemat(tmp_path / "nus-wide-tc10-iall.mat", {"IAll": images})
  scipy.io.savemat(tmp_path / "nus-wide-tc10-yall.mat", {"YAll": text})
  scipy.io.savemat(tmp_path / "nus-wide-tc10-lall.mat", {"LAll": labels})
  loaded = data.load_nus_wide(str(tmp_path), num_queries=20, seed=0)
  assert (len(loaded.train), len(loaded.test), loaded.num_classes) == (100, 20, 6)
  assert loaded.train.image.shape == (100, 5 * 8**3)  # Colour histograms, 2x2 pyramid.
  again = data.load_nus_wide(str(tmp_path), num_queries=20, seed=0)
  np.testing.assert_array_equal(loaded.test.text, again.test.text)  # Same seed, same split.
  out = runner.run(registry.get("cca_itq"), registry.make_config(registry.get("cca_itq"),
                                                                  "quick"),
                   loaded, str(tmp_path / "run"))
  assert out["hashing"]["i2t"]["map"] > 0  # Multi-label relevance through the protocol.


def test_bad_release_files_are_named(tmp_path):
  scipy.io.savemat(tmp_path / "x-yall.mat", {"YAll": np.zeros((5, 3))})
  scipy.io.savemat(tmp_path / "x-lall.mat", {"LAll": np.ones((5, 2))})
  with pytest.raises(data.DataError, match=r"missing file\(s\) \*-iall.mat"):
    data.load_mirflickr(str(tmp_path))
  (tmp_path / "x-iall.mat").write_bytes(b"MATLAB 7.3 MAT-file, HDF5" + b"\0" * 200)
  try:
    import h5py  # noqa: F401
  except ImportError:
    with pytest.raises(data.DataError, match=r"x-iall.mat: a MAT v7.3 \(HDF5\) file"):
      data.load_mirflickr(str(tmp_path))
  path = tmp_path / "bad.mat"
  scipy.io.savemat(path, {"XTrain": np.zeros((3, 2))})
  with pytest.raises(data.DataError, match="missing field"):
    data.load_nus_wide(str(path))
