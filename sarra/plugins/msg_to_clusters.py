"""msg_to_clusters (on_message): keep only the posts meant for given clusters.

Option: ``msg_to_clusters <cluster>`` (repeatable, or a comma-separated list). A message
is kept when any name of its ``to_clusters`` header is listed (the v2 plugin compared the
whole header string; this matches element by element, a superset: pump-topology.md §5).
For routing with gateways and loop protection use ``cluster_routing`` instead (man
sr_sarra). With no option every message is dropped (error logged once).
"""

from sarra.plugin import plugin_logger
from sarra.plugins.msg_by_user import message_of, wanted

#: plugin options this module reads (for unknown-option checks)
OPTIONS = ("msg_to_clusters",)

_warned = set()


def on_message(parent):
    clusters = wanted(parent, "msg_to_clusters")
    if not clusters:
        if id(parent) not in _warned:
            _warned.add(id(parent))
            plugin_logger(parent, "msg_to_clusters").error(
                "msg_to_clusters: no 'msg_to_clusters <cluster>' option; dropping every message")
        return False
    msg = message_of(parent)
    headers = getattr(msg, "headers", None) or {}
    to = str(headers.get("to_clusters") or "").replace(",", " ").split()
    return any(name in clusters for name in to)
