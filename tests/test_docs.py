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


# Published numbers quoted beside ours come from the anchors file beside the repository.
ANCHORS = os.path.join(REPO, "..", "shared", "docs", "ANCHORS.md")
NUMBER = re.compile(r"(?<![\d.])\d+\.\d{4}(?!\d)")


@pytest.mark.parametrize("page", PAGES[:1] + [p for p in PAGES if "/docs/" in p],
                         ids=lambda p: os.path.relpath(p, REPO))
def test_every_quoted_figure_is_in_a_report(page):
  """A 4-decimal figure in README.md or docs/ is one a committed report holds (or a
  published anchor): the pages quote the reports, which their commands regenerate."""
  sources = sorted(glob.glob(os.path.join(REPO, "reports", "**", "*.md"), recursive=True))
  sources += [ANCHORS] if os.path.isfile(ANCHORS) else []
  known = set()
  for source in sources:
    known |= set(NUMBER.findall(open(source, encoding="utf-8").read()))
  quoted = NUMBER.findall(open(page, encoding="utf-8").read())
  assert quoted or "/docs/" in page
  assert not sorted(set(quoted) - known), "figures no report holds"


def test_notebook_output_check_wants_a_bar_and_no_absl_lines():
  nbformat = pytest.importorskip("nbformat")
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(REPO, "tests"))
  import run_notebooks  # pylint: disable=g-import-not-at-top

  def notebook(*outputs):
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [nbformat.v4.new_output(**o) for o in outputs]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("x"), cell])

  bar = dict(output_type="stream", name="stdout",
             text="\rrun: stage 'pretrain':  40%|####      | 200/500 [00:06<00:08, 35step/s]")
  widget = dict(output_type="display_data",
                data={run_notebooks.WIDGET: {"model_id": "1"}, "text/plain": "0%"})
  absl_default = dict(output_type="stream", name="stderr",
                      text="INFO:absl:run: stage 'pretrain': compiling its step\n")
  absl_own = dict(output_type="stream", name="stderr",
                  text="I1206 21:15:01.123456 140 train.py:371] run: stage 'x': step 3\n")
  plain = dict(output_type="stream", name="stdout", text="run: stage 'x': compiling\n")
  assert run_notebooks.output_problem(notebook(bar, plain)) is None
  assert run_notebooks.output_problem(notebook(widget)) is None
  assert "no progress bar" in run_notebooks.output_problem(notebook(plain))
  assert "cell 1: an absl log line on stderr: \"INFO:absl:run" in (
      run_notebooks.output_problem(notebook(bar, absl_default)))
  assert "I1206 21:15:01" in run_notebooks.output_problem(notebook(absl_own, bar))
