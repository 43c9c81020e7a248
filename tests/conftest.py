"""Shared fixtures: where the real release data lives."""

import os

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


def pytest_collection_modifyitems(config, items):
  slow = config.getoption("--slow")
  chosen = [item for item in items if ("slow" in item.keywords) == slow]
  left_out = [item for item in items if ("slow" in item.keywords) != slow]
  if left_out:
    config.hook.pytest_deselected(items=left_out)
    items[:] = chosen
