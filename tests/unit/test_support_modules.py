"""Test modules never import one another: what several of them share lives in a support
module (tests/support/, tests/integration/*kit.py, servers.py, procs.py, conftest.py), so
that a test module can be read, moved or deleted on its own."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:             # from tests.integration import test_x
                yield node.lineno, "%s.%s" % (node.module, alias.name)


def test_no_module_imports_a_test_module():
    found = []
    for folder in ("tests", "bench", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for lineno, name in _imported_modules(path):
                parts = name.split(".")
                if parts[0] == "tests" and any(p.startswith("test_") for p in parts[1:]):
                    found.append("%s:%d imports %s" % (path.relative_to(REPO), lineno, name))
    assert not found, ("a test module's helpers belong in a support module (tests/support/ "
                       "or tests/integration/*kit.py):\n" + "\n".join(found))


def test_support_modules_hold_no_tests():
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name.startswith(("test_", "conftest")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found += ["%s: %s" % (path.relative_to(REPO), n.name) for n in tree.body
                  if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert not found, "tests in a support module are never collected:\n" + "\n".join(found)
