"""The documentation's links: every relative link of README.md, docs/ and reports/
names a file of the repository (and, with `#anchor`, a heading of that page); the
README stays a front page (under 150 lines) that links every page of docs/."""

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted([os.path.join(REPO, "README.md"),
                *glob.glob(os.path.join(REPO, "docs", "*.md")),
                *glob.glob(os.path.join(REPO, "reports", "*.md"))])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def _anchors(path: str) -> set[str]:
  text = re.sub(r"```.*?```", "", open(path, encoding="utf-8").read(), flags=re.S)
  return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def _links(path: str) -> list[str]:
  text = re.sub(r"```.*?```", "", open(path, encoding="utf-8").read(), flags=re.S)
  text = re.sub(r"`[^`\n]*`", "", text)  # Code spans are not links.
  return [m.group(1) for m in LINK.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves(page):
  broken = []
  for link in _links(page):
    if re.match(r"[a-z]+:", link):  # http(s), mailto: not checked (no network).
      continue
    target, _, anchor = link.partition("#")
    path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
    if not os.path.exists(path):
      broken.append(f"{link}: no file {os.path.relpath(path, REPO)}")
    elif anchor and path.endswith(".md") and anchor not in _anchors(path):
      broken.append(f"{link}: no heading #{anchor} in {os.path.relpath(path, REPO)}")
  assert not broken, "\n".join(broken)


def test_readme_is_a_front_page_linking_every_doc():
  readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  assert len(readme.splitlines()) < 150, len(readme.splitlines())
  for page in glob.glob(os.path.join(REPO, "docs", "*.md")):
    assert f"(docs/{os.path.basename(page)})" in readme, f"README does not link {page}"
  assert 'pip install -e ".[test]" && python -m pytest -n 2 -q tests' in readme
