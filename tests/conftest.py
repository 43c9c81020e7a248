"""Shared fixtures: where the real release data lives; the run's compilation cache."""

import os
import shutil
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("CMJAX_DATA_DIR", os.path.join(REPO, "..", "shared", "data"))


def _release_dir(name: str) -> str:
  path = os.path.join(SHARED_DATA, name)
  if not os.path.isdir(path):
    message = f"real dataset {name!r} not found at {path} (set CMJAX_DATA_DIR)"
    if os.environ.get("CI"):
      pytest.fail(message)  # CI has the data: its absence is an error there.
    pytest.skip(message)
  return path


@pytest.fixture(scope="session")
def wikipedia_dir() -> str:
  return _release_dir("wikipedia")


@pytest.fixture(scope="session")
def web_news_dir() -> str:
  return _release_dir("web_news")


# The slow lane: multi-device runs (8 simulated devices, two processes), the
# tuning studies killed and shared by two workers, and the longest end-to-end
# runs (CLI reuse, DBN, pretrained web_news towers), which take minutes on 2 cores.
# The default run leaves them out; `pytest --slow` runs only them. CI runs both (.ci/run), and the README says so.
def pytest_addoption(parser):
  parser.addoption("--slow", action="store_true",
                   help="run only the tests marked slow (CI runs them after the default run)")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: a run of minutes; in the slow lane "
                          "(pytest --slow), not the default run")
  # One JAX persistent compilation cache for the whole run, in a private folder that
  # pytest-xdist's workers and every command a test starts inherit: a program the
  # tests build again (a quick preset, a bad-input case's run) compiles once, not in
  # each process. The first test to need a program still compiles it; compiled code
  # is the same from the cache, so are the numbers.
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ.update(JAX_COMPILATION_CACHE_DIR=tempfile.mkdtemp(prefix="cmjax_test_jax_cache_"),
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2",
                      CMJAX_TEST_CACHE_OWNER=str(os.getpid()))


def pytest_unconfigure(config):
  if os.environ.get("CMJAX_TEST_CACHE_OWNER") == str(os.getpid()):  # The run that made it.
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  slow = config.getoption("--slow")
  chosen = [item for item in items if ("slow" in item.keywords) == slow]
  left_out = [item for item in items if ("slow" in item.keywords) != slow]
  if left_out:
    config.hook.pytest_deselected(items=left_out)
    items[:] = chosen
