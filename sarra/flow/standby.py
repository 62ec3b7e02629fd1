"""Active/passive for a consuming component (option ``vip``; sarra.ops.vip reads the
interfaces).

A passive node holds no connection: it consumes nothing (no prefetched message held
back from the node that is active) and posts nothing; it checks every few seconds and
connects when the address arrives.  When the address leaves, the connections are closed
(messages in hand go back to the broker, which gives them to the node now active) and the
node waits again.  Its stats file says ``standby``, which `sr status` shows.

Facts: doc/spec/config.md (``vip``), doc/spec/pump-topology.md (active/passive).
"""
import time

from sarra.ops import vip

#: how often a passive node looks at its interfaces (seconds)
CHECK_EVERY = vip.CHECK_EVERY


def gate(flow):
    """The flow's vip.Gate (made on first use from ``cfg.vip``: a list, or one address)."""
    g = getattr(flow, "_vip_gate", None)
    if g is None:
        addresses = flow.get_option("vip", None)
        if isinstance(addresses, str):
            addresses = addresses.replace(",", " ").split()
        addresses = [a for a in (addresses or []) if a]
        g = vip.Gate(" ".join(addresses) or None, every=CHECK_EVERY, logger=flow.log,
                     probe=lambda a, i: any(vip.holds(x) for x in a.split()))
        flow._vip_gate = g
    return g


def _wait_active(flow):
    """Block while passive (stats say standby); False when a stop came first."""
    g = gate(flow)
    if g.active():
        return True
    flow.standby = True
    flow.write_stats()
    while not flow.stop_event.is_set():
        flow.stop_event.wait(min(1.0, g.every))
        if g.active():
            flow.standby = False
            return True
        now = time.time()
        if now >= flow._next_heartbeat:     # at the heartbeat, as when active: not hung
            flow._next_heartbeat = now + (flow.cfg.heartbeat or 300)
            flow.write_stats()
    return False


def connect(flow):
    """Connect once this node holds the vip (at once without one)."""
    if _wait_active(flow):
        flow.connect()


def check(flow):
    """At the top of each turn of the loop: when the vip has left, drop the connections,
    wait for it to come back, connect again; False when a stop came meanwhile.  Cheap:
    looks every few seconds only."""
    g = gate(flow)
    if g.active():
        return True
    flow.close()
    if not _wait_active(flow):
        return False
    flow.connect()
    return True
