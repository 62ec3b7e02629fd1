"""msg_from_cluster (on_message): keep only the reports about data from given clusters.

Option: ``msg_from_cluster <cluster>`` (repeatable, or a comma-separated list; ``*`` keeps
every report). A report is kept when its ``from_cluster`` header (the cluster where the
data entered the network) is one of them; posts are always dropped. The report routing
shovels of sarra/flow/routing.py use it to send the reports about another pump's data back
toward that pump (reports.md §5.2). With no option every message is dropped (error logged
once).
"""

from sarra.plugin import plugin_logger
from sarra.plugins.msg_by_user import message_of, wanted

#: plugin options this module reads (for unknown-option checks)
OPTIONS = ("msg_from_cluster",)

_warned = set()


def on_message(parent):
    clusters = wanted(parent, "msg_from_cluster")
    if not clusters:
        if id(parent) not in _warned:
            _warned.add(id(parent))
            plugin_logger(parent, "msg_from_cluster").error(
                "msg_from_cluster: no 'msg_from_cluster <cluster>' option; dropping every message")
        return False
    msg = message_of(parent)
    if getattr(msg, "report", None) is None:
        return False
    if "*" in clusters:
        return True
    headers = getattr(msg, "headers", None) or {}
    return headers.get("from_cluster") in clusters
