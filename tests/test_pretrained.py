"""EfficientNet-Lite0: the legacy torch reader, the conversion (against PyTorch's
outputs stored by `benchmarks.pretrained`), the feature cache, and the feature
choices of web_news (EfficientNet images, jieba words)."""

import glob
import os
import pickle
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from cmjax import configs, data, features, files, runner, train
from cmjax.methods import emd_cnn, registry
from cmjax.pretrained import cache, efficientnet, torch_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                       "efficientnet_lite0_reference.npz")


@pytest.fixture(scope="module")
def variables():
  return efficientnet.load_variables()


def test_flax_network_matches_pytorch_outputs(variables):
  """The converted network reproduces PyTorch's features and logits to 1e-4
  (fixture: `python -m benchmarks.pretrained --fixture=...`, a photo and noise)."""
  reference = np.load(FIXTURE)
  got = efficientnet.image_features(reference["pixels"], variables, batch_size=2)
  logits = efficientnet.image_features(reference["pixels"], variables, batch_size=2,
                                       logits=True)
  np.testing.assert_allclose(got, reference["features"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(logits, reference["logits"], atol=1e-4, rtol=0)
  assert np.argmax(logits[0]) == np.argmax(reference["logits"][0])


def _legacy_file(path, main_object, keys=(), headers=None):
  with open(path, "wb") as f:
    for header in headers or (torch_file.MAGIC_NUMBER, torch_file.PROTOCOL_VERSION,
                              {"protocol_version": 1001, "little_endian": True}):
      pickle.dump(header, f)
    pickle.dump(main_object, f)
    pickle.dump(keys if not isinstance(keys, tuple) else list(keys), f)


class _Payload:
  def __init__(self, target):
    self.target = target

  def __reduce__(self):
    return (os.remove, (self.target,))


def test_reader_refuses_a_pickle_that_runs_code(tmp_path):
  victim = tmp_path / "victim.txt"
  victim.write_text("still here")
  path = str(tmp_path / "evil.pth")
  _legacy_file(path, {"weight": _Payload(str(victim))})
  with pytest.raises(torch_file.TorchFileError, match=r"evil\.pth.*global posix\.remove"):
    torch_file.read_state_dict(path)
  assert victim.read_text() == "still here"


@pytest.mark.parametrize("place", ["magic", "protocol", "system info", "state dict",
                                   "storage keys"])
def test_no_pickle_of_the_file_runs_code(tmp_path, place):
  """A `__reduce__` planted in any of the file's five pickles is refused, not run."""
  victim = tmp_path / "victim.txt"
  victim.write_text("still here")
  payload = _Payload(str(victim))
  headers = [torch_file.MAGIC_NUMBER, torch_file.PROTOCOL_VERSION,
             {"protocol_version": 1001, "little_endian": True}]
  state, keys = {}, []
  if place in ("magic", "protocol"):
    headers[["magic", "protocol"].index(place)] = payload
  elif place == "system info":
    headers[2] = {"protocol_version": 1001, "little_endian": True, "x": payload}
  elif place == "state dict":
    state = {"weight": payload}
  else:
    keys = [payload]
  path = str(tmp_path / "evil.pth")
  _legacy_file(path, state, keys, headers)
  with pytest.raises(torch_file.TorchFileError, match=r"evil\.pth.*global posix\.remove"):
    torch_file.read_state_dict(path)
  with pytest.raises(torch_file.TorchFileError, match=r"evil\.pth"):
    efficientnet.load_variables(path)
  assert victim.read_text() == "still here"


def test_reader_refuses_truncated_zip_and_other_files(tmp_path):
  real = efficientnet.weights_path()
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(open(real, "rb").read()[:5_000_000])
  with pytest.raises(torch_file.TorchFileError, match="truncated.pth: truncated inside"):
    torch_file.read_state_dict(str(truncated))
  zipped = tmp_path / "zipped.pth"
  zipped.write_bytes(b"PK\x03\x04rest")
  with pytest.raises(torch_file.TorchFileError, match="zip-format"):
    torch_file.read_state_dict(str(zipped))
  text = tmp_path / "text.pth"
  text.write_text("hello")
  with pytest.raises(torch_file.TorchFileError, match="text.pth: not a torch file"):
    torch_file.read_state_dict(str(text))


def test_conversion_names_missing_and_extra_tensors():
  state = torch_file.read_state_dict(efficientnet.weights_path())
  missing = {k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}
  with pytest.raises(torch_file.TorchFileError, match="_blocks.3._bn1.running_var"):
    efficientnet.convert_state_dict(missing)
  with pytest.raises(torch_file.TorchFileError, match="extra.weight"):
    efficientnet.convert_state_dict({**state, "extra.weight": np.zeros(3)})
  wrong = {**state, "_conv_head.weight": np.zeros((1280, 320, 3, 3), np.float32)}
  with pytest.raises(torch_file.TorchFileError, match="shapes differ"):
    efficientnet.convert_state_dict(wrong)


def test_cache_rebuilds_corrupt_entries(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    return {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}

  key = {"what": "test", "version": 1}
  first = cache.cached_arrays(key, compute, str(tmp_path))
  again = cache.cached_arrays(key, compute, str(tmp_path))
  assert len(calls) == 1 and np.array_equal(first["x"], again["x"])
  path = cache.entry_path(key, str(tmp_path))
  open(path, "r+b").truncate(100)  # A partial write.
  assert np.array_equal(cache.cached_arrays(key, compute, str(tmp_path))["x"], first["x"])
  assert len(calls) == 2
  # Same layout, other numbers, the old checksum: detected, rebuilt.
  stored = dict(np.load(path))
  stored["x"] = stored["x"] + 1
  np.savez(path, **stored)
  assert np.array_equal(cache.cached_arrays(key, compute, str(tmp_path))["x"], first["x"])
  assert len(calls) == 3


def _rewrite_entry(path, key, **arrays):
  """An entry rewritten as one who can write the cache would: new arrays, the key
  and a checksum recomputed to match."""
  stored = dict(np.load(path))
  stored.update(arrays)
  stored.pop("__sha256__")
  stored["__key__"] = np.array(cache._key_json(key))  # pylint: disable=protected-access
  stored["__sha256__"] = np.array(cache.arrays_sha256(stored))
  np.savez(path, **stored)


def test_cache_uses_only_the_entry_asked_for(tmp_path):
  calls = []

  def compute():
    calls.append(1)
    return {"x": np.ones((2, 3), np.float32)}

  expect = lambda a: "" if a["x"].shape == (2, 3) else f"x of shape {a['x'].shape}"
  key, other = {"what": "a"}, {"what": "b"}
  cache.cached_arrays(key, compute, str(tmp_path), expect=expect)
  path = cache.entry_path(key, str(tmp_path))
  # A well-formed entry of the wrong shape, its checksum recomputed: rebuilt.
  _rewrite_entry(path, key, x=np.zeros((2, 7), np.float32))
  assert cache.cached_arrays(key, compute, str(tmp_path), expect=expect)["x"].shape == (2, 3)
  assert len(calls) == 2
  # Another key's entry (valid in itself) copied to this key's name: rebuilt.
  cache.cached_arrays(other, lambda: {"x": np.zeros((2, 3), np.float32)}, str(tmp_path))
  shutil.copy(cache.entry_path(other, str(tmp_path)), path)
  assert cache.cached_arrays(key, compute, str(tmp_path), expect=expect)["x"].sum() == 6
  assert len(calls) == 3
  with pytest.raises(ValueError, match="computed arrays are not what was asked for: x of"):
    cache.cached_arrays({"what": "c"}, lambda: {"x": np.ones(4)}, str(tmp_path), expect=expect)


def test_cache_folder_is_checked_and_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
  compute = lambda: {"x": np.arange(3.0)}
  shared = tmp_path / "shared"
  (shared / "features").mkdir(parents=True)
  os.chmod(shared, 0o777)  # Anyone could plant entries: refused, naming the folder.
  with pytest.raises(files.RunError, match="feature cache .*any user can write"):
    cache.cached_arrays({"k": 1}, compute, str(shared))
  # A cache that cannot be created or written: a warning, the computed arrays.
  blocked = tmp_path / "a_file"
  blocked.write_text("")
  assert cache.cached_arrays({"k": 1}, compute, str(blocked))["x"].tolist() == [0, 1, 2]

  def full_disk(path, *args, **kwargs):
    raise files.RunError(f"{path}: cannot write (No space left on device)")

  monkeypatch.setattr(files, "write_atomic", full_disk)
  assert cache.cached_arrays({"k": 1}, compute, str(tmp_path / "ok"))["x"].tolist() == [0, 1, 2]
  assert not glob.glob(str(tmp_path / "ok" / "features" / "*.npz"))


def _tiny_release(source, root, per_split=4):
  """A web_news release of the first `per_split` pairs of each list."""
  root.mkdir()
  shutil.copy(os.path.join(source, "categories.list"), root / "categories.list")
  categories = open(root / "categories.list").read().split()
  (root / "texts").mkdir()
  for name in ("train", "test"):
    lines = open(os.path.join(source, f"{name}set_txt_img_cat.list")).read().splitlines()
    lines = [l for l in lines if os.path.exists(os.path.join(
        source, "images", categories[int(l.split("\t")[2]) - 1], l.split("\t")[1] + ".jpg"))]
    # Two classes at least: the first pairs and the last ones.
    kept = lines[:per_split // 2] + lines[-(per_split - per_split // 2):]
    (root / f"{name}set_txt_img_cat.list").write_text("\n".join(kept) + "\n")
    for line in kept:
      text_id, image_id, label = line.split("\t")
      folder = root / "images" / categories[int(label) - 1]
      folder.mkdir(parents=True, exist_ok=True)
      shutil.copy(os.path.join(source, "images", categories[int(label) - 1], f"{image_id}.jpg"),
                  folder / f"{image_id}.jpg")
      shutil.copy(os.path.join(source, "texts", f"{text_id}.txt"), root / "texts")
  return str(root)


@pytest.mark.slow
def test_web_news_efficientnet_features_are_cached(web_news_dir, tmp_path, monkeypatch):
  root = _tiny_release(web_news_dir, tmp_path / "wn")
  monkeypatch.setenv("CMJAX_CACHE_DIR", str(tmp_path / "cache"))
  view = data.FeaturesOptions(image_features="efficientnet", text_features="words")
  first = data.load_dataset("web_news", root, view=view)
  assert first.train.image.shape == (4, 1280) and first.test.image.shape == (4, 1280)
  assert first.metadata["image_features"] == "efficientnet"
  entries = glob.glob(str(tmp_path / "cache" / "features" / "*.npz"))
  assert len(entries) == 1
  open(entries[0], "r+b").truncate(50)  # Corrupt: detected and rebuilt.
  again = data.load_dataset("web_news", root, view=view)
  np.testing.assert_array_equal(again.train.image, first.train.image)
  # Rewritten with 7-d features, key and checksum to match: not what the run asks for.
  key = dict(np.load(entries[0]))["__key__"]
  _rewrite_entry(entries[0], __import__("json").loads(str(key)),
                 train=np.zeros((4, 7), np.float32))
  again = data.load_dataset("web_news", root, view=view)
  np.testing.assert_array_equal(again.train.image, first.train.image)
  # A changed image is another key: a new entry, other features.
  image = glob.glob(os.path.join(root, "images", "*", "*.jpg"))[0]
  shutil.copy(glob.glob(os.path.join(root, "images", "*", "*.jpg"))[1], image)
  changed = data.load_dataset("web_news", root, view=view)
  assert len(glob.glob(str(tmp_path / "cache" / "features" / "*.npz"))) == 2
  both = lambda d: np.concatenate([d.train.image, d.test.image])
  assert not np.array_equal(both(changed), both(first))


def test_jieba_words_and_word_tfidf(web_news_dir):
  assert features.words("新华社北京电 国务院总理今天主持召开会议。") == [
      "新华社", "北京", "电", "国务院", "总理", "今天", "主持", "召开", "会议"]
  d = data.load_dataset("web_news", web_news_dir,
                        view=data.FeaturesOptions(text_features="words"))
  assert d.train.text.shape == (1693, 1024) and d.train.image.shape == (1693, 320)
  # Unit rows, except the few captions with none of the 1,024 words (all zero, logged).
  norms = np.linalg.norm(d.test.text, axis=1)
  np.testing.assert_allclose(norms[norms > 0], 1.0, atol=1e-4)
  assert (norms == 0).sum() == 4


def test_feature_choices_apply_to_views():
  choice = data.FeatureChoice(image="efficientnet", text="words")
  assert choice.suffix == "+efficientnet+words"
  assert data.with_features(data.FeaturesOptions(), choice) == data.FeaturesOptions(
      "efficientnet", "words")
  graph = data.with_features(data.WordsGraphOptions(), choice)
  assert graph.tokens == "words" and graph.image_features == "efficientnet"
  # A CNN on pixels with pretrained image features: the frozen network's features.
  assert data.with_features(data.PixelsCharsOptions(), choice) == data.FeaturesOptions(
      "efficientnet", "words")
  with pytest.raises(data.DataError, match="only with image features efficientnet"):
    data.with_features(data.PixelsCharsOptions(), data.FeatureChoice(text="words"))
  with pytest.raises(data.DataError, match="unknown image features 'vgg'"):
    data.FeatureChoice(image="vgg")


def test_datasets_released_as_features_refuse_a_feature_choice(wikipedia_dir):
  with pytest.raises(data.DataError, match="dataset 'wikipedia' takes no view option "
                                           "image_features='efficientnet'"):
    data.load_dataset("wikipedia", wikipedia_dir,
                      view=data.FeaturesOptions(image_features="efficientnet"))


def test_network_cut_before_a_block_composes_to_the_whole(variables):
  pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), np.uint8)
  whole = efficientnet.EfficientNetLite0().apply(variables, pixels)
  maps = efficientnet.EfficientNetLite0(stop_block=14).apply(variables, pixels)
  assert maps.shape == (2, 2, 2, 192)  # 64 / 32: the last stride-2 block is behind.
  top = efficientnet.EfficientNetLite0(start_block=14).apply(variables, maps)
  np.testing.assert_allclose(top, whole, atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="blocks 15..14"):
    efficientnet.EfficientNetLite0(start_block=15, stop_block=14).apply(variables, pixels)


@pytest.mark.slow
def test_emd_cnn_fine_tunes_the_pretrained_top(web_news_dir, tmp_path, monkeypatch, variables):
  """finetune_blocks=2: the view holds the maps entering block 14 (cached), the
  tower starts at the ImageNet weights (its pooled output equals the frozen
  features), trains those blocks at the scaled rate, and never touches the
  batch-norm statistics."""
  root = _tiny_release(web_news_dir, tmp_path / "wn", per_split=8)
  monkeypatch.setenv("CMJAX_CACHE_DIR", str(tmp_path / "cache"))
  spec = registry.get("emd_cnn")
  config = registry.make_config(spec, "quick", finetune_blocks=2, steps=5,
                                training=dict(batch_size=8), prepare=dict(validation_fraction=0.0))
  dataset = registry.load_data(spec, config, "web_news", root)
  assert dataset.train.image.shape == (8, 7, 7, 192)
  pooled = data.load_dataset("web_news", root, view=data.FeaturesOptions("efficientnet"))
  top = efficientnet.EfficientNetLite0(start_block=14).apply(variables, dataset.train.image)
  np.testing.assert_allclose(top, pooled.train.image, atol=1e-4, rtol=0)

  prepared = spec.prepare(config, dataset, 0)
  context = runner.FitContext(workdir=str(tmp_path / "run"), seed=0, mesh=train.data_mesh(),
                              loop=train.LoopConfig())
  _, trained, _ = emd_cnn.train_model(config, prepared, context)
  tower = lambda collection: trained[collection]["image_net"]["efficientnet"]
  for name in ("block14", "block15", "head"):
    for leaf, start in zip(jax.tree.leaves(tower("batch_stats")[name]),
                           jax.tree.leaves(variables["batch_stats"][name])):
      np.testing.assert_array_equal(leaf, start)  # Frozen statistics.
  moved = [np.abs(np.asarray(a) - b).max() for a, b in zip(
      jax.tree.leaves(tower("params")["block15"]), jax.tree.leaves(variables["params"]["block15"]))]
  assert max(moved) > 0  # Fine-tuned.
  assert "block13" not in tower("params")  # Below the cut: not in the model at all.
  with pytest.raises(configs.ConfigError, match="needs raw images"):
    registry.view_options(spec, config, "wikipedia")


def test_jieba_cache_is_private_and_a_planted_one_is_ignored(tmp_path):
  """jieba's default cache, `<tempdir>/jieba.cache`, is read whoever wrote it; cmjax
  keeps it in a private folder of its own cache dir."""
  import marshal
  script = "from cmjax import features; print(features.words('我们今天在北京看新闻'))"

  def words(planted: bool) -> str:
    temp = tmp_path / f"tmp_{planted}"
    temp.mkdir()
    if planted:  # A dictionary of two words, where jieba looks for its cache.
      planted = {w[:k]: int(k == len(w)) for w in ("我们今天", "北京看新闻")
                 for k in range(1, len(w) + 1)}  # Two words and their prefixes.
      (temp / "jieba.cache").write_bytes(marshal.dumps((planted, 2)))
    env = dict(os.environ, TMPDIR=str(temp), CMJAX_CACHE_DIR=str(tmp_path / f"c_{planted}"))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, cwd=REPO, check=True).stdout

  clean = words(planted=False)
  assert "北京" in clean and words(planted=True) == clean
  assert oct((tmp_path / "c_False" / "jieba").stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("train_text, test_text, message", [
    ("。。。", "。。。", r"the training captions hold 1 distinct bigrams .*needs 2 at least"),
    ("北京新闻北京新闻", "上海", "no test caption has any of the"),
])
def test_word_graph_without_words_is_one_clear_error(web_news_dir, tmp_path, train_text,
                                                     test_text, message):
  root = _tiny_release(web_news_dir, tmp_path / "wn")
  for name, text in (("train", train_text), ("test", test_text)):
    for line in open(os.path.join(root, f"{name}set_txt_img_cat.list")).read().split("\n"):
      if line:
        (tmp_path / "wn" / "texts" / f"{line.split(chr(9))[0]}.txt").write_text(text)
  with pytest.raises(data.DataError, match=message):
    data.load_dataset("web_news", root, view="words_graph")


def test_images_of_extreme_shape_are_dropped_before_the_work(web_news_dir, tmp_path):
  """A 114-byte 10000 x 1 PNG resized to a shorter side of 256 would take ~3 GB; an
  image declaring more than MAX_IMAGE_PIXELS is not decoded at all."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from cmjax.data import web_news  # pylint: disable=g-import-not-at-top
  root = _tiny_release(web_news_dir, tmp_path / "wn")
  images = sorted(glob.glob(os.path.join(root, "images", "*", "*.jpg")))
  Image.new("RGB", (10000, 1)).save(images[0], format="PNG")
  Image.new("1", (10000, 5001)).save(images[1], format="PNG")  # 50,005,000 pixels.
  splits, _, dropped, _ = web_news.load_web_news_raw(root, transform=efficientnet.preprocess)
  reasons = sorted(d.reason for d in dropped)
  assert len(dropped) == 2 and sum(len(s.labels) for s in splits.values()) == 6
  assert "image of 10000 x 5001 pixels, more than 50,000,000: not decoded" in reasons
  assert any("10000 x 1 pixels: aspect ratio beyond 16:1" in r for r in reasons)


def test_dropped_pairs_are_warned_about_once(web_news_dir, tmp_path, caplog):
  from cmjax.data import web_news  # pylint: disable=g-import-not-at-top
  root = _tiny_release(web_news_dir, tmp_path / "wn")
  os.remove(sorted(glob.glob(os.path.join(root, "images", "*", "*.jpg")))[0])
  with caplog.at_level("INFO"):
    for _ in range(3):
      web_news.load_web_news_raw(root)
  warnings = [r for r in caplog.records if "dropped 1 of 8 listed pairs" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
  assert sum("the same 1 of 8 pairs dropped" in r.getMessage() for r in caplog.records) == 2


def test_content_words_leave_out_function_words():
  words = ["的", "了", "在", "是", "北京", "经济", "新华社", "一个没见过的词"]
  assert features.content_words(words) == ["北京", "经济", "新华社", "一个没见过的词"]
