"""Unknown options in a configuration: the nearest known name ("did you mean directory?")
and whether an unknown option is a misspelling of an option of the table (an error: the
option it was meant to be would silently keep its default, e.g. files landing in the
directory the command was started from) or may be a plugin's own setting (a warning:
v2 configs carry options read by their plugins, sarra keeps them for the plugins).

sarra.config.parser.Config.check_unknown uses it; nothing here prints or logs.
"""

import difflib
import importlib
import pkgutil
import re
from typing import Iterable, Optional

from sarra.config import options as O
from sarra.config.variables import is_per_message_var

#: how alike (difflib ratio, 0..1) an unknown name and a known one must be to be named
CUTOFF = 0.8
#: ... and to be called a misspelling (an error): one or two letters off, swapped or missing
ERROR_CUTOFF = 0.85
#: shorter unknown names are never called misspellings (too many neighbours at that size)
MIN_LENGTH = 5
#: v2 plugins name their options after themselves (msg_fdelay, file_rxpipe_name,
#: hb_memory_max, msg_total_interval...): an unknown option with one of these prefixes may
#: be an old plugin's, kept by v2 configs after the plugin went: a warning, never an error.
V2_PLUGIN_PREFIXES = ("msg_", "file_", "hb_", "heartbeat_", "line_", "poll_", "post_override",
                      "post_total", "download_", "accel_", "exp_", "data_")


def _table_names():
    """Names and aliases of the option table (single letters left out: every short word
    would be 'near' one of them)."""
    return sorted(k for o in O.OPTIONS for k in (o.name,) + o.aliases
                  if len(k) > 2 and " " not in k)


def _stock_plugin_options():
    """Options the stock plugins (sarra.plugins, their OPTIONS tuples) read."""
    found = set()
    try:
        import sarra.plugins as pkg
    except ImportError:
        return found
    for info in pkgutil.iter_modules(pkg.__path__):
        try:
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        except Exception:       # a broken stock plugin is reported where it is used
            continue
        found.update(str(o) for o in getattr(mod, "OPTIONS", ()) or ())
    return found


_TABLE = None
_STOCK = None


def _tables():
    global _TABLE, _STOCK
    if _TABLE is None:
        _TABLE, _STOCK = _table_names(), _stock_plugin_options()
    return _TABLE, _STOCK


def _closest(name: str, candidates: Iterable[str], cutoff: float = CUTOFF) -> Optional[str]:
    """The candidate most like `name` (case and '-'/'_' ignored), if alike enough."""
    key = name.lower().replace("-", "_")
    by_key = {}
    for c in candidates:
        by_key.setdefault(c.lower(), c)
    found = difflib.get_close_matches(key, list(by_key), n=1, cutoff=cutoff)
    return by_key[found[0]] if found else None


def nearest(name: str, declared: Iterable[str] = (), cutoff: float = CUTOFF) -> Optional[str]:
    """The known option (table name or alias, a stock plugin's option, or one of
    `declared`: those of the configured plugins or the command's own) most like `name`."""
    table, stock = _tables()
    return _closest(name, set(table) | stock | set(declared), cutoff)


def may_be_plugin_option(name: str, declared: Iterable[str] = ()) -> bool:
    """True when `name` may be read by a plugin (configured, stock or an old v2 one)."""
    _, stock = _tables()
    return name in set(declared) or name in stock or name.lower().startswith(
        V2_PLUGIN_PREFIXES)


def misspelled(name: str, declared: Iterable[str] = ()) -> Optional[str]:
    """The option of the table that unknown option `name` misspells, else None: `name` is
    alike enough to a table option and cannot be a plugin's (see may_be_plugin_option)."""
    declared = set(declared)
    if len(name) < MIN_LENGTH or may_be_plugin_option(name, declared):
        return None
    near = nearest(name, declared, ERROR_CUTOFF)
    table, _ = _tables()
    return near if near in table else None


def hint(name: str, declared: Iterable[str] = ()) -> str:
    """': did you mean <option>?' for an unknown option, or '' when nothing is alike."""
    near = nearest(name, declared)
    return f": did you mean {near}?" if near else ""


_UNSET_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLACEHOLDER = re.compile(r"<[A-Za-z_ ]+>")


def value_hint(value: Optional[str]) -> str:
    """Why a value that could not be used may be wrong, as '; ...' to append to the error
    (or ''): a ${VAR} left unexpanded (not set in the environment), or a placeholder such
    as '<host>' copied from an example configuration."""
    if not value:
        return ""
    unset = [m.group(1) for m in _UNSET_VAR.finditer(value)
             if not is_per_message_var(m.group(1))]
    if unset:
        return "; variable ${%s} is not set (set it in the environment or with " \
               "'declare env %s=...')" % (unset[0], unset[0])
    if _PLACEHOLDER.search(value):
        return "; it holds a placeholder (%s): put the real value there" \
               % _PLACEHOLDER.search(value).group(0)
    return ""
