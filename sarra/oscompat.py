"""Positional file reads and writes everywhere (issue 19, item 9: a portable core).

``os.pread``, ``os.pwrite`` and ``os.preadv`` exist on POSIX only; a Windows Python lacks
them. These functions are the os ones where they exist. Elsewhere they seek, read or
write, and put the file offset back where it was, one call at a time (a lock), so that
they leave the descriptor's offset as the POSIX calls do.
"""

import os
import threading

_lock = threading.Lock()


def _at(fd, offset, op):
    with _lock:
        before = os.lseek(fd, 0, os.SEEK_CUR)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            return op()
        finally:
            os.lseek(fd, before, os.SEEK_SET)


def _pread(fd, n, offset):
    return _at(fd, offset, lambda: os.read(fd, n))


def _pwrite(fd, data, offset):
    return _at(fd, offset, lambda: os.write(fd, data))


def _preadv(fd, buffers, offset):
    def op():
        total = 0
        for buf in buffers:
            view = memoryview(buf).cast("B")
            data = os.read(fd, len(view))
            view[:len(data)] = data
            total += len(data)
            if len(data) < len(view):
                break
        return total
    return _at(fd, offset, op)


pread = getattr(os, "pread", _pread)
pwrite = getattr(os, "pwrite", _pwrite)
preadv = getattr(os, "preadv", _preadv)
