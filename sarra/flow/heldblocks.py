"""Blocks a receiver holds already: the bytes a block post announces (a range of a file and
its sum) found in a local file, and copied from it rather than downloaded.

A file that grows or is rewritten is announced again with every block of its new version
(sr_watch; issue 19 item 10): the blocks that did not change are here already, in the
previous version of the file (inplace on: the final file, at the same offset) or in the
part file of the same block of the previous version (inplace off: the part file names hold
the block count and remainder, which change as the file grows). What is copied is hashed
on the way and used only if it has the announced sum; whatever a local file holds, a block
that does not match is downloaded as usual.
"""

import os
import stat
from typing import Optional

from sarra import checksum
from sarra.paths import NOFOLLOW

#: read size when a block is copied from a local file
COPY_PIECE = 1 << 20


def copy_range(src_path: str, dst_fd: int, s, offset: int, length: int,
               dst_offset: int) -> Optional[str]:
    """Copy [offset, offset+length) of the regular file src_path to dst_fd at dst_offset,
    hashing it: the digest when it is the announced sum ``s``, else None (bytes may then
    have been written at dst_offset: the download overwrites them). The source's size
    does not matter as long as it holds the range."""
    if s.algo not in checksum.DATA_ALGOS or not s.value or length <= 0:
        return None
    try:
        src = os.open(src_path, os.O_RDONLY | NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_size < offset + length:
            return None
        h = checksum.new_hasher(s.algo)
        pos, end, out = offset, offset + length, dst_offset
        while pos < end:
            data = os.pread(src, min(COPY_PIECE, end - pos), pos)
            if not data:
                return None
            h.update(data)
            pos += len(data)
            view = memoryview(data)
            while view:
                n = os.pwrite(dst_fd, view, out)
                view, out = view[n:], out + n
        digest = h.hexdigest()
        return digest if digest == s.value else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(src)


def _other_versions(final: str, parts, algo: str):
    """Part files beside final of the same block (bsz, bno, algo) of another version."""
    d, name = os.path.split(final)
    prefix = name + "."
    try:
        with os.scandir(d or ".") as it:
            for entry in it:
                if not entry.name.startswith(prefix) or not entry.name.endswith(".Part"):
                    continue
                found = checksum.parse_part_suffix(entry.name)
                if found is None:
                    continue
                target, p, a = found
                if target == name and a == algo and p.bsz == parts.bsz and \
                        p.bno == parts.bno and p.length == parts.length:
                    yield entry.path
    except OSError:
        return


def into_part_file(final: str, parts, s, temp: str) -> Optional[str]:
    """inplace off: fill the temporary part file ``temp`` with the block from a local
    copy (the final file at the block's offset, or the same block's part file of another
    version); its digest, or None (temp removed) when no local file holds it."""
    if s.algo not in checksum.DATA_ALGOS or not s.value:
        return None
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o666)
    except OSError:
        return None
    digest = None
    try:
        sources = [(final, parts.offset)]
        sources += [(p, 0) for p in _other_versions(final, parts, s.algo)]
        for path, offset in sources:
            digest = copy_range(path, fd, s, offset, parts.length, 0)
            if digest is not None:
                os.ftruncate(fd, parts.length)
                break
    finally:
        os.close(fd)
    if digest is None:
        try:
            os.unlink(temp)
        except OSError:
            pass
    return digest
