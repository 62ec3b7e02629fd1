"""The hash thread of large downloads: buffers it lends are hashed without a copy and come
back to its pool; anything else it is given is copied first (the giver may reuse it)."""

import hashlib
import os

from sarra.flow.fetch import _HashThread


def test_lent_buffers_are_hashed_and_reused():
    h = _HashThread(hashlib.md5())
    ref = hashlib.md5()
    for i in range(200):
        view = h.borrow(4096)
        piece = os.urandom(1 + (i * 37) % 4096)
        view[:len(piece)] = piece
        h.update(view[:len(piece)])
        ref.update(piece)
    assert h.hexdigest() == ref.hexdigest()
    assert 1 <= h.made <= _HashThread.POOL


def test_a_buffer_not_handed_over_is_lent_again():
    h = _HashThread(hashlib.sha512())
    first = h.borrow(1024)
    assert h.borrow(1024) is first          # skipped bytes: the same buffer, nothing leaks
    first[:3] = b'abc'
    h.update(first[1:3])                    # a slice of it is still ours
    second = h.borrow(1024)
    assert second is not first
    assert h.hexdigest() == hashlib.sha512(b'bc').hexdigest()


def test_other_views_are_copied_before_the_giver_reuses_them():
    h = _HashThread(hashlib.md5())
    mine = bytearray(b'A' * 1000)
    h.update(memoryview(mine))              # not lent by h: copied at once
    mine[:] = b'B' * 1000                   # the giver reuses its buffer immediately
    h.update(b'tail')
    assert h.hexdigest() == hashlib.md5(b'A' * 1000 + b'tail').hexdigest()


def test_abandon_lets_the_thread_end():
    h = _HashThread(hashlib.md5())
    h.update(h.borrow(10)[:5])
    h.abandon()
    h.t.join(5)
    assert not h.t.is_alive()


def test_a_new_size_never_strands_the_pool():
    h = _HashThread(hashlib.md5())
    for size in range(100, 100 + 4 * _HashThread.POOL):   # each borrow asks another size
        h.borrow(size)                                      # (none handed over)
    h.update(h.borrow(8)[:8])
    assert h.hexdigest() == hashlib.md5(bytes(8)).hexdigest()
