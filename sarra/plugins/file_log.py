"""file_log (on_file): log each file written, at info level: ``downloaded <path>``.

Installed by default (plugins.md §4); ``on_file None`` removes it.  The path is
``msg.new_dir/msg.new_file`` when the flow set them, else the parent's ``new_dir``/
``new_file``, else the message's relpath.
"""

import os

from sarra.plugin import plugin_logger


def local_path(parent) -> str:
    msg = getattr(parent, "msg", None)
    for obj in (msg, parent):
        d, f = getattr(obj, "new_dir", None), getattr(obj, "new_file", None)
        if f:
            return os.path.join(d, f) if d else f
    return str(getattr(msg, "path", None) or getattr(msg, "relpath", "?"))


def on_file(parent):
    plugin_logger(parent, "file_log").info("downloaded %s", local_path(parent))
    return True
