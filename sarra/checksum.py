"""Checksums (the ``sum`` header) and partitioning (the ``parts`` header).

Facts: doc/spec/checksums-and-parts.md.  Hashing streams the file through one large
reusable buffer; part planning follows the v2 rules exactly (binary multiples, brem is the
file remainder, blktot counts the short last block).
"""

import dataclasses
import functools
import hashlib
import os
import random
import re
import threading
from typing import Callable, Dict, List, NamedTuple, Optional

from sarra.oscompat import pread

BUFSIZE = 4 << 20            # 4 MiB reads
MIB = 1 << 20
AUTO_T = 50 * MIB            # the 'T' of automatic partitioning
SMALL_READ = 64 << 10        # ranges up to this size are read with plain read() calls

#: algorithms computed from the data; only these are compared after a download
DATA_ALGOS: Dict[str, Callable] = {"d": hashlib.md5, "s": hashlib.sha512}
#: sums that never carry a parts header
NO_PARTS_ALGOS = frozenset({"R", "L", "m", "r"})
#: sums that can never match a local file (never used to skip a download)
NOT_COMPARABLE = frozenset({"0", "n", "z", "a", "p", "R", "L", "m", "r", "l"})
#: the other algorithms of the spec (§1): none of them is computed from the data
NON_DATA_ALGOS = frozenset({"0", "n", "a", "z", "p", "R", "L", "m", "r", "l"})


def unknown(s: "Sum"):
    """Why a received sum names no algorithm of the spec nor one registered here (its
    value would check nothing; 'z' must name the algorithm to compute), else None."""
    if s.algo not in DATA_ALGOS and s.algo not in NON_DATA_ALGOS:
        return f"unknown checksum algorithm {s.algo!r}"
    if s.algo == "z" and s.value not in DATA_ALGOS and s.value not in ("n", "0"):
        return f"unknown checksum algorithm {s.value!r} to compute ('z,d' or 'z,s')"
    return None


class Sum(NamedTuple):
    algo: str     # 'd', 's', 'n', '0', 'a', 'z', 'L', 'R', 'p', or a registered word
    value: str    # hex digest, random digits, or for 'z' the algorithm to compute

    def __str__(self) -> str:
        return f"{self.algo},{self.value}" if self.value != "" else self.algo


def register(algo: str, factory: Callable) -> None:
    """Add a data checksum algorithm (factory returns a hashlib-like object)."""
    DATA_ALGOS[algo] = factory


#: hex digits of each data algorithm's value, by factory (its digest size, found once)
_HEX_LEN: Dict[Callable, int] = {}
_HEX = re.compile(r"[0-9a-fA-F]*")


def parse_sum(text: str) -> Sum:
    """Parse a sum header; tolerates the bare flag v2 emits for partitioned n/0 posts."""
    if not isinstance(text, str) or not text or text != text.strip():
        raise ValueError("expected '<algo>,<value>'")
    algo, sep, value = text.partition(",")
    if any(c.isspace() for c in algo):
        raise ValueError("no whitespace allowed in the algorithm name")
    if not algo or "," in value and algo != "z":
        raise ValueError("expected '<algo>,<value>'")
    if algo == "z" and not value:
        raise ValueError("'z' needs the algorithm to compute, e.g. 'z,d'")
    factory = DATA_ALGOS.get(algo)
    if factory is not None and value:
        want = _HEX_LEN.get(factory)
        if want is None:    # a hasher made once per algorithm, not per message
            want = _HEX_LEN[factory] = factory().digest_size * 2
        if len(value) != want or not _HEX.fullmatch(value):
            raise ValueError(f"'{algo}' needs {want} hex digits")
    return Sum(algo, value)


def new_hasher(algo: str):
    """A fresh hashlib-like object for a data algorithm, or None if it is not computable."""
    f = DATA_ALGOS.get(algo)
    return f() if f else None


def name_sum(algo: str, text: str) -> str:
    """Value of the name-based sums: n = MD5, R and L = SHA-512 of a UTF-8 string."""
    h = hashlib.md5() if algo == "n" else hashlib.sha512()
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def random_sum() -> str:
    return "%.4d" % random.randint(0, 9999)


# ---------------------------------------------------------------- parts

@dataclasses.dataclass(frozen=True)
class Parts:
    method: str   # '1' whole file, 'i' inplace block, 'p' part file
    bsz: int
    blktot: int
    brem: int
    bno: int

    @classmethod
    def parse(cls, text: str) -> "Parts":
        """A parts header read; the last few are remembered (read several times per
        message; a Parts cannot be changed)."""
        if not isinstance(text, str):
            raise ValueError("expected text")
        return _parse_parts(text) if cls is Parts else cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> "Parts":
        f = text.split(",")
        if not 2 <= len(f) <= 5:
            raise ValueError("expected '<method>,<bsz>,<blktot>,<brem>,<bno>'")
        method = f[0]
        if method not in ("1", "i", "p"):
            raise ValueError(f"unknown method {method!r} (expected 1, i or p)")
        nums = []
        for x in f[1:]:
            if not x.isdigit() or not x.isascii():
                raise ValueError(f"{x!r} is not a non-negative integer")
            nums.append(int(x))
        nums += [1, 0, 0][len(nums) - 1:]
        bsz, blktot, brem, bno = nums
        if method == "1":
            return cls("1", bsz, blktot, brem, bno)
        if blktot < 1 or bno >= blktot:
            raise ValueError(f"block {bno} of {blktot} is impossible")
        if bsz == 0:
            raise ValueError("block size 0 for a partitioned file")
        return cls(method, bsz, blktot, brem, bno)

    def __str__(self) -> str:
        return f"{self.method},{self.bsz},{self.blktot},{self.brem},{self.bno}"

    @property
    def whole(self) -> bool:
        return self.method == "1"

    @property
    def offset(self) -> int:
        return 0 if self.whole else self.bno * self.bsz

    @property
    def length(self) -> int:
        if self.whole:
            return self.bsz
        if self.bno == self.blktot - 1 and 0 < self.brem < self.bsz:
            return self.brem
        return self.bsz   # brem 0 (exact multiple) or sr3's brem == bsz

    @property
    def filesize(self) -> int:
        if self.whole:
            return self.bsz
        last = self.brem if 0 < self.brem < self.bsz else self.bsz
        return (self.blktot - 1) * self.bsz + last

    @property
    def last(self) -> bool:
        return self.whole or self.bno == self.blktot - 1

    def suffix(self, algo: str) -> str:
        """Part-file suffix: .<bsz>.<blktot>.<brem>.<bno>.<algo>.Part"""
        return f".{self.bsz}.{self.blktot}.{self.brem}.{self.bno}.{algo}.Part"


def parse_part_suffix(name: str):
    """(target name, Parts('p',...), algo) for a '<name>.<bsz>.<blktot>.<brem>.<bno>.<algo>.Part' name, else None."""
    f = name.split(".")
    if len(f) < 7 or f[-1] != "Part":
        return None
    if not all(x.isascii() and x.isdigit() for x in f[-6:-2]):
        return None
    bsz, blktot, brem, bno = (int(x) for x in f[-6:-2])
    if bsz <= 0 or bno >= blktot or brem >= bsz:
        return None
    return ".".join(f[:-6]), Parts("p", bsz, blktot, brem, bno), f[-2]


def block_size(size: int, blocksize: int) -> int:
    """Block size for a file of ``size`` bytes under the ``blocksize`` option; 0 = whole file."""
    if blocksize == 0:  # automatic
        if size > 100 * AUTO_T:
            bsz = 10 * AUTO_T
        elif size > 10 * AUTO_T:
            bsz = (size + 9) // 10
        elif size > AUTO_T:
            bsz = (size + 2) // 3
        else:
            return 0
    elif blocksize == 1:
        return 0
    else:
        bsz = blocksize
    return bsz if 0 < bsz < size else 0


def plan_parts(size: int, blocksize: int) -> List[Parts]:
    """Every block post for a file of ``size`` bytes, in block order."""
    bsz = block_size(size, blocksize)
    if not bsz:
        return [Parts("1", size, 1, 0, 0)]
    blktot = (size + bsz - 1) // bsz
    brem = size % bsz
    return [Parts("i", bsz, blktot, brem, k) for k in range(blktot)]


# ---------------------------------------------------------------- hashing files

_local = threading.local()      # one reusable read buffer per thread


def _buffer(size: int) -> memoryview:
    """A writable view of ``size`` bytes of this thread's reusable buffer.

    Allocating (and zeroing) a multi-MiB bytearray per file costs more than hashing a
    small file; the buffer is kept and only grows.  Threads hashing blocks in parallel
    (hash_parts) each get their own; it goes away with the thread."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = bytearray(size)
    return memoryview(buf)[:size]


def hash_range(path: str, algo: str, offset: int = 0, length: Optional[int] = None,
               bufsize: int = BUFSIZE) -> str:
    """Hex digest of bytes [offset, offset+length) of a file (length None = to the end)."""
    h = new_hasher(algo)
    if h is None:
        raise ValueError(f"sum {algo!r} is not computed from data")
    bufsize = max(1, int(bufsize))
    remaining = length
    if length is not None and length <= SMALL_READ:
        # small range (most files): read exactly what is needed with plain descriptor
        # calls (no file object, no big buffer: one pread for a small file)
        fd = os.open(path, os.O_RDONLY)
        try:
            while remaining > 0:
                chunk = pread(fd, min(bufsize, remaining), offset)
                if not chunk:
                    break
                h.update(chunk)
                remaining -= len(chunk)
                offset += len(chunk)
        finally:
            os.close(fd)
    else:
        with open(path, "rb", buffering=0) as f:
            if offset:
                f.seek(offset)
            if length is None:
                size = os.fstat(f.fileno()).st_size - offset
                bufsize = min(bufsize, max(size + 1, 1 << 16))   # +1: one read sees EOF
            else:
                bufsize = min(bufsize, length)
            view = _buffer(bufsize)
            try:
                while remaining is None or remaining > 0:
                    n = f.readinto(view if remaining is None or remaining >= bufsize
                                   else view[:remaining])
                    if not n:
                        break
                    h.update(view[:n])
                    if remaining is not None:
                        remaining -= n
            finally:
                view.release()
    if remaining:
        raise ValueError(f"{path}: file shorter than announced ({remaining} bytes missing)")
    return h.hexdigest()


def hash_parts(path: str, algo: str, parts: List[Parts], bufsize: int = BUFSIZE,
               workers: int = 0) -> List[str]:
    """Digests of each block; with several blocks, blocks are hashed by ``workers`` threads
    (hashlib releases the GIL, so two cores hash two blocks at once)."""
    if len(parts) == 1:
        p = parts[0]
        return [hash_range(path, algo, p.offset, p.length, bufsize)]
    workers = workers or min(len(parts), os.cpu_count() or 1)
    if workers <= 1:
        return [hash_range(path, algo, p.offset, p.length, bufsize) for p in parts]
    from concurrent.futures import ThreadPoolExecutor   # here: rarely needed (start-up time)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: hash_range(path, algo, p.offset, p.length, bufsize), parts))


def xattr_sum(path: str, mtime: float) -> Optional[str]:
    """A sum cached in the file's extended attributes, if it was stored for this mtime."""
    try:
        stored_mtime = os.getxattr(path, "user.sr_mtime").decode()
        if float(stored_mtime) != mtime:
            return None
        return os.getxattr(path, "user.sr_sum").decode()
    except (OSError, AttributeError, ValueError):
        return None


def store_xattr_sum(path: str, sumtext: str, mtime: float) -> None:
    try:
        os.setxattr(path, "user.sr_sum", sumtext.encode())
        os.setxattr(path, "user.sr_mtime", repr(mtime).encode())
    except (OSError, AttributeError):
        pass  # file system without user xattrs: nothing cached


def sums_for_file(path: str, algo: str, parts: List[Parts], basename: str,
                  bufsize: int = BUFSIZE) -> List[str]:
    """The sum header of each block post of a file, for the posting algorithm ``algo``.

    ``algo`` is a letter ('d', 's', 'n', '0', 'a') or 'z,<x>'. Unknown algorithms fall
    back to 'd' as the reference poster does.
    """
    if algo.startswith("z,"):
        return [algo] * len(parts)
    if algo == "n":
        return [f"n,{name_sum('n', basename)}"] * len(parts)
    if algo == "0":
        return [f"0,{random_sum()}" for _ in parts]
    if algo == "a":
        try:
            stored = os.getxattr(path, "user.sr_sum").decode()
            if len(parts) == 1 and stored:
                if stored.startswith("a,"):
                    return [stored]
                if "," not in stored:
                    return [f"a,{stored}"]
                # otherwise it is our own cache of another sum: no application value
        except (OSError, AttributeError, UnicodeDecodeError):
            pass
        algo = "d"
    if algo not in DATA_ALGOS:
        algo = "d"
    return [f"{algo},{v}" for v in hash_parts(path, algo, parts, bufsize)]


@functools.lru_cache(maxsize=256)
def _parse_parts(text: str) -> Parts:
    return Parts._parse(text)
