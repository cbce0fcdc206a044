"""The documentation is self-contained: no pointers outside the repository, no dead docs links."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a user or contributor reads: the package, docs, README, tests, pipelines, notebooks, setup.
SEARCHED = ("pop_tf", "docs", "README.md", "tests", "pipelines", "notebooks", "setup.py", "saved_models", "benchmarks")
TEXT_SUFFIXES = (".py", ".md", ".ipynb", ".json", ".sh", ".txt", ".ini", ".cfg", ".toml")
# Citations of the team's internal contract files, which the repository does not contain. Built
# from pieces so that this file does not match itself.
FORBIDDEN = re.compile("|".join(["SPEC" + " §", "REFERENCES" + " §", "shared" + "/"]))
# Markdown link targets: [text](target), the target without a title.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DOC_PAGES = ("architecture.md", "savedmodels.md", "metrics.md")


def _files():
    for entry in SEARCHED:
        path = os.path.join(ROOT, entry)
        if os.path.isfile(path):
            yield path
            continue
        for folder, folders, names in os.walk(path):
            folders[:] = sorted(f for f in folders if not f.startswith(".") and f != "__pycache__")
            for name in sorted(names):
                if name.endswith(TEXT_SUFFIXES):
                    yield os.path.join(folder, name)


def _markdown_pages():
    pages = [os.path.join(ROOT, "README.md")]
    docs = os.path.join(ROOT, "docs")
    pages += [os.path.join(docs, n) for n in sorted(os.listdir(docs)) if n.endswith(".md")]
    return pages


def _anchors(page: str) -> set:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    in_code = False
    with open(page, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            if in_code or not line.startswith("#"):
                continue
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return anchors


def test_no_citation_points_outside_the_repository():
    hits = []
    for path in _files():
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if FORBIDDEN.search(line):
                    hits.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not hits, "citations of files outside the repository:\n" + "\n".join(hits)


def test_the_contract_pages_exist_and_readme_links_them():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    top = readme[:readme.index("\n## ")]  # before the first section: where a newcomer looks
    for page in DOC_PAGES:
        assert os.path.isfile(os.path.join(ROOT, "docs", page)), page
        assert f"(docs/{page})" in readme, f"README.md does not link docs/{page}"
    assert "(docs/architecture.md)" in top


@pytest.mark.parametrize("page", _markdown_pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_docs_link_resolves(page):
    """Relative links in README.md and docs/*.md name existing files, and their #anchors exist."""
    with open(page, encoding="utf-8") as f:
        text = f.read()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(resolved):
            broken.append(f"{target} (no file {os.path.relpath(resolved, ROOT)})")
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {os.path.relpath(resolved, ROOT)})")
    assert not broken, f"{os.path.relpath(page, ROOT)} has broken links: " + ", ".join(broken)


def test_docs_pointers_in_code_name_existing_pages():
    """A comment's pointer such as 'docs/savedmodels.md, Translator' names a page that exists."""
    missing = set()
    for path in _files():
        if not path.endswith((".py", ".ipynb")):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for page in re.findall(r"docs/([\w.-]+\.md)", f.read()):
                if not os.path.isfile(os.path.join(ROOT, "docs", page)):
                    missing.add(f"{os.path.relpath(path, ROOT)} → docs/{page}")
    assert not missing, "pointers to pages docs/ does not have: " + ", ".join(sorted(missing))
