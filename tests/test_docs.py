"""What a reader finds in the project's text: a complete map of the package, and words of the
project only (no tracker numbers, no path outside the project)."""
import re

import pytest

from conftest import ROOT

PACKAGE = ROOT / "fscal_edu"
READ_BY_USERS = ["README.md", "docs", "fscal_edu", "tests", "bench", "notebooks", "data_samples/README.md"]
TEXT = {".py", ".md", ".ipynb", ".toml", ".yml"}


def user_files():
    for entry in READ_BY_USERS:
        path = ROOT / entry
        for f in ([path] if path.is_file() else sorted(path.rglob("*"))):
            if f.is_file() and f.suffix in TEXT and ".ipynb_checkpoints" not in f.parts:
                yield f


def ownership_table() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    start = text.index("## Who owns which step")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_module_of_the_package_has_a_row_in_the_architecture_doc():
    table = ownership_table()
    modules = [p.relative_to(PACKAGE).as_posix() for p in sorted(PACKAGE.rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py")]
    missing = [m for m in modules if f"`{m}`" not in table]
    assert not missing, f"docs/architecture.md's ownership table does not name {missing}"
    named = {n for n in re.findall(r"`([a-z_/]+\.py)`", table) if not n.startswith("tests/")}
    gone = sorted(n for n in named if not (PACKAGE / n).is_file())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


@pytest.mark.parametrize("pattern,what,skip", [
    (re.compile(r"\bissues? #?[0-9]+", re.I), "a tracker's issue number", ()),
    # tests may read the developers' real annotation files, and skip where they are absent
    (re.compile(r"\.\./shared\b|\bshared/(?:real|seeds|DESIGN)"), "a folder outside the project", ("tests",)),
])
def test_no_words_a_reader_cannot_follow(pattern, what, skip):
    hits = []
    for f in user_files():
        if f.relative_to(ROOT).parts[0] in skip:
            continue
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and f.name != "test_docs.py":
                hits.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, f"{what} in what users read:\n" + "\n".join(hits[:20])
