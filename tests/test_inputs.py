"""The checks behind the one-line errors, in process: arrays, labels, transforms,
files (tests/bad_inputs.py runs the same through the command line)."""

import errno
import os

import numpy as np
import pytest
from PIL import Image

from cmjax import data, evaluation, files, preprocess, runner
from cmjax.data import core, hashing_sets, web_news


def _split(image=None, text=None, labels=None):
  rng = np.random.default_rng(0)
  return data.Split(image=rng.normal(size=(6, 3)) if image is None else image,
                    text=rng.normal(size=(6, 2)) if text is None else text,
                    labels=np.arange(6) % 3 if labels is None else labels)


@pytest.mark.parametrize("changes, message", [
    (dict(labels=np.array([0, 1, 2, 0, 1, 2**32 + 1], np.int64)), r"outside \[0, 3\)"),
    (dict(labels=np.array([0, 1, 2, 0, 1, -1])), r"outside \[0, 3\)"),
    (dict(image=np.ones((6, 3)) * (1 + 2j)), "is complex"),
    (dict(image=np.full((6, 3), 1.2e39)), "beyond float32"),
    (dict(labels=np.eye(3)[np.arange(6) % 3] * 2), "must be 0/1"),
    (dict(labels=np.where(np.eye(3)[np.arange(6) % 3] > 0, np.nan, 0)), "non-finite"),
])
def test_validate_split_refuses_what_it_cannot_take(changes, message):
  with pytest.raises(data.DataError, match=message):
    core.validate_split(_split(**changes), 3, "f.npz", "train")


def test_splits_must_agree_and_make_a_task():
  ids, multi = _split(), _split(labels=np.eye(3)[np.arange(6) % 3])
  with pytest.raises(data.DataError, match="'label_test' holds multi-hot rows"):
    data.check_splits_agree(ids, multi, "f")
  with pytest.raises(data.DataError, match="one class only"):
    data.check_evaluable(_split(labels=np.zeros(6, int)), "f")
  with pytest.raises(data.DataError, match="no positive label"):
    data.check_evaluable(_split(labels=np.zeros((6, 3))), "f")


def test_sqrt_transform_fits_the_data_it_gets():
  negative = data.Dataset("x", _split(), _split(), ("a", "b", "c"))
  prepared = preprocess.prepare(negative, "sqrt_standardize", 0.0, 0)
  assert prepared.transforms == {"image": "standardize", "text": "standardize"}
  assert len(prepared.notes) == 2 and "negative values" in prepared.notes[0]
  np.testing.assert_allclose(prepared.train.image.std(0), 1, atol=1e-3)  # Not zeroed.
  train = _split(image=np.abs(_split().image), text=np.abs(_split().text))
  mixed = data.Dataset("x", train, _split(), ("a", "b", "c"))
  with pytest.raises(data.DataError, match="a split has negative values"):
    preprocess.prepare(mixed, "sqrt_standardize", 0.0, 0)


def test_pixels_are_converted_exactly_or_refused():
  assert hashing_sets.to_pixels(np.array([[0.0, 1.0]]), "f", "IAll").tolist() == [[0, 255]]
  assert hashing_sets.to_pixels(np.array([[3.0, 200.0]]), "f", "IAll").tolist() == [[3, 200]]
  for bad in (np.array([[300.0]]), np.array([[-1.0]]), np.array([[2.5]])):
    with pytest.raises(data.DataError, match="field 'IAll' must hold pixels"):
      hashing_sets.to_pixels(bad, "f", "IAll")


def test_sixteen_bit_grey_is_scaled_not_saturated(tmp_path):
  path = str(tmp_path / "a.jpg")
  Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path, format="PNG")
  pixels, reason, found = web_news._decode_image(  # pylint: disable=protected-access
      path, web_news.square(4))
  assert reason == "" and found == "PNG 16-bit" and np.all(pixels == 128)


def test_write_atomic_leaves_nothing_on_failure_and_never_follows_a_link(tmp_path):
  def full(f):
    raise OSError(errno.ENOSPC, "No space left on device")
  with pytest.raises(files.RunError, match=r"x.json: cannot write \(No space left on device\)"):
    files.write_atomic(str(tmp_path / "x.json"), full)
  assert os.listdir(tmp_path) == []
  (tmp_path / "victim").write_text("precious")
  os.symlink(tmp_path / "victim", tmp_path / "out.json")
  files.write_atomic(str(tmp_path / "out.json"), lambda f: f.write("new"))
  assert (tmp_path / "victim").read_text() == "precious"
  assert not os.path.islink(tmp_path / "out.json")
  os.symlink(tmp_path / "victim", tmp_path / "log")
  with pytest.raises(files.RunError, match="symbolic link"):
    files.open_append(str(tmp_path / "log"))


def test_workdir_in_a_folder_others_can_write_is_refused(tmp_path):
  shared = tmp_path / "shared"
  shared.mkdir()
  os.chmod(shared, 0o777)
  with pytest.raises(files.RunError, match="any user can write to"):
    with runner.Workdir(str(shared / "run")):
      pass
  os.chmod(shared, 0o1777)  # Sticky, as /tmp: others cannot rename our folders.
  with runner.Workdir(str(shared / "run")):
    pass


def _warnings(scores):
  """`runner.score_warnings` of the score ranges the streamed evaluation computes."""
  q, n = scores.shape
  ranges = evaluation.retrieval_metrics(scores, np.arange(q) % 2, np.arange(n) % 2).score_range
  return runner.score_warnings(ranges)


def test_constant_scores_are_flagged():
  assert _warnings(np.random.default_rng(0).random((4, 4))) == []
  assert "constant test scores" in _warnings(np.full((4, 4), 0.5, np.float32))[0]
  assert "2 of 3 image queries" in _warnings(
      np.array([[1.0, 1.0], [2.0, 3.0], [0.0, 0.0]], np.float32))[0]


@pytest.mark.parametrize("seed", [-1, 2**32, 10**20, 1.5, True])
def test_seeds_that_would_wrap_are_refused(seed):
  with pytest.raises(runner.ConfigError, match="seed must be"):
    runner.check_seed(seed)
