"""hb_cache (on_heartbeat): log the duplicate cache's size and hit counts."""

from sarra.plugin import plugin_logger


def on_heartbeat(parent):
    cache = getattr(parent, "cache", None)
    if cache is not None and hasattr(cache, "stats"):
        s = cache.stats()
        plugin_logger(parent, "hb_cache").info(
            "cache: %s", " ".join(f"{k}={v}" for k, v in sorted(s.items())))
    return True
