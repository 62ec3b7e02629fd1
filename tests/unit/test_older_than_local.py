"""routing.older_than_local: the newest-wins rule of sr_sarra and sr_subscribe."""

import os
import time
import types

import pytest

from sarra.flow import routing
from sarra.flow.work import Outcome
from sarra.message import format_time


def _work(path, sumstr, pubtime, mtime=None):
    headers = {"sum": sumstr}
    if mtime is not None:
        headers["mtime"] = format_time(mtime)
    msg = types.SimpleNamespace(headers=headers, pubtime=format_time(pubtime))
    return types.SimpleNamespace(msg=msg, local_path=str(path), retry_entry=None)


FLOW = types.SimpleNamespace(cfg=types.SimpleNamespace(preserve_time=True))


def test_older_version_of_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"new")
    with pytest.raises(Outcome) as e:
        routing.older_than_local(FLOW, _work(f, "d,abc", time.time(), mtime=time.time() - 3600))
    assert e.value.code == 304


def test_older_removal_of_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"new")
    with pytest.raises(Outcome):
        routing.older_than_local(FLOW, _work(f, "R,0", time.time() - 3600))


def test_removal_of_a_link_is_not_judged_by_the_links_own_mtime(tmp_path):
    """A link's mtime is when this host made it (a lagging subscriber makes it late), not
    the source's: its removal is never taken for an older one."""
    link = tmp_path / "l"
    os.symlink("target", link)
    routing.older_than_local(FLOW, _work(link, "R,0", time.time() - 3600))
