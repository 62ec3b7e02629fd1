"""hb_memory (on_heartbeat): log this process's resident memory (RSS) at each heartbeat."""

import psutil

from sarra.plugin import plugin_logger


def on_heartbeat(parent):
    rss = psutil.Process().memory_info().rss
    plugin_logger(parent, "hb_memory").info("memory: rss=%.1f MiB", rss / (1 << 20))
    return True
