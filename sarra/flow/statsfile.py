"""The stats file of a flow instance and its heartbeat (moved out of engine.py).

One small JSON per instance (``sr_<component>_<config>_<NN>.stats`` in its state
directory) read by `sr status` / health.py: counters, messages/s over a window of
RATE_WINDOW to 2 * RATE_WINDOW seconds, last activity, retry queue length, messages in
hand (unacked), plus what monitor.on_stats adds. Written when something happened, at most
every STATS_EVERY seconds (and every STATS_EVERY while a batch is in hand: an instance
that holds messages and stops writing is hung), and at each heartbeat.
"""

import json
import os
import time

STATS_EVERY = 2.0      # seconds; health.STATS_EVERY (status current within a few s)
RATE_WINDOW = 30.0     # seconds; messages/s in the stats file: over 30 to 60 s


def tick(flow, now):
    """Rewrite the stats file when due (see the module's docstring); ``flow`` needs only
    _stats_at, _stats_unacked, unacked, last_activity and write_stats()."""
    if now - flow._stats_at < STATS_EVERY:
        return
    if flow.unacked or flow.unacked != flow._stats_unacked \
            or (flow.last_activity or 0) > flow._stats_at:
        flow.write_stats()


def heartbeat(flow):
    """Every ``heartbeat`` seconds: the stats file, on_heartbeat, the source's own."""
    now = time.time()
    flow.stats_tick(now)
    if now < flow._next_heartbeat:
        return
    flow._next_heartbeat = now + (flow.cfg.heartbeat or 300)
    flow.write_stats()
    flow.hooks.run("on_heartbeat")
    flow.source.heartbeat(now)


def write(flow):
    """Counters for `sr status` (none for a one-shot command: no instance to show)."""
    from sarra import paths
    from sarra.flow import monitor
    if flow.source.one_shot:
        return
    cfg = flow.cfg
    path = os.path.join(flow.user_cache_dir, "sr_%s_%s_%02d.stats" % (
        cfg.component, cfg.name or "-", flow.no))
    now = time.time()
    data = dict(flow.counters, time=now, last_activity=flow.last_activity,
                retry_queue=len(flow.retry), pid=os.getpid(), unacked=flow.unacked,
                standby=bool(getattr(flow, "standby", False)), **flow.source.stats())
    # the rate's window (health.rate): from a mark RATE_WINDOW to 2 * RATE_WINDOW old
    mark = (now, flow.counters["received"])
    if flow._stats_prev is None:
        flow._stats_prev = (mark, mark)
    elif now - flow._stats_prev[1][0] >= RATE_WINDOW:
        flow._stats_prev = (flow._stats_prev[1], mark)
    data["prev_time"], data["prev_received"] = flow._stats_prev[0]
    flow._stats_at, flow._stats_unacked = now, flow.unacked
    monitor.on_stats(flow, data)        # bytes/s, lag, quota use; Prometheus metrics
    try:
        paths.atomic_write(path, json.dumps(data))
    except OSError as e:
        flow.log.warning("cannot write %s: %s", path, e)
