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
