"""msg_by_source (on_message): keep only messages whose ``source`` header names a source.

Option: ``msg_by_source <source>`` (repeatable, or a comma-separated list). Posts and
reports alike are kept when their ``source`` header is one of the names, dropped
otherwise (also when the header is missing). sr_police's report routing shovel
``rr_xreport2<source>`` reads xreport with it and copies the source's reports to
xr_<source>. With no ``msg_by_source`` option every message is dropped (error logged once).
"""

from sarra.plugin import plugin_logger
from sarra.plugins.msg_by_user import message_of, wanted

#: plugin options this module reads (for unknown-option checks)
OPTIONS = ("msg_by_source",)

_warned = set()


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
    return headers.get("source") in sources
