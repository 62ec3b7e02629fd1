"""Configuration-file actions shared by every sr_<component> command (components.md §1).

list, add, remove, edit, enable, disable.  No argv parsing here: each function takes the
already parsed arguments, prints one-line messages (errors on stderr) and returns the exit
code (0 ok, 1 failed, 2 usage/configuration error).
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from sarra import paths

CONF = ".conf"
OFF = ".conf.off"
# Files of ~/.config/sarra/ that `edit` accepts by name.
TOP_LEVEL = {"credentials": "credentials.conf", "default": "default.conf",
             "admin": "admin.conf"}


class ActionError(Exception):
    """An action that cannot be done: one-line message and the exit code to use."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _prog(component: str) -> str:
    return paths.program_name(component)


def _dir(component: str) -> Path:
    return Path(paths.component_config_dir(component))


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _fail(e: ActionError) -> int:
    _err(str(e))
    return e.code


def _base_name(name: str) -> str:
    """'x', 'x.conf' or 'x.conf.off' -> 'x'."""
    for ext in (OFF, CONF):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def list_configs(component: str) -> List[Tuple[str, bool]]:
    """(name, enabled) of every configuration of the component, sorted by name."""
    try:
        entries = [p for p in _dir(component).iterdir() if p.is_file()]
    except FileNotFoundError:
        return []
    found = {}
    for p in entries:
        if p.name.endswith(OFF):
            found.setdefault(p.name[: -len(OFF)], False)
        elif p.name.endswith(CONF):
            found[p.name[: -len(CONF)]] = True
    return sorted(found.items())


def resolve(component: str, name: str, disabled: bool = False) -> Path:
    """Path of configuration 'name', 'name.conf' or a path to a file.

    disabled: also accept '<name>.conf.off'.  Raises ActionError (exit 2) when not found.
    """
    if not name:
        raise ActionError(f"{_prog(component)}: no configuration name given", 2)
    if os.sep in name or name.startswith("."):
        p = Path(name).expanduser()
        if p.is_file():
            return p
        raise ActionError(f"{_prog(component)}: configuration file not found: {p}", 2)
    d = _dir(component)
    base = _base_name(name)
    candidates = [d / (base + CONF)]
    if disabled or name.endswith(OFF):
        candidates.append(d / (base + OFF))
    for p in candidates:
        if p.is_file():
            return p
    hint = ""
    if not disabled and (d / (base + OFF)).is_file():
        hint = f" (it is disabled: {_prog(component)} enable {base})"
    raise ActionError(f"{_prog(component)}: no configuration {base!r} in {d}{hint}; "
                      f"see: {_prog(component)} list", 2)


def list_action(component: str, name: Optional[str] = None) -> int:
    """Print the configurations (name and enabled/disabled), or the content of one.

    name 'plugins' (when no configuration has that name) lists the plugin files.
    """
    prog = _prog(component)
    if name:
        try:
            path = resolve(component, name, disabled=True)
        except ActionError as e:
            if name == "plugins":
                return _list_plugins()
            return _fail(e)
        try:
            sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
        except OSError as e:
            _err(f"{prog}: cannot read {path}: {e.strerror or e}")
            return 1
        return 0
    configs = list_configs(component)
    d = _dir(component)
    if not configs:
        print(f"{prog}: no configuration in {d}")
        _print_examples(component)
        return 0
    print(f"{prog} configurations in {d}:")
    width = max(len(n) for n, _ in configs)
    for n, enabled in configs:
        print(f"  {n:<{width}}  {'enabled' if enabled else 'disabled'}")
    _print_examples(component)
    return 0


def _list_plugins() -> int:
    for d in paths.plugin_dirs():
        try:
            names = sorted(p.name for p in Path(d).iterdir()
                           if p.suffix == ".py" and p.name != "__init__.py")
        except FileNotFoundError:
            continue
        print(f"plugins in {d}:")
        for n in names:
            print(f"  {n}")
    return 0


def _examples_dirs(component: str) -> List[Path]:
    """The packaged examples: sarra/examples/<component>/, then sarra/examples/."""
    pkg = Path(__file__).resolve().parent.parent
    comp = paths.canonical_component(component)
    return [pkg / "examples" / comp, pkg / "examples"]


def list_examples(component: str) -> List[str]:
    """Names (without .conf) of the packaged example configurations of a component."""
    d = _examples_dirs(component)[0]
    try:
        return sorted(p.name[:-len(CONF)] for p in d.iterdir() if p.name.endswith(CONF))
    except OSError:
        return []


def _print_examples(component: str) -> None:
    names = list_examples(component)
    if names:
        print(f"examples in {_examples_dirs(component)[0]} "
              f"({_prog(component)} add <name> copies one):")
        print("  " + "  ".join(names))


def _find_source(component: str, file: str) -> Optional[Path]:
    p = Path(file).expanduser()
    tries = [p]
    if not file.endswith(CONF) and not file.endswith(".inc"):
        tries.append(Path(file + CONF).expanduser())
    if os.sep not in file:
        for d in _examples_dirs(component):
            tries += [d / t.name for t in tries[:2]]
    for t in tries:
        if t.is_file():
            return t
    return None


def add(component: str, file: str) -> int:
    """Copy a configuration file (path, or name in cwd or the packaged examples) into the
    component's configuration directory; never overwrite."""
    prog = _prog(component)
    src = _find_source(component, file)
    if src is None:
        why = "is a directory, not a configuration file" if os.path.isdir(
            os.path.expanduser(file)) else "file not found"
        _err(f"{prog}: add: {why}: {file}")
        return 1
    name = src.name
    if not (name.endswith(CONF) or name.endswith(".inc") or name.endswith(OFF)):
        name += CONF
    d = _dir(component)
    dest = d / name
    base = _base_name(name)
    clashes = [d / (base + CONF), d / (base + OFF)] if name.endswith(CONF) or \
        name.endswith(OFF) else [dest]
    for existing in clashes:
        if existing.exists():
            _err(f"{prog}: add: {existing} already exists (remove it first, or use edit)")
            return 1
    try:
        d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    except OSError as e:
        _err(f"{prog}: add: cannot copy {src} to {dest}: {e.strerror or e}")
        return 1
    print(f"{prog}: added {dest}")
    return 0


def remove(component: str, name: str) -> int:
    """Delete a configuration (enabled or disabled) and its state directory.

    Stopping the instances is the caller's job; if some still run, the state directory
    (their pid files) is kept and a warning printed.
    """
    prog = _prog(component)
    try:
        path = resolve(component, name, disabled=True)
    except ActionError as e:
        return _fail(e)
    base = _base_name(path.name)
    try:
        path.unlink()
    except OSError as e:
        _err(f"{prog}: remove: cannot delete {path}: {e.strerror or e}")
        return 1
    print(f"{prog}: removed {path}")
    state = Path(paths.state_dir(component, base, create=False))
    if state.is_dir():
        from sarra.ops import instances
        running = instances.status(component, base).running
        if running:
            _err(f"{prog}: warning: {len(running)} instance(s) of {base} still running; "
                 f"state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)
            print(f"{prog}: warning: removed state directory {state}")
    return 0


def _editor() -> List[str]:
    value = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return shlex.split(value) or ["vi"]


def edit(component: str, name: str) -> int:
    """Open a configuration in $EDITOR (default vi).

    'credentials', 'default' and 'admin' name the files of ~/.config/sarra/; another name
    that does not exist yet becomes a new '<name>.conf'.
    """
    prog = _prog(component)
    if name in TOP_LEVEL:
        path = Path(paths.config_dir()) / TOP_LEVEL[name]
    else:
        try:
            path = resolve(component, name, disabled=True)
        except ActionError:
            if os.sep in name:
                _err(f"{prog}: edit: file not found: {name}")
                return 2
            path = _dir(component) / (_base_name(name) + CONF)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "credentials" and not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as e:
        _err(f"{prog}: edit: cannot create {path}: {e.strerror or e}")
        return 1
    cmd = _editor() + [str(path)]
    try:
        rc = subprocess.call(cmd)
    except OSError as e:
        _err(f"{prog}: edit: cannot run editor {cmd[0]!r}: {e.strerror or e} "
             f"(set EDITOR)")
        return 2
    if rc != 0:
        _err(f"{prog}: edit: editor {cmd[0]!r} exited with code {rc} on {path}")
        return 1
    return 0


def _rename(component: str, name: str, enable_it: bool) -> int:
    prog = _prog(component)
    verb = "enable" if enable_it else "disable"
    if not name or os.sep in name:
        _err(f"{prog}: {verb}: give a configuration name, not a path: {name!r}")
        return 2
    d = _dir(component)
    base = _base_name(name)
    on, off = d / (base + CONF), d / (base + OFF)
    src, dst = (off, on) if enable_it else (on, off)
    if not src.is_file():
        if dst.is_file():
            print(f"{prog}: {base} is already {verb}d")
            return 0
        _err(f"{prog}: {verb}: no configuration {base!r} in {d}; see: {prog} list")
        return 2
    if dst.exists():
        _err(f"{prog}: {verb}: both {on.name} and {off.name} exist in {d}; "
             f"remove one of them")
        return 1
    try:
        os.rename(src, dst)
    except OSError as e:
        _err(f"{prog}: {verb}: cannot rename {src} to {dst}: {e.strerror or e}")
        return 1
    print(f"{prog}: {base} {verb}d")
    return 0


def enable(component: str, name: str) -> int:
    """Rename <name>.conf.off to <name>.conf."""
    return _rename(component, name, True)


def disable(component: str, name: str) -> int:
    """Rename <name>.conf to <name>.conf.off."""
    return _rename(component, name, False)


def rename_action(component: str, old: Optional[str], extra: List[str]) -> int:
    """``rename <old> <new>`` (v2's order): the configuration file (enabled or disabled),
    its state directory and its logs take the new name (sarra/ops/rename.py).  Refused
    while instances of it run: they hold their pid files and logs under the old name, and
    `stop` would no longer find them; stop it, rename, start it again."""
    prog = _prog(component)
    if old is None or len(extra) != 1:
        _err(f"{prog}: rename: give the configuration's name and its new name: "
             f"{prog} rename <old> <new>")
        return 2
    new = _base_name(extra[0])
    for n in (old, new):
        if not n or os.sep in n or n.startswith("."):
            _err(f"{prog}: rename: give configuration names, not paths: {n!r}")
            return 2
    try:
        path = resolve(component, old, disabled=True)
    except ActionError as e:
        return _fail(e)
    base = _base_name(path.name)
    if new == base:
        print(f"{prog}: {base} is already named so")
        return 0
    ext = OFF if path.name.endswith(OFF) else CONF
    d = path.parent
    for clash in (d / (new + CONF), d / (new + OFF)):
        if clash.exists():
            _err(f"{prog}: rename: {clash} already exists (remove it first)")
            return 1
    from sarra.config import parser
    from sarra.ops import instances, rename
    try:        # the configuration's statehost: where its state and logs are
        parser.load(component, str(path), warn_unknown=False)
    except parser.ConfigError:
        parser.use_default_state_host()
    running = instances.status(component, base).running
    if running:
        _err(f"{prog}: rename: {len(running)} instance(s) of {base} running; stop them "
             f"first ({prog} stop {base}), then rename and start {new}")
        return 1
    try:
        with instances.locked(component, base):
            rename.planned(component, base, new)        # a clash: refused before any move
            os.rename(path, d / (new + ext))
            moved = rename.move(component, base, new)
    except rename.RenameError as e:
        _err(f"{prog}: rename: {e}")
        return 1
    except OSError as e:
        _err(f"{prog}: rename: cannot rename {path}: {e.strerror or e}")
        return 1
    print(f"{prog}: renamed {path} to {d / (new + ext)}")
    if moved:
        print(f"{prog}: moved {len(moved)} state and log file(s) of {base} to {new}")
    return 0
