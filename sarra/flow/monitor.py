"""What a daemon adds to its stats file for monitoring (issue 23, item 3), and its
Prometheus metrics.

At each stats write (engine.write_stats; at least every STATS_EVERY seconds while busy,
each heartbeat when idle) ``on_stats`` adds to the stats file:

  * ``prev_bytes``, ``prev_failed``, ``prev_retried``: bytes transferred, messages
    failed and retried at the rate window's mark (``prev_time``), so that `sr status`
    shows bytes/s as it shows messages/s (health.rate) and `sr check` a recent failure
    rate; ``window_from_start``: that mark is the first write of the process;
  * ``lag``, ``lag_at``: the age of the oldest message of the last batch taken from the
    queue when it was taken (now - its pubtime): with messages waiting, the oldest one
    is at least ``lag + (now - lag_at)`` old;
  * ``quota``: sr_sarra's use per source and its limits (quota.py), and the drift check
    when due;

and, with option ``metrics_dir``, writes ``<metrics_dir>/sarra_<component>_<config>_<NN>.prom``
atomically (a temporary name not ending in .prom, then a rename): the Prometheus text
format that node_exporter's textfile collector reads.
"""

import os
import time

from sarra import paths
from sarra.flow import quota

PREFIX = "sarra"
COUNTERS = {   # stats key -> (metric, help)
    "received": ("messages_received_total", "Messages taken from the broker."),
    "accepted": ("messages_accepted_total", "Messages accepted by the filters."),
    "rejected": ("messages_rejected_total", "Messages rejected by the filters or plugins."),
    "duplicates": ("messages_duplicate_total", "Messages found in the duplicate cache."),
    "transferred": ("files_transferred_total", "Files (or blocks) downloaded or sent."),
    "bytes": ("transferred_bytes_total", "Bytes downloaded or sent."),
    "posted": ("messages_posted_total", "Messages posted."),
    "failed": ("messages_failed_total", "Messages that failed (retried or not)."),
    "retried": ("messages_retried_total", "Messages taken again from the retry queue."),
    "malformed": ("messages_malformed_total", "Messages that could not be read."),
}
GAUGES = {
    "retry_queue": ("retry_queue_messages", "Messages in the retry queue."),
    "unacked": ("unacked_messages", "Messages in hand, not yet acknowledged."),
    "last_activity": ("last_activity_timestamp_seconds", "When a message was last taken."),
    "lag": ("lag_seconds", "Age of the oldest message of the last batch when taken."),
    "time": ("stats_timestamp_seconds", "When these figures were written."),
}


def seen(flow, batch):
    """A batch taken from the queue: its oldest message's age (retries not counted)."""
    now, oldest = time.time(), None
    for work in batch:
        if work.retry_entry is None:
            try:
                t = work.msg.pubtime_epoch
            except (ValueError, TypeError, AttributeError):
                continue
            oldest = t if oldest is None else min(oldest, t)
    if oldest is not None:
        flow.lag_seen = (max(0.0, now - oldest), now)


def on_stats(flow, data: dict):
    """Complete the stats file's data (see the module docstring); write the metrics."""
    marks = getattr(flow, "_byte_marks", None)
    if marks is None:
        marks = flow._byte_marks = {}
    if not marks:
        flow._first_stats = data["time"]
    marks[data["time"]] = (data.get("bytes", 0), data.get("failed", 0), data.get("retried", 0))
    prev = data.get("prev_time")
    data["prev_bytes"], data["prev_failed"], data["prev_retried"] = marks.get(prev, (0, 0, 0))
    # the window starts at the first write: what came before it counts too (srmonitor)
    data["window_from_start"] = prev == getattr(flow, "_first_stats", None)
    for t in [t for t in marks if prev is not None and t < prev]:
        del marks[t]
    lag = getattr(flow, "lag_seen", None)
    if lag is not None:
        data["lag"], data["lag_at"] = round(lag[0], 3), lag[1]
    quota.tick(flow)
    q = getattr(flow, "quota", None)
    if q is not None:
        data["quota"] = q.summary()
    directory = getattr(flow.cfg, "metrics_dir", None)
    if directory:
        try:
            write_metrics(directory, flow.cfg.component, flow.cfg.name or "-", flow.no, data)
        except OSError as e:
            flow.log.warning("cannot write the metrics in %s: %s", directory, e)


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def metrics_text(component: str, config: str, instance: int, data: dict) -> str:
    """The Prometheus text exposition (format 0.0.4) of one instance's stats data."""
    base = f'component="{_label(component)}",config="{_label(config)}",instance="{instance}"'
    out = []

    def family(name, kind, text, samples):
        out.append(f"# HELP {PREFIX}_{name} {text}")
        out.append(f"# TYPE {PREFIX}_{name} {kind}")
        for labels, value in samples:
            out.append(f"{PREFIX}_{name}{{{labels}}} {float(value)!r}")

    family("up", "gauge", "1 while the instance writes its figures.", [(base, 1)])
    for key, (name, text) in COUNTERS.items():
        family(name, "counter", text, [(base, int(data.get(key) or 0))])
    for key, (name, text) in GAUGES.items():
        if data.get(key) is not None:
            family(name, "gauge", text, [(base, float(data[key]))])
    quotas = data.get("quota") or {}
    if quotas:
        rows = sorted(quotas.items())

        def per_source(field):
            return [(f'{base},source="{_label(s)}"', q[field]) for s, q in rows
                    if q.get(field) is not None]
        family("quota_used_bytes", "gauge", "Bytes a source keeps in the pump's tree.",
               per_source("bytes"))
        family("quota_used_files", "gauge", "Files a source keeps in the pump's tree.",
               per_source("files"))
        family("quota_limit_bytes", "gauge", "The quota option's bytes limit of a source.",
               per_source("max_bytes"))
        family("quota_limit_files", "gauge", "The quota option's files limit of a source.",
               per_source("max_files"))
    return "\n".join(out) + "\n"


def metrics_path(directory: str, component: str, config: str, instance: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in config)
    return os.path.join(directory, f"{PREFIX}_{component}_{safe}_{instance:02d}.prom")


def write_metrics(directory: str, component: str, config: str, instance: int, data: dict):
    paths.atomic_write(metrics_path(directory, component, config, instance),
                       metrics_text(component, config, instance, data), mode=0o644)
