"""Reassembly of files announced in blocks, safe across instances and in any order.

Each block is written at its offset into one temporary file beside the target. A manifest
(JSON, in the configuration's state directory, protected by an OS file lock) records which
blocks of which *generation* (bsz, blktot, and mtime or pubtime) are verified, with
their sums; a block of an older version than the one recorded is refused. Completion is decided
under the lock from that record, never from a block number or a file size, so exactly one
process sees the file become complete: it renames the temporary file to the final name and
that process alone fires on_file. A completed manifest is kept (tiny) so that a redelivered
block of a finished file is recognised and not started again; prune() drops manifests (and
the temporary file of one that never completed) once they are older than the age after
which no block of theirs can come back (queue expiry, retry ttl).
"""

import errno
import hashlib
import json
import os
import stat
import time
from contextlib import contextmanager
from typing import Optional

from sarra import locks
from sarra.checksum import Parts
from sarra.message import parse_time
from sarra.paths import NOFOLLOW


def generation(parts: Parts, mtime: Optional[str], pubtime: Optional[str] = None) -> str:
    """Which version of a file a block belongs to: block layout and the file's mtime, or,
    for a post without mtime, its pubtime (the same on every block of one posting). The
    4th parts field is left out: sr3 puts each block's own length there."""
    if mtime:
        return f"{parts.bsz},{parts.blktot},m{mtime}"
    return f"{parts.bsz},{parts.blktot},p{pubtime or ''}"


def order(mtime: Optional[str], pubtime: Optional[str]) -> float:
    """How new a version is (its mtime, else its pubtime): a block of an older version
    than the one being (or already) assembled is not let in."""
    for t in (mtime, pubtime):
        if t:
            try:
                return parse_time(t)
            except ValueError:
                pass
    return 0.0


class NotAManifest(OSError):
    """Something other than a regular file (a directory, a link, a fifo...) is where a
    manifest should be: no retry can help (inplace.py fails the block's message once)."""


class Manifest:
    """The record of verified blocks for one target file: its generation, how new that
    version is, each block's announced sum ('' for sums not of the data), and the file
    size (the last block's post is the one to trust)."""

    def __init__(self, state_dir: str, final_path: str):
        os.makedirs(state_dir, exist_ok=True)
        key = hashlib.sha1(os.path.abspath(final_path).encode("utf-8", "surrogateescape")).hexdigest()
        self.path = os.path.join(state_dir, key + ".parts")
        self.final = final_path
        self.data = {}
        self._fd = None

    @contextmanager
    def locked(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
        except OSError as e:    # a directory, or a link (NOFOLLOW: ELOOP, EMLINK on BSD)
            if e.errno in (errno.EISDIR, errno.ELOOP, errno.EMLINK):
                raise NotAManifest(e.errno, f"not a regular file ({e.strerror})",
                                   os.path.basename(self.path)) from None
            raise
        held = None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):      # never a fifo or a device
                raise NotAManifest(errno.EINVAL, "not a regular file",
                                   os.path.basename(self.path))
            held = locks.acquire(fd, self.path)
            raw = b""
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                raw += chunk
            try:
                self.data = json.loads(raw.decode()) if raw else {}
            except ValueError:
                self.data = {}   # a torn manifest is rebuilt: blocks are fetched again
            if not isinstance(self.data, dict) or not isinstance(self.data.get("blocks", {}), dict):
                self.data = {}   # not ours, or the list of an older release: start again
            self._fd = fd
            yield self
            self.save()
        finally:
            self._fd = None
            if held is not None:
                held.release()
            os.close(fd)

    # -- call these only inside `with manifest.locked():`
    def save(self) -> None:
        """Write the record now (it is also written when the lock is released)."""
        out = json.dumps(self.data).encode()
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, out)

    def state(self, gen: str) -> str:
        """'complete', 'new' (no record of this generation) or 'partial'."""
        if self.data.get("gen") != gen:
            return "new"
        return "complete" if self.data.get("complete") else "partial"

    def supersedes(self, version: float) -> bool:
        """The record is of a newer version of the file than ``version`` (see order())."""
        return bool(self.data.get("gen")) and self.data.get("order", 0.0) > version

    def has(self, gen: str, bno: int, bsum: Optional[str] = None) -> bool:
        """Block bno of gen is recorded (with the announced sum ``bsum``, when given)."""
        if self.data.get("gen") != gen:
            return False
        got = self.data.get("blocks", {}).get(str(bno))
        return got is not None and (bsum is None or got in ("", bsum))

    def conflicts(self, gen: str, bno: int, bsum: str) -> bool:
        """Block bno of gen is recorded with another sum: the file changed, its mtime did
        not (or the posts have none and share a pubtime)."""
        got = self.data.get("blocks", {}).get(str(bno)) if self.data.get("gen") == gen else None
        return got not in (None, "", bsum)

    def start(self, gen: str, final: str, temp: str, version: float = 0.0) -> None:
        self.data = {"gen": gen, "order": version, "final": final, "temp": temp,
                     "blocks": {}, "complete": False}

    def add(self, gen: str, bno: int, bsum: str = "", size: Optional[int] = None) -> bool:
        """Record a verified block; True when this call completes the file. ``size``: the
        file size this block's post gives, kept when it is the last block's."""
        if self.data.get("gen") != gen or self.data.get("complete"):
            return False
        blocks = self.data.setdefault("blocks", {})
        blocks.setdefault(str(bno), bsum)
        if size is not None:
            self.data["size"] = size
        blktot = int(gen.split(",")[1])
        if len(blocks) >= blktot:
            self.data["complete"] = True
            return True
        return False

    def unadd(self, bno: int) -> None:
        """Take back the block that completed the file (its completion failed)."""
        self.data.get("blocks", {}).pop(str(bno), None)
        self.data["complete"] = False

    def size(self, default: int) -> int:
        return self.data.get("size", default)

    def missing(self, gen: str):
        blktot = int(gen.split(",")[1])
        have = set(self.data.get("blocks", {})) if self.data.get("gen") == gen else set()
        return [b for b in range(blktot) if str(b) not in have]


def is_regular(path: str) -> bool:
    """A regular file is at path (not a symbolic link, whatever it points to)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def open_for_blocks(temp: str) -> None:
    """Create the temporary file if missing, never truncating blocks other instances wrote
    (and never opening a symbolic link put in its place)."""
    os.makedirs(os.path.dirname(temp) or ".", exist_ok=True)
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o666)   # umask applies, as for a whole file
    os.close(fd)


def finish(temp: str, final: str, filesize: int) -> None:
    """Cut the temporary file to the announced size, move it to its final name. Not
    fsynced, like a whole file (and like curl or rsync by default): what a process writes
    survives its kill -9; a power cut is the file system's business."""
    fd = os.open(temp, os.O_RDWR | NOFOLLOW)
    try:
        os.ftruncate(fd, filesize)
    finally:
        os.close(fd)
    os.replace(temp, final)


def prune(state_dir: str, max_age: float, now: float = None, match=None,
          beside: bool = False) -> int:
    """Remove manifests not touched for max_age seconds, with the temporary file of an
    incomplete one; a manifest locked by another process is left alone. Returns how many.
    ``match(name)``: which names are manifests (default: ``*.parts``); ``beside``: the
    manifests sit in the data tree beside their temporary files and name them by base name
    (nodeparts.py)."""
    now = time.time() if now is None else now
    match = match or (lambda n: n.endswith(".parts"))
    try:
        names = [n for n in os.listdir(state_dir) if match(n)]
    except OSError:
        return 0
    removed = 0
    for n in names:
        path = os.path.join(state_dir, n)
        try:
            if now - os.stat(path).st_mtime < max_age:
                continue
            fd = os.open(path, os.O_RDWR | NOFOLLOW | os.O_NONBLOCK)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                continue
        except OSError:
            continue
        held = None
        try:
            held = locks.acquire(fd, path, blocking=False)
            if held is None:
                continue
            try:
                data = json.loads(os.read(fd, 1 << 20).decode() or "{}")
            except ValueError:
                data = {}
            temp = data.get("temp") if isinstance(data, dict) else None
            if beside and isinstance(temp, str):    # a base name, in this directory only
                temp = os.path.join(state_dir, os.path.basename(temp)) \
                    if os.path.basename(temp) not in ("", ".", "..") else None
            if temp and isinstance(temp, str) and not data.get("complete"):
                try:
                    if now - os.stat(temp).st_mtime >= max_age:
                        os.unlink(temp)
                except OSError:
                    pass
            os.unlink(path)
            removed += 1
        finally:
            if held is not None:
                held.release()
            os.close(fd)
    return removed
