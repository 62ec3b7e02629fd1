"""A block that travels as its own part file (parts method ``p``): what it belongs to.

A pump with ``inplace off`` keeps each block as ``<name>.<bsz>.<blktot>.<brem>.<bno>.<algo>.Part``
and announces it under that name with ``parts=p,...`` (checksums-and-parts.md §4.2). The
next hop fetches the whole part file (the block is all of it: fetch.py reads it from offset
0) and files the block under ``<name>``: in place in the file (inplace on), or as its own
part file with the same suffix (inplace off), so the name does not grow at every pump.
"""

import os

from sarra import checksum


def block_target(work, final: str, parts) -> str:
    """The local file a method-p block belongs to (work.new_file/local_path follow), or
    ``final`` unchanged when the name does not carry the suffix its parts header says."""
    if parts is None or parts.method != "p":
        return final
    d, name = os.path.split(final)
    got = checksum.parse_part_suffix(name)
    if got is None:
        return final
    target, p, algo = got
    s = getattr(work, "sum", None)
    if (target in ("", ".", "..") or algo != getattr(s, "algo", None)
            or (p.bsz, p.blktot, p.brem, p.bno) != (parts.bsz, parts.blktot, parts.brem,
                                                    parts.bno)):
        return final
    work.new_file, work.local_path = target, os.path.join(d, target)
    return work.local_path
