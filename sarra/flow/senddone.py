"""What sr_sender does once a file is delivered: v2's ``batch`` and ``delete``.

* ``batch N``: a connection carries N files, then it is closed and the next file opens a
  new one (v2: on very low volume links, where an idle session times out, 1).
* ``delete on``: the local file that was sent is removed, as v2's subscriber removes the
  upstream copy after a download: only once the delivery succeeded and, with a
  ``post_broker``, once the broker confirmed its post (Flow.settle calls :func:`settled`
  after the confirms, before the ack). Never a file that changed since it was sent (size,
  mtime, inode), never a block of a partitioned file (its other blocks still need it), and
  only below ``base_dir`` (config/v2refuse.py: a configuration without one is refused, so that
  an announcement naming any file of the machine cannot make the sender remove it).
"""

import os
from typing import List, Optional

from sarra.flow.stepstate import SendState

#: attribute of a Work holding (path, (dev, ino, size, mtime_ns)) of the file to remove
_ATTR = "sender_delete"


def delivered(flow, work, src: Optional[str]) -> None:
    """Called for each delivery (a file, a removal or a link): counts toward ``batch``
    and marks a delivered whole file for ``delete``."""
    cfg = flow.cfg
    _count(flow, cfg)
    if not cfg.get("delete") or not src or work.msg.sum.algo in ("R", "L"):
        return
    parts = work.msg.parts
    if parts is not None and not parts.whole:
        st = SendState.of(flow)
        if not getattr(st, "delete_blocks_warned", False):
            st.delete_blocks_warned = True
            flow.log.warning("delete: a file sent in blocks is kept (%s): the other blocks "
                             "need it", src)
        return
    try:
        s = os.stat(src)
    except OSError:
        return
    setattr(work, _ATTR, (src, (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns)))


def _count(flow, cfg) -> None:
    st = SendState.of(flow)
    n = getattr(st, "batch_sent", 0) + 1
    limit = cfg.get("batch") or 0
    if limit and n >= limit:
        n = 0
        drv = flow._by_base.get(cfg.destination)
        if drv is not None:         # the next file opens a new session
            try:
                drv.close()
            except Exception:
                pass
    st.batch_sent = n


def settled(flow, batch: List) -> None:
    """After the batch's posts are confirmed: remove the files ``delete`` marked."""
    for w in batch:
        mark = w.__dict__.pop(_ATTR, None)
        if mark is None or str(w.outcome) != "done":
            continue
        path, ident = mark
        try:
            s = os.stat(path)
            if (s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) != ident:
                flow.log.info("delete: %s changed since it was sent: kept", path)
                continue
            os.unlink(path)
            flow.log.info("delete: %s removed (sent)", path)
        except FileNotFoundError:
            pass
        except OSError as e:
            flow.log.warning("delete: cannot remove %s: %s", path, e.strerror)

