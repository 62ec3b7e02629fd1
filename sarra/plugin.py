"""Plugins: plain callables attached to hooks, loaded by name or path.

Facts: doc/spec/plugins.md.

Every hook callable is called as ``func(parent, *args)``; the current message is
``parent.msg``.  For filtering hooks True/None = continue, False = stop.

Where a plugin name is looked up (:func:`load`), first match wins:

1. ``pkg.mod:func`` - a Python import path and the callable in it.
2. a path to a ``.py`` file (contains ``/`` or names an existing file).
3. ``<dir>/<name>`` or ``<dir>/<name>.py`` in each search directory
   (``~/.config/sarra/plugins`` first; the caller passes the list).
4. a stock plugin: module ``sarra.plugins.<name>`` (v2 names like ``msg_delay`` are aliased).

What a plugin file provides:

* modern style: a module-level function named after the hook (``def on_file(parent):``),
  or a single callable named ``main``;
* v2 single hook: the file runs with a global ``self`` (a registration object that reads
  missing attributes from the parent, e.g. ``self.logger``) and assigns
  ``self.on_message = obj.on_message``;
* v2 multi-hook: the file sets ``self.plugin = 'ClassName'``; ``ClassName(parent)`` is
  instantiated and each of its methods named after a hook is used (option ``plugin``).
  A class with ``registered_as()`` restricts its ``do_*`` methods to those URL schemes.

:class:`Hooks` keeps the ordered list of callables per hook and runs them; a plugin that
raises is logged once (hook, plugin name, relpath of ``parent.msg``) and never breaks the
flow: for filtering hooks it counts as False, for the others it is ignored.
"""

import importlib
import logging
import os
import re
import traceback
import types
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set

HOOKS = (
    "on_start", "on_stop", "on_heartbeat", "on_message", "on_part", "on_file", "on_post",
    "on_report", "on_data", "do_download", "do_send", "destfn_script",
    # also known to v2 (poll/watch/transports), accepted for compatibility
    "on_watch", "on_line", "on_html_page", "do_poll", "do_get", "do_put", "do_task",
)
#: hooks whose False drops the message/file; an exception in them counts as False
FILTER_HOOKS = frozenset({"on_message", "on_part", "on_file", "on_post", "on_report",
                          "on_watch", "on_line"})
#: hooks whose return value is ignored (every callable runs)
IGNORED_RESULT = frozenset({"on_start", "on_stop"})
#: v2 names of stock plugins that live under another module name here
STOCK_ALIASES = {"msg_delay": "delay", "msg_fdelay": "delay"}

_STOCK_PACKAGE = "sarra.plugins"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NONE = ("none", "off")


class PluginError(Exception):
    """A plugin that cannot be found or loaded, or that defines no function for a hook."""


def get_option(parent, name: str, default=None):
    """A plugin option's value: ``parent.get_option`` when the parent has it, else the
    attribute.  Unknown config options are lists of strings (one per occurrence): the last
    occurrence is returned."""
    value = default
    getter = getattr(parent, "get_option", None)
    if callable(getter):
        try:
            value = getter(name, default)
        except Exception:
            value = getattr(parent, name, default)
    elif parent is not None:
        value = getattr(parent, name, default)
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else default
    return default if value is None else value


def plugin_logger(parent, name: str) -> logging.Logger:
    lg = getattr(parent, "logger", None)
    return lg if lg is not None else logging.getLogger(f"{_STOCK_PACKAGE}.{name}")


def default_search_dirs() -> List[str]:
    try:
        from sarra import paths
        return [d for d in paths.plugin_dirs()]
    except ImportError:   # pragma: no cover - paths is part of the package
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        return [os.path.join(base, "sarra", "plugins")]


# ------------------------------------------------------------------ loading

class _Registrar:
    """The ``self`` a v2 plugin file runs with: records hook assignments and ``plugin``,
    reads anything else from the parent."""

    def __init__(self, parent):
        object.__setattr__(self, "_parent", parent)
        object.__setattr__(self, "_hooks", {})
        object.__setattr__(self, "_plugin", None)

    def __getattr__(self, name):
        hooks = object.__getattribute__(self, "_hooks")
        if name in hooks:
            return hooks[name]
        parent = object.__getattribute__(self, "_parent")
        if parent is not None and hasattr(parent, name):
            return getattr(parent, name)
        if name == "logger":
            return logging.getLogger(_STOCK_PACKAGE)
        if name == "declare_option":        # parent without option declarations
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in HOOKS:
            self._hooks[name] = value
        elif name == "plugin":
            object.__setattr__(self, "_plugin", value)
        elif self._parent is not None:
            setattr(self._parent, name, value)
        else:
            object.__setattr__(self, name, value)


class _Loaded:
    """What one plugin source provides: callables per hook, and optional schemes."""

    def __init__(self, name: str, hooks: Dict[str, Callable], schemes=None, main=None):
        self.name = name
        self.hooks = hooks
        self.schemes = schemes
        self.main = main


def _stock_name(name: str) -> str:
    base = name[:-3] if name.endswith(".py") else name
    return STOCK_ALIASES.get(base, base)


def _find_file(name: str, search_dirs: Iterable[str]) -> Optional[str]:
    if os.sep in name or "/" in name:
        path = os.path.expanduser(name)
        if os.path.isfile(path):
            return path
        raise PluginError(f"plugin {name}: no such file")
    if name.endswith(".py") and os.path.isfile(name):
        return name
    stock_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")
    for d in search_dirs:
        if os.path.abspath(d) == stock_dir:
            continue           # the package directory: imported as a module instead
        for cand in (os.path.join(d, name), os.path.join(d, name + ".py")):
            if os.path.isfile(cand):
                return cand
    return None


def _exec_file(name: str, path: str, parent) -> types.ModuleType:
    try:
        with open(path, "rb") as f:
            source = f.read()
        code = compile(source, path, "exec")
    except OSError as e:
        raise PluginError(f"plugin {name}: cannot read {path}: {e.strerror}") from None
    except SyntaxError as e:
        raise PluginError(f"plugin {name}: {path}:{e.lineno}: SyntaxError: {e.msg}") from None
    modname = "sarra_plugin_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    mod = types.ModuleType(modname)
    mod.__file__ = path
    mod.self = _Registrar(parent)
    try:
        exec(code, mod.__dict__)
    except Exception as e:
        raise PluginError(f"plugin {name}: {path}:{_lineno(e, path)}: "
                          f"{type(e).__name__}: {e}") from None
    return mod


def _lineno(exc: BaseException, path: str) -> int:
    line = 0
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == path:
            line = lineno
    return line


def _from_module(name: str, mod, parent) -> _Loaded:
    reg = mod.__dict__.get("self")
    if isinstance(reg, _Registrar):
        if reg._plugin:
            cls = mod.__dict__.get(reg._plugin) if isinstance(reg._plugin, str) else reg._plugin
            if not callable(cls):
                raise PluginError(f"plugin {name}: self.plugin names {reg._plugin!r}, "
                                  "which the file does not define")
            try:
                obj = cls(parent)
            except Exception as e:
                raise PluginError(f"plugin {name}: {getattr(cls, '__name__', cls)}(parent) "
                                  f"failed: {type(e).__name__}: {e}") from None
            hooks = dict(reg._hooks)
            for h in HOOKS:
                m = getattr(obj, h, None)
                if callable(m):
                    hooks.setdefault(h, m)
            schemes = None
            reg_as = getattr(obj, "registered_as", None)
            if callable(reg_as):
                try:
                    schemes = [str(s) for s in reg_as()]
                except Exception as e:
                    raise PluginError(f"plugin {name}: registered_as() failed: "
                                      f"{type(e).__name__}: {e}") from None
            return _Loaded(name, hooks, schemes)
        if reg._hooks:
            return _Loaded(name, dict(reg._hooks))
    hooks = {h: f for h in HOOKS if callable(f := mod.__dict__.get(h))}
    main = mod.__dict__.get("main")
    return _Loaded(name, hooks, main=main if callable(main) else None)


def _load_source(name: str, search_dirs: Sequence[str], parent) -> _Loaded:
    name = str(name).strip()
    if not name:
        raise PluginError("plugin name is empty")
    if ":" in name and os.sep not in name:
        modname, _, attr = name.partition(":")
        try:
            mod = importlib.import_module(modname)
        except Exception as e:
            raise PluginError(f"plugin {name}: cannot import {modname}: "
                              f"{type(e).__name__}: {e}") from None
        func = getattr(mod, attr, None)
        if not callable(func):
            raise PluginError(f"plugin {name}: {modname} has no callable {attr!r}")
        return _Loaded(name, {}, main=func)
    path = _find_file(name, search_dirs)
    if path is not None:
        return _from_module(name, _exec_file(name, path, parent), parent)
    stock = _stock_name(name)
    if _IDENT.match(stock):
        modname = f"{_STOCK_PACKAGE}.{stock}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise PluginError(f"plugin {name}: {e}") from None
        except Exception as e:
            raise PluginError(f"plugin {name}: cannot import {modname}: "
                              f"{type(e).__name__}: {e}") from None
        else:
            return _from_module(name, mod, parent)
    where = ", ".join(search_dirs) or "no directory"
    raise PluginError(f"plugin {name}: not found (looked in {where} and the stock plugins)")


def declared_options(plugins: Dict[str, Sequence[str]], search_dirs=None) -> Set[str]:
    """Names of the options the configured plugins (hook -> names) read, so that they are
    not reported as unknown: a module's OPTIONS tuple (stock plugins declare theirs); for
    a plugin file, every identifier in its text (the file is not run for this)."""
    dirs = default_search_dirs() if search_dirs is None else search_dirs
    found: Set[str] = set()
    for names in plugins.values():
        for name in names or ():
            name = str(name).strip()
            if not name or name.lower() in _NONE:
                continue
            try:
                path = _find_file(name, dirs) if ":" not in name or os.sep in name else None
            except PluginError:
                continue
            if path is not None:
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        found.update(_WORD.findall(f.read()))
                except OSError:
                    pass
                continue
            modname = name.partition(":")[0] if ":" in name else (
                f"{_STOCK_PACKAGE}.{_stock_name(name)}")
            try:
                mod = importlib.import_module(modname)
            except Exception:
                continue
            found.update(str(o) for o in getattr(mod, "OPTIONS", ()) or ())
    return found


def load(name: str, hook: str, search_dirs: Sequence[str] = (), parent=None) -> Callable:
    """The callable plugin ``name`` provides for ``hook`` (see the module docstring)."""
    if hook not in HOOKS:
        raise PluginError(f"plugin {name}: unknown hook {hook!r}")
    loaded = _load_source(name, search_dirs, parent)
    func = loaded.hooks.get(hook) or loaded.main
    if func is None:
        raise PluginError(f"plugin {name}: defines no {hook}")
    return func


def load_all(name: str, search_dirs: Sequence[str] = (), parent=None):
    """Every hook callable of a multi-hook plugin (option ``plugin``), and its schemes."""
    loaded = _load_source(name, search_dirs, parent)
    if not loaded.hooks:
        raise PluginError(f"plugin {name}: defines no hook function "
                          f"(expected one of {', '.join(HOOKS[:12])})")
    return loaded.hooks, loaded.schemes


# ------------------------------------------------------------------ running

class _Item:
    __slots__ = ("name", "func", "schemes")

    def __init__(self, name, func, schemes=None):
        self.name, self.func, self.schemes = name, func, schemes


class Hooks:
    """Ordered callables per hook, run with the parent."""

    def __init__(self, parent, logger: Optional[logging.Logger] = None,
                 search_dirs: Optional[Sequence[str]] = None):
        self.parent = parent
        self.logger = logger or getattr(parent, "logger", None) or logging.getLogger(__name__)
        self.search_dirs = list(default_search_dirs() if search_dirs is None else search_dirs)
        self._lists: Dict[str, List[_Item]] = {h: [] for h in HOOKS}

    def add(self, hook: str, name) -> None:
        """Append plugin ``name`` to ``hook`` (``None``/``none``/``off`` clears the list).

        ``hook`` ``plugin`` loads a multi-hook plugin (every hook it defines)."""
        if hook == "plugin":
            if name is None or str(name).strip().lower() in _NONE:
                return
            hooks, schemes = load_all(name, self.search_dirs, self.parent)
            for h, func in hooks.items():
                self._lists[h].append(_Item(str(name), func, schemes))
            return
        if hook not in self._lists:
            raise PluginError(f"plugin {name}: unknown hook {hook!r}")
        if name is None or str(name).strip().lower() in _NONE:
            self._lists[hook].clear()
            return
        func = load(name, hook, self.search_dirs, self.parent)
        self._lists[hook].append(_Item(str(name), func))

    def add_callable(self, hook: str, func: Callable, name: Optional[str] = None,
                     schemes: Optional[Sequence[str]] = None) -> None:
        """Append a callable directly (built-in defaults, tests)."""
        if hook not in self._lists:
            raise PluginError(f"unknown hook {hook!r}")
        self._lists[hook].append(_Item(name or getattr(func, "__name__", repr(func)), func,
                                       list(schemes) if schemes else None))

    def clear(self, hook: str) -> None:
        self._lists[hook].clear()

    def has(self, hook: str) -> bool:
        return bool(self._lists.get(hook))

    def names(self, hook: str) -> List[str]:
        return [i.name for i in self._lists.get(hook, ())]

    def _failed(self, hook: str, item: _Item, exc: BaseException) -> None:
        msg = getattr(self.parent, "msg", None)
        where = getattr(msg, "relpath", None) if msg is not None else None
        self.logger.error("plugin %s %s failed%s: %s: %s", item.name, hook,
                          f" for {where}" if where else "", type(exc).__name__, exc)
        self.logger.debug("plugin %s %s traceback:\n%s", item.name, hook,
                          "".join(traceback.format_exception(exc)))

    def run(self, hook: str, *args) -> bool:
        """Call each callable of ``hook`` in order as ``func(parent, *args)``.

        Returns False as soon as one returns False (filtering hooks: drop), else True.
        Exceptions are logged; for filtering hooks they count as False, otherwise the next
        callable runs.  The return values of on_start/on_stop are ignored."""
        for item in list(self._lists[hook]):
            try:
                result = item.func(self.parent, *args)
            except Exception as e:
                self._failed(hook, item, e)
                if hook in FILTER_HOOKS:
                    return False
                continue
            if result is False and hook not in IGNORED_RESULT:
                return False
        return True

    def run_first(self, hook: str, *args, scheme: Optional[str] = None) -> Optional[bool]:
        """For do_download/do_send and the like: the first callable that handles it wins.

        A callable registered for schemes is only tried when ``scheme`` is one of them.
        Returns True (done), False (failed; also when it raised) or None (nobody handled
        it: use the built-in driver)."""
        for item in list(self._lists[hook]):
            if item.schemes is not None and scheme not in item.schemes:
                continue
            try:
                result = item.func(self.parent, *args)
            except Exception as e:
                self._failed(hook, item, e)
                return False
            if result is None:
                continue
            return bool(result)
        return None

    def schemes(self, hook: str) -> List[str]:
        """URL schemes claimed by plugins for ``hook`` (from ``registered_as()``)."""
        out: List[str] = []
        for item in self._lists.get(hook, ()):
            out.extend(s for s in (item.schemes or ()) if s not in out)
        return out

    def run_data(self, chunk: bytes) -> bytes:
        """Pass a downloaded chunk through the on_data callables (``func(parent, chunk)``
        returns the transformed bytes).  A failure is logged and raised as PluginError:
        the transfer must fail rather than store half-transformed data."""
        for item in list(self._lists["on_data"]):
            try:
                out = item.func(self.parent, chunk)
            except Exception as e:
                self._failed("on_data", item, e)
                raise PluginError(f"plugin {item.name}: on_data failed: "
                                  f"{type(e).__name__}: {e}") from None
            if out is not None:
                chunk = out
        return chunk
