"""The hash thread of a large download lets its buffers go when it ends (issue 20: RSS).

The _Progress that holds it sits in a reference cycle until the garbage collector runs;
a subscriber fetching a 1 GiB file in 200 MiB blocks kept one 2 MiB read-back buffer per
block until the end of its batch (VmHWM 41.5 MB, 33.5 MB once released: measured).
"""

import hashlib
import os

from sarra.flow import fetch


def test_range_buffer_released_after_digest(tmp_path):
    data = os.urandom(3 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)
    h = fetch._HashThread(hashlib.md5())
    fd = os.open(path, os.O_RDONLY)
    try:
        h.update_range(fd, 0, 1 << 20)
        h.update_range(fd, 1 << 20, len(data))
    finally:
        os.close(fd)            # the thread hashes from its own duplicate
    assert h.hexdigest() == hashlib.md5(data).hexdigest()
    assert h.range_buf is None


def test_pooled_buffers_released_after_digest():
    h = fetch._HashThread(hashlib.md5())
    want = hashlib.md5()
    for k in range(8):
        view = h.borrow(1 << 20)
        view[:] = bytes([k]) * len(view)
        want.update(view)
        h.update(view)
    assert h.hexdigest() == want.hexdigest()
    assert h.free.empty() and h.range_buf is None


def test_abandoned_thread_releases_too():
    h = fetch._HashThread(hashlib.md5())
    h.update(h.borrow(1 << 20))
    h.abandon()
    h.t.join(10)
    assert not h.t.is_alive() and h.free.empty()
