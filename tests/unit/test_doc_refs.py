"""Comments and docs point inside the repository: no path to a folder beside the clone
(the shared spec folder the project started from), and every doc/spec/*.md a module
cites is in doc/spec/."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("sarra", "tests", "doc", "man", "scripts", "bench", "debian")
OUTSIDE = re.compile(r"\.\./shared/|/work/shared\b")
CITED = re.compile(r"doc/spec/([\w.-]+\.md)")


def _texts():
    files = [REPO / "README.rst", REPO / "Makefile", REPO / "setup.py"]
    for folder in FOLDERS:
        files += [p for p in (REPO / folder).rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".json")]
    for path in files:
        if path.exists() and path != Path(__file__).resolve():
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def test_nothing_points_outside_the_repository():
    found = ["%s:%d" % (p.relative_to(REPO), text.count("\n", 0, m.start()) + 1)
             for p, text in _texts() for m in OUTSIDE.finditer(text)]
    assert not found, "paths outside the repository (copy what they cite into doc/):\n" + \
        "\n".join(found)


def test_cited_spec_notes_exist():
    cited = {(p.relative_to(REPO), m.group(1)) for p, text in _texts()
             for m in CITED.finditer(text)}
    assert cited, "no module cites doc/spec/ any more: is this test still needed?"
    missing = ["%s cites doc/spec/%s" % c for c in sorted(cited)
               if not (REPO / "doc" / "spec" / c[1]).is_file()]
    assert not missing, "\n".join(missing)
