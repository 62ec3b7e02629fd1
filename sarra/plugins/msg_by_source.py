"""msg_by_source (on_message): keep only messages whose ``source`` header names a source.

Option: ``msg_by_source <source>`` (repeatable, or a comma-separated list). Posts and
reports alike are kept when their ``source`` header is one of the names, dropped
otherwise (also when the header is missing). sr_police's report routing shovel
``rr_xreport_route`` reads xreport with it, the list of the pump's sources, and with
``post_exchange_by_source on`` posts each report it keeps to xr_<its source>: one read per
report however many sources. There a report naming no listed source (or none) is dropped
with a warning, once per name (at most 100 names; then once). With no ``msg_by_source``
option every message is dropped (error logged once).
"""

from sarra.plugin import plugin_logger
from sarra.plugins.msg_by_user import message_of, wanted

#: plugin options this module reads (for unknown-option checks)
OPTIONS = ("msg_by_source",)

_warned = set()
#: names already warned about (routing by source), bounded: an attacker's names flood nothing
_unknown = set()
MAX_NAMES = 100


def on_message(parent):
    sources = wanted(parent, "msg_by_source")
    if not sources:
        if id(parent) not in _warned:
            _warned.add(id(parent))
            plugin_logger(parent, "msg_by_source").error(
                "msg_by_source: no 'msg_by_source <source>' option; dropping every message")
        return False
    msg = message_of(parent)
    headers = getattr(msg, "headers", None) or {}
    source = headers.get("source")
    if source in sources:
        return True
    if _routing(parent):
        _warn_unknown(parent, source)
    return False


def _routing(parent) -> bool:
    getter = getattr(parent, "get_option", None)
    value = getter("post_exchange_by_source", False) if callable(getter) else \
        getattr(parent, "post_exchange_by_source", False)
    return value is True


def _warn_unknown(parent, source) -> None:
    """Once per name: a report about a source this pump does not route to."""
    key = source if isinstance(source, str) else None
    if key in _unknown or len(_unknown) > MAX_NAMES:
        return
    _unknown.add(key)
    if len(_unknown) > MAX_NAMES:
        text = "msg_by_source: more reports about unknown sources; no longer named"
    elif key is None:
        text = "msg_by_source: a report with no source header dropped (once)"
    else:
        text = "msg_by_source: a report about %r, not a source routed here, dropped " \
               "(once per name)" % key[:60]
    plugin_logger(parent, "msg_by_source").warning("%s", text)
