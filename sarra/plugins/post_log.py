"""post_log (on_post): log each message about to be posted: ``posted <url> topic <topic>``.

Installed by default (plugins.md §4); ``on_post None`` removes it.
"""

from sarra.plugin import plugin_logger


def on_post(parent):
    msg = getattr(parent, "msg", None)
    url = getattr(msg, "url", None)
    if url is None:
        url = f"{getattr(msg, 'baseurl', '')}{getattr(msg, 'relpath', '')}"
    plugin_logger(parent, "post_log").info("posted %s topic %s", url,
                                           getattr(msg, "topic", "?"))
    return True
