"""The layers of sarra/ hold (issue 18, item 2): read every module's imports with ast.

Layers, low to high; a module imports its own package and lower layers only:

  0  sarra           the foundation: message (v02), checksum, paths, plugin (the plugin API)
  1  sarra.config    options table, parser, variables, credentials, broker URLs, argv
  1  sarra.transfer  one driver per protocol, bounds, progress
  2  sarra.broker    AMQP client, connection, frames, management API
  3  sarra.ops       instances, supervisor, health, logs, process identity, sr_police
  4  sarra.flow      the engine and its steps
  5  sarra.watch     sr_watch
  5  sarra.poll      sr_poll
  6  sarra.plugins   the stock plugins (they may use any core module)
  7  sarra.commands  argv, printing for a person, exit codes

Two packages of one rank do not import each other.  The core (ranks 0-5) never imports
sarra.commands, never prints for a person and never exits.  Every import counts, the
ones inside functions too.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SARRA = ROOT / "sarra"

LAYERS = {
    "sarra": 0,
    "sarra.config": 1,
    "sarra.transfer": 1,
    "sarra.broker": 2,
    "sarra.ops": 3,
    "sarra.flow": 4,
    "sarra.watch": 5,
    "sarra.poll": 5,
    "sarra.plugins": 6,
    "sarra.commands": 7,
}
CORE_TOP = 5

# Crossings that are meant: (importer, imported) -> why.
ALLOWED = {
    ("sarra.config.hints", "sarra.plugins"):
        "reads the stock plugins' OPTIONS tuples as data, to know their option names",
}

# Crossings still to remove (none left: issue 18 item 2 moved the sr_watch publisher out
# of sarra/commands/post.py into sarra/flow/publisher.py).  Delete an entry when its
# import goes: the test says so.
PENDING = set()

# Core modules that still print or exit: (module, what) pairs (none left).
PENDING_EXITS = set()

# Exits in the core that are meant: (module, what) -> why.
ALLOWED_EXITS = {
    ("sarra.ops.instances", "os._exit"):
        "instance_signals' handler of a SECOND SIGTERM/SIGINT, which a command installs in "
        "its own process: the process must end at once even when its main thread is blocked "
        "in a transfer or a hook, and a SystemExit raised from a signal handler can be "
        "caught or delayed by the code it lands in; the first signal already asked the "
        "engine to stop.  It is the process's signal policy, not an exit of the engine",
}

#: calls that print for a person or end the process
PRINTS_OR_EXITS = ("print", "sys.exit", "os._exit", "os.abort", "exit", "quit",
                   "sys.stdout.write", "sys.stderr.write", "sys.stdout.writelines",
                   "sys.stderr.writelines")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, root: Path = ROOT) -> bool:
    p = root.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports_of(path: Path, root: Path = ROOT):
    """(line, imported module) for every import of sarra in the file, lazy ones too."""
    name = module_name(path) if root == ROOT else ".".join(
        path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:        # `from sarra import flow` imports sarra.flow
                sub = f"{mod}.{a.name}"
                yield node.lineno, sub if is_module(sub, root) else mod


def package_of(module: str) -> str:
    best = "sarra"
    for pkg in LAYERS:
        if (module == pkg or module.startswith(pkg + ".")) and len(pkg) > len(best):
            best = pkg
    return best


def crossings(root: Path = ROOT):
    """(importer, imported, line) for every import against the layer order."""
    found = []
    for path in sorted((root / "sarra").rglob("*.py")):
        src = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        src_pkg = package_of(src)
        for line, target in imports_of(path, root):
            if target != "sarra" and not target.startswith("sarra."):
                continue
            dst_pkg = package_of(target)
            if dst_pkg == src_pkg:
                continue
            if LAYERS[dst_pkg] > LAYERS[src_pkg] or (
                    LAYERS[dst_pkg] == LAYERS[src_pkg] and dst_pkg != "sarra"):
                found.append((src, target, line))
    return found


def test_every_package_has_a_layer():
    pkgs = {module_name(p.parent) for p in SARRA.rglob("__init__.py")}
    assert pkgs <= set(LAYERS), f"packages without a layer: {sorted(pkgs - set(LAYERS))}"


def test_no_import_goes_up_a_layer():
    bad = [f"{s} (line {n}) imports {t}" for s, t, n in crossings()
           if (s, t) not in PENDING and (s, package_of(t)) not in ALLOWED]
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_core_never_imports_the_commands():
    bad = [f"{s} (line {n}) imports {t}" for s, t, n in crossings()
           if package_of(t) == "sarra.commands" and (s, t) not in PENDING]
    assert not bad, "core modules importing sarra.commands:\n" + "\n".join(bad)


def test_pending_crossings_still_exist():
    now = {(s, t) for s, t, _ in crossings()}
    gone = sorted(PENDING - now)
    assert not gone, f"these crossings are gone: remove them from PENDING: {gone}"


def _exits_and_prints(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    main_blocks = [n for n in tree.body if isinstance(n, ast.If)
                   and "__main__" in ast.unparse(n.test)]
    skip = {id(x) for b in main_blocks for x in ast.walk(b)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Call):
            f = ast.unparse(node.func)
            if f in PRINTS_OR_EXITS:
                yield node.lineno, f
        elif isinstance(node, ast.ImportFrom) and node.module in ("sys", "os", "builtins"):
            for a in node.names:        # `from sys import exit` then exit(...)
                if f"{node.module}.{a.name}" in PRINTS_OR_EXITS + ("builtins.print",
                                                                    "builtins.exit"):
                    yield node.lineno, f"{node.module}.{a.name}"
        elif isinstance(node, ast.Raise) and node.exc is not None and \
                ast.unparse(node.exc).split("(")[0] in ("SystemExit", "KeyboardInterrupt"):
            yield node.lineno, "raise SystemExit"
        elif isinstance(node, ast.ClassDef) and any(
                ast.unparse(b).endswith("SystemExit") for b in node.bases):
            yield node.lineno, f"class {node.name}(SystemExit)"


def test_core_never_prints_nor_exits():
    bad, seen = [], set()
    for path in sorted(SARRA.rglob("*.py")):
        mod = module_name(path)
        if LAYERS[package_of(mod)] > CORE_TOP:
            continue
        for line, what in _exits_and_prints(path):
            seen.add((mod, what))
            if (mod, what) not in PENDING_EXITS and (mod, what) not in ALLOWED_EXITS:
                bad.append(f"{mod} (line {line}): {what}")
    assert not bad, "the core prints or exits:\n" + "\n".join(bad)
    gone = sorted(PENDING_EXITS - seen)
    assert not gone, f"these are gone: remove them from PENDING_EXITS: {gone}"


@pytest.mark.parametrize("src, line, target", [
    ("sarra/flow/x.py", "from sarra.commands import common", "sarra.commands.common"),
    ("sarra/broker/x.py", "from sarra.flow import work", "sarra.flow.work"),
    ("sarra/config/x.py", "def f():\n    import sarra.transfer.http", "sarra.transfer.http"),
    ("sarra/ops/x.py", "from ..watch import state", "sarra.watch.state"),
])
def test_a_crossing_is_seen(tmp_path, src, line, target):
    """The checker itself: a planted upward import is found, lazy and relative ones too."""
    for pkg in ("sarra", "sarra/flow", "sarra/broker", "sarra/config", "sarra/ops",
                "sarra/watch", "sarra/commands", "sarra/transfer"):
        (tmp_path / pkg).mkdir(exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for mod in ("commands/common", "flow/work", "transfer/http", "watch/state"):
        (tmp_path / "sarra" / f"{mod}.py").write_text("")
    (tmp_path / src).write_text(line + "\n")
    found = {(s, t) for s, t, _ in crossings(tmp_path)}
    assert (src[:-3].replace("/", "."), target) in found


def test_allowed_exits_still_exist():
    seen = {(module_name(p), what) for p in SARRA.rglob("*.py") for _, what in _exits_and_prints(p)}
    gone = sorted(set(ALLOWED_EXITS) - seen)
    assert not gone, f"these are gone: remove them from ALLOWED_EXITS: {gone}"


@pytest.mark.parametrize("code, what", [
    ("print('hello')", "print"),
    ("import sys\ndef f():\n    sys.exit(2)", "sys.exit"),
    ("import sys\nsys.stderr.write('x')", "sys.stderr.write"),
    ("def f():\n    exit(1)", "exit"),
    ("import os\nos._exit(3)", "os._exit"),
    ("from sys import exit", "sys.exit"),
    ("raise SystemExit(2)", "raise SystemExit"),
    ("def f():\n    raise SystemExit", "raise SystemExit"),
    ("class Refused(SystemExit):\n    pass", "class Refused(SystemExit)"),
    ("import builtins\nclass Refused(builtins.SystemExit):\n    pass",
     "class Refused(SystemExit)"),
])
def test_a_print_or_exit_is_seen(tmp_path, code, what):
    """The checker itself: a planted print or exit is found, inside functions too."""
    path = tmp_path / "x.py"
    path.write_text(code + "\n")
    assert what in {w for _, w in _exits_and_prints(path)}


def test_a_print_under_main_is_not_the_cores(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("import sys\nif __name__ == '__main__':\n    print('x')\n    sys.exit(0)\n")
    assert not list(_exits_and_prints(path))
