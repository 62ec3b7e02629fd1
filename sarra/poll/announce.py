"""The v02 post of a file sr_poll found (doc/spec/components.md, sr_poll): the file is not
read, so its sum is ``z,<algo>`` (the first downloader computes ``<algo>`` and posts it,
checksums-and-parts.md), ``parts=1,<size>,1,0,0``, mtime/atime from the listing.

Where a file is: its URL is the base URL (``post_base_url``, else ``destination``, any
password removed) joined with its relpath, ``<directory>/<name>`` as the ``directory``
line gives it (v2): ``destination ftp://h/`` with ``directory /data`` lists ``/data`` on
the server (``ftp://h//data``: absolute) and announces ``/data/<name>``; ``directory
data`` (or none: ``.``) is below the login directory. ``post_base_dir``, when the relpath
starts with it, is removed from the relpath as sr_post does.
"""

from typing import Optional

from sarra import checksum
from sarra.flow.poster import public_base_url
from sarra.message import Message, escape, format_time, join_url, now, topic_for


def dir_prefix(directory: str) -> str:
    """The relpath prefix of a polled directory: '' for the login directory ('.', '')."""
    d = (directory or "").strip()
    if d in ("", ".", "./"):
        return ""
    return d if d.endswith("/") else d + "/"


def dir_url(base: str, directory: str) -> str:
    """The URL listed for a directory (the same join as the subscriber's for a file)."""
    prefix = dir_prefix(directory)
    return join_url(base, prefix) if prefix else base


def base_url(cfg) -> str:
    """What posts carry as baseurl: post_base_url (its first URL), else destination."""
    url = (cfg.post_base_url or "").split(",")[0].strip() or cfg.destination
    return public_base_url(url)


def sum_header(algo: Optional[str]) -> str:
    """``z,<algo>``: the sum the downloader computes (config ``sum``; default z,d)."""
    algo = (algo or "z,d").strip()
    if algo.startswith("z,"):
        return algo
    return "z," + algo if algo in checksum.DATA_ALGOS else "z,d"


def file_post(cfg, baseurl: str, relpath: str, size: int, mtime: Optional[float],
              rename: Optional[str] = None, pubtime: Optional[str] = None) -> Message:
    """The post of one listed file (relpath unescaped: '/data/a b.txt')."""
    pbd = cfg.post_base_dir
    if pbd and relpath.startswith(pbd.rstrip("/") + "/"):
        relpath = relpath[len(pbd.rstrip("/")):]
    rel = escape(relpath)
    h = {}
    if cfg.to:
        h["to_clusters"] = cfg.to
    if cfg.preserve_time and mtime is not None:
        h["mtime"] = h["atime"] = format_time(mtime)
    h["parts"] = "1,%d,1,0,0" % size
    h["sum"] = sum_header(cfg.sum)
    if rename:
        h["rename"] = rename + relpath.rsplit("/", 1)[-1] if rename.endswith("/") else rename
    if cfg.source:
        h["source"] = cfg.source
    if cfg.cluster:
        h["from_cluster"] = cfg.cluster
    subtopic = cfg.bindings_subtopic() if hasattr(cfg, "bindings_subtopic") else None
    return Message(pubtime or now(), baseurl, rel, h,
                   topic=topic_for(cfg.post_topic_prefix or "v02.post", rel, subtopic),
                   exchange=cfg.post_exchange)
