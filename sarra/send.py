"""The send step of the flow (sr_sender): push local files to a remote server.

The message names a file of the local pump: a ``file:`` URL, or any URL whose relpath is
found under ``base_dir`` (v2's msg_2localfile). The file goes to ``destination`` under
``directory`` with the subscriber's placement options (mirror, strip, flatten), written
under an inflight name and renamed, or written in place block by block for parts. The
transfer driver (one per destination) stays connected across messages.
"""

import os

from sarra import placement, report
from sarra.flow import Outcome
from sarra.message import Message, escape, parse_time, topic_for, unescape
from sarra.transfer import TransferError


def local_file(flow, msg) -> str:
    """Where the announced file is on this machine."""
    path = unescape(msg.relpath)
    if msg.baseurl.startswith("file:"):
        base = msg.baseurl[len("file:"):]
        return os.path.join(base, path.lstrip("/")) if base.strip("/") else path
    root = flow.cfg.base_dir or flow.cfg.post_base_dir or "/"
    return os.path.join(root, path.lstrip("/"))


def remote_target(flow, work):
    """(remote directory, remote file name, URL) for the message under ``destination``."""
    cfg, msg = flow.cfg, work.msg
    m = work.mask
    directory = (m.directory if m is not None and m.directory else None) or cfg.directory or ""
    mirror = m.mirror if m is not None else cfg.mirror
    strip = m.strip if m is not None else cfg.strip
    flatten = (m.flatten if m is not None else cfg.flatten) or "/"
    try:
        rdir, rfile = placement.local_name(msg.relpath, directory.rstrip("/") or ".", mirror,
                                           strip, flatten, msg.headers.get("rename"))
    except placement.PlacementError as e:
        raise Outcome(403, f"Forbidden: {e}") from None
    rdir = os.path.normpath(rdir) if rdir not in ("", ".") else ""
    dest = cfg.destination.rstrip("/")
    if rdir.startswith("/"):
        url = f"{dest}/{rdir}/{rfile}"            # '//abs' = absolute on the server
    elif rdir:
        url = f"{dest}/{rdir}/{rfile}"
    else:
        url = f"{dest}/{rfile}"
    return rdir, rfile, url


def send(flow, work):
    """The work step of sr_sender."""
    cfg, msg = flow.cfg, work.msg
    if not cfg.destination:
        raise Outcome(503, "Service unavailable: no destination configured")
    s = msg.sum
    rdir, rfile, url = remote_target(flow, work)
    work.new_dir, work.new_file = rdir, rfile
    t = _driver(flow, url)
    try:
        if s.algo == "R":
            try:
                t.delete(url)
            except TransferError as e:
                if e.code != 404:
                    raise
            work.code, work.text = 205, "Reset Content : deleted"
        elif s.algo == "L":
            t.symlink(msg.headers.get("link", ""), url)
            work.code, work.text = 205, "Reset Content : linked"
        else:
            _put(flow, work, t, url)
    except TransferError as e:
        raise Outcome(497 if e.code != 404 else 404, f"{url.split(':', 1)[0]} delivery failed: {e.message}",
                      retry=True) from None
    if flow.post_broker is not None:
        work.posts.append(_announce(flow, work, url))
    flow.counters["transferred"] += 1


def _driver(flow, url):
    try:
        return flow.transfer_for(url)
    except KeyError:
        raise Outcome(503, f"Service unavailable {url.split(':', 1)[0]}") from None


def _put(flow, work, t, url):
    cfg, msg = flow.cfg, work.msg
    src = local_file(flow, msg)
    if not os.path.isfile(src):
        raise Outcome(404, f"Not Found: local file {src}", retry=True)
    parts = msg.parts
    if parts is None or parts.whole:
        # inflight None (NONE, or a post_broker is set): write under the final name
        tmp = placement.inflight_path(url, cfg.inflight) if isinstance(cfg.inflight, str) else url
        n = t.put(src, tmp)
        if tmp != url:
            t.rename(tmp, url)
        work.code, work.text = report.DELIVERED
    else:
        # blocks travel as blocks: written in place at their offset in the remote file
        n = t.put(src, url, offset=parts.offset, length=parts.length, remote_offset=parts.offset)
        work.code, work.text = report.DELIVERED
    flow.counters["bytes"] += n or 0
    h = msg.headers
    mode = int(h["mode"], 8) if cfg.preserve_mode and "mode" in h else (cfg.chmod or None)
    mtime = parse_time(h["mtime"]) if cfg.preserve_time and "mtime" in h else None
    if mode or mtime:
        try:
            t.set_attributes(url, mode=mode, mtime=mtime,
                             atime=parse_time(h["atime"]) if mtime and "atime" in h else None)
        except (TransferError, AttributeError, ValueError) as e:
            flow.log.debug("%s: attributes not set: %s", url, e)
    work.local_path = src
    flow.hooks.run("on_file")


def _announce(flow, work, url) -> Message:
    """The post for the remote pump: post_base_url (default destination) + remote path."""
    cfg, msg = flow.cfg, work.msg
    base = (cfg.post_base_url or cfg.destination).rstrip("/") + "/"
    dest = cfg.destination.rstrip("/")
    rel = url[len(dest):] if url.startswith(dest) else url
    relpath = escape("/" + rel.lstrip("/"))
    return Message(msg.pubtime, base, relpath, dict(msg.headers),
                   topic=topic_for(cfg.post_topic_prefix or "v02.post", relpath),
                   exchange=cfg.post_exchange or "")


__all__ = ["send", "local_file", "remote_target"]
