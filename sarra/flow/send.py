"""The send step of the flow (sr_sender): push local files to a remote server.

The message names a file of this machine: a ``file:`` URL, or any URL whose relpath is
found under ``base_dir`` (v2's msg_2localfile, a default plugin of sr_sender, sets
``msg.local_file``). The file goes to ``destination`` under ``directory`` with the
subscriber's placement options (mirror, strip, flatten, rename; computed by :func:`place`
before on_message so that plugins can change ``new_dir``/``new_file``), written under an
inflight name and renamed (``inflight``, default ``.tmp``; NONE writes the final name),
or, for a block of a partitioned file, written in place at its offset under the final name.
``R`` posts delete the remote file, ``L`` posts make a remote symbolic link.

One transfer driver per destination stays connected across messages (flow.transfer_for):
no new session per file. The drivers reconnect when the server dropped the session; a
failed delivery is tried ``attempts`` times, then goes to the retry queue (497). Large
files go in slices so that the broker connection is kept alive and a stop request is
honoured between slices. With ``post_broker``, each delivery is announced there with
``post_base_url`` (default: destination) + the remote path, original pubtime and headers.
"""

import os
import time

from sarra.flow import placement, report, treeguard
from sarra.transfer import progress
from sarra.message import Message, escape, parse_time, topic_for, unescape
from sarra.flow.poster import public_base_url
from sarra.flow.outbound import first_url
from sarra.flow import naming, senddone
from sarra.transfer import CannotDeliver, TransferError
from sarra.flow import attempts
from sarra.flow.stepstate import SendState
from sarra.flow.work import Outcome, TransferInterrupted

#: bytes per slice of a large upload (sftp/file, which can write at an offset)
SLICE = 64 << 20
SLICED_SCHEMES = ("sftp", "file")


def local_file(flow, msg) -> str:
    """Where the announced file is on this machine."""
    path = unescape(msg.relpath)
    if msg.baseurl[:5].lower() == "file:":        # schemes are case-insensitive
        base = msg.baseurl[len("file:"):]
        if base.startswith("//"):
            base = base[2:]
            base = base[base.find("/"):] if "/" in base else "/"
        return os.path.join(base, path.lstrip("/")) if base.strip("/") else path
    cfg = flow.cfg
    root = cfg.base_dir or cfg.post_base_dir or "/"
    return os.path.join(root, path.lstrip("/"))


def remote_name(flow, work):
    """(remote directory relative to destination, file name) for the message."""
    cfg, msg = flow.cfg, work.msg
    directory, mirror, strip, flatten = placement.rule(cfg, work.mask, "")
    directory = "" if directory in (".", "./") else directory
    try:
        rdir, rfile = placement.local_name(msg.relpath, directory.rstrip("/") or ".", mirror,
                                           strip, flatten, msg.headers.get("rename"))
        rfile = naming.dest_name(flow, work, rfile)     # filename, destfn_script
    except placement.PlacementError as e:
        raise Outcome(403, f"Forbidden: {e}") from None
    if directory.startswith("/"):
        rdir = "/" + os.path.normpath(rdir).lstrip("/")      # '//abs' on the server
    else:
        rdir = os.path.normpath(rdir) if rdir not in ("", ".") else ""
        rdir = "" if rdir == "." else rdir
    return rdir, rfile


def place(flow, work):
    """Placement step of sr_sender: work.new_dir/new_file = remote directory and name."""
    work.new_dir, work.new_file = remote_name(flow, work)
    return work.new_file


def remote_url(flow, work) -> str:
    """destination + new_dir + new_file, with spaces and '#' escaped as the drivers expect."""
    dest = flow.cfg.destination.rstrip("/")
    d = escape((work.new_dir or "").rstrip("/"))
    name = escape(work.new_file)
    if not d:
        return f"{dest}/{name}"
    return f"{dest}/{d}/{name}"                 # d = '/abs' gives '//abs': absolute on the server


def remote_target(flow, work):
    """(remote directory, remote file name, URL) for the message under ``destination``."""
    if work.new_file is None:
        place(flow, work)
    return work.new_dir, work.new_file, remote_url(flow, work)


def send(flow, work):
    """The work step of sr_sender."""
    cfg, msg = flow.cfg, work.msg
    if not cfg.destination:
        raise Outcome(503, "Service unavailable: no destination configured")
    s = msg.sum
    _, _, url = remote_target(flow, work)
    scheme = url.split(":", 1)[0].lower()
    src = getattr(work, "local_file", None) or local_file(flow, msg)
    _check_local(flow, src)
    work.local_path = src
    if flow.hooks.has("do_send"):
        handled = flow.hooks.run_first("do_send", scheme=scheme)
        if handled is False:
            raise Outcome(497, f"{scheme} delivery failed: do_send plugin", retry=True)
        if handled is True:
            return _delivered(flow, work, url, report.DELIVERED)
    t = _driver(flow, url)
    if s.algo == "R":
        if cfg.events is not None and "delete" not in cfg.events:
            raise Outcome(304, "not modified3: delete events are not applied (events)")
        _attempts(flow, work, url, lambda: _delete(t, url))
        return _delivered(flow, work, url, (205, "Reset Content : deleted"))
    if s.algo == "L":
        if cfg.events is not None and "link" not in cfg.events:
            raise Outcome(304, "not modified3: link events are not applied (events)")
        target = msg.headers.get("link")
        if not target:
            raise Outcome(499, "symlink failed: the L post carries no link header (sr3 peer?)")
        _check_remote_link(flow, work, target)
        _attempts(flow, work, url, lambda: t.symlink(target, url))
        return _delivered(flow, work, url, (205, "Reset Content : linked"))
    if s.algo in ("m", "r", "l") or msg.parts is None:
        raise Outcome(304, "not modified3: directory operations are not sent")
    if not os.path.isfile(src):
        raise Outcome(404, f"Not Found: local file {src}", retry=True)
    n = _attempts(flow, work, url, lambda: _put(flow, work, t, src, url, scheme))
    flow.counters["bytes"] += n or 0
    _attributes(flow, work, t, url)
    flow.hooks.run("on_file")
    return _delivered(flow, work, url, report.DELIVERED)


def _check_remote_link(flow, work, target):
    """A remote link must stay inside the destination directory, from where it is and
    wherever it is moved there (treeguard's rule, judged from the names alone: the remote
    is not resolved): 403 otherwise."""
    m = work.mask
    directory = (m.directory if m is not None and m.directory else None) or flow.cfg.directory
    base = os.path.normpath(directory) if directory not in (None, "", ".", "./") else ""
    here = os.path.normpath(work.new_dir) if work.new_dir not in (None, "", ".") else ""
    if base and here != base and here.startswith(base.rstrip("/") + "/"):
        depth = here[len(base.rstrip("/")) + 1:].count("/") + 1
    elif not base and here and not here.startswith("/"):
        depth = here.count("/") + 1
    else:
        depth = 0               # at the top (or put elsewhere by a plugin): no '..' at all
    why = treeguard.target_escapes(target, depth, (base,) if base.startswith("/") else ())
    if why is not None:
        raise Outcome(403, f"Forbidden: link {work.new_file} -> {target!r} leads outside "
                           f"the destination directory: {why}")


def _check_local(flow, src):
    """With base_dir set, only files under it are sent (a file: URL naming /etc/shadow in an
    announcement must not make the sender ship it): 403 otherwise."""
    base = flow.cfg.base_dir
    if not base:
        return
    roots = SendState.of(flow).roots
    root = roots.get(base)
    if root is None:
        root = roots[base] = os.path.realpath(base).rstrip("/") + "/"
    real = os.path.realpath(src)
    if not real.startswith(root):
        raise Outcome(403, f"Forbidden: local file {src} is outside base_dir {base}")


def _delivered(flow, work, url, code):
    work.code, work.text = code
    flow.counters["transferred"] += 1
    senddone.delivered(flow, work, work.local_path)     # batch, delete
    if flow.post_broker is not None:
        work.posts.append(announce(flow, work, url))


_ciphers_set = False


def _prefer_gcm():
    """Let paramiko offer AES-GCM first (it lists it after CTR+HMAC): one OpenSSL pass per
    packet instead of two, +40 % upload rate on loopback. Every algorithm stays offered,
    so a server without GCM still gets CTR. (Belongs in transfer/sftp.py, where downloads
    would gain too; set here, for the sender's process only, until it moves there.)"""
    global _ciphers_set
    _ciphers_set = True
    try:
        import paramiko
        pc = tuple(paramiko.Transport._preferred_ciphers)
    except (ImportError, AttributeError):
        return
    gcm = tuple(c for c in pc if c.startswith("aes") and "-gcm" in c)
    if gcm and pc[:len(gcm)] != gcm:
        paramiko.Transport._preferred_ciphers = gcm + tuple(c for c in pc if c not in gcm)


def _driver(flow, url):
    if not _ciphers_set and url.startswith("sftp:"):
        _prefer_gcm()
    try:
        return flow.transfer_for(url, flow.cfg.destination)
    except KeyError:
        raise Outcome(503, f"Service unavailable {url.split(':', 1)[0]}") from None
    except TransferError as e:
        raise Outcome(503, f"Service unavailable: {e.message}") from None


def _delete(t, url):
    try:
        t.delete(url)
    except TransferError as e:
        if e.code != 404:
            raise


def _attempts(flow, work, url, op):
    """op() up to ``attempts`` times (the driver itself reconnects a dropped session)."""
    scheme = url.split(":", 1)[0]

    def once(attempt):
        try:
            with flow.interruptible():
                return op()
        except OSError as e:
            raise Outcome(500, f"cannot read {work.local_path}: {e.strerror}",
                          retry=True) from None

    def final(e, last):
        if isinstance(e, CannotDeliver):        # reports.md: 499, and no retry
            return Outcome(499, f"{scheme} delivery failed: {e.message}")
        if last:
            return Outcome(497, f"{scheme} delivery failed: {e.message}", retry=True)
        return None

    def again():
        drv = flow._by_base.get(flow.cfg.destination)
        if drv is not None:                     # the next try starts a fresh session
            try:
                drv.close()
            except Exception:
                pass
    return attempts.repeat(flow, _shown(url), once, final, again)


def _shown(url):
    from sarra.transfer import redact
    return redact(url)


def _put(flow, work, t, src, url, scheme):
    cfg, msg = flow.cfg, work.msg
    parts = msg.parts
    if parts is None or parts.whole:
        tmp = placement.inflight_path(url, cfg.inflight) if isinstance(cfg.inflight, str) else url
        size = os.path.getsize(src)
        n = _upload(flow, t, src, tmp, 0, size, None, scheme)
        if tmp != url:
            t.rename(tmp, url)
        return n
    # blocks travel as blocks: written in place at their offset in the remote file; after
    # the last one the file is cut to its size (an older, longer file keeps no stale tail)
    n = _upload(flow, t, src, url, parts.offset, parts.length, parts.offset, scheme)
    if parts.last:
        t.truncate(url, parts.filesize)
    return n


def _upload(flow, t, src, url, offset, length, remote_offset, scheme):
    """Upload src[offset:offset+length] to url at remote_offset (None: a new file), in
    slices for large files so that the broker is kept alive and a stop is seen."""
    if length <= SLICE or scheme not in SLICED_SCHEMES:
        if remote_offset is None and length == os.path.getsize(src) and offset == 0:
            return t.put(src, url)
        return t.put(src, url, offset=offset, length=length, remote_offset=remote_offset)
    done = 0
    shown = progress.Progress(flow.log, url, length, time.monotonic())   # a line every 10 s
    while done < length:
        n = min(SLICE, length - done)
        at = (remote_offset or 0) + done
        t.put(src, url, offset=offset + done, length=n,
              remote_offset=None if (remote_offset is None and done == 0) else at)
        done += n
        if flow.stop_event.is_set() and done < length:
            raise TransferInterrupted()
        flow.tick_brokers()
        shown.count = done
        shown.tick(time.monotonic())        # one clock read per slice
    return done


def _attributes(flow, work, t, url):
    cfg, h = flow.cfg, work.msg.headers
    mode = None
    if cfg.preserve_mode and "mode" in h:
        try:
            mode = int(h["mode"], 8) & 0o777
        except ValueError:
            mode = None
    elif cfg.chmod:
        mode = cfg.chmod
    mtime = atime = None
    if cfg.preserve_time and "mtime" in h:
        parts = work.msg.parts
        if parts is None or parts.whole or parts.bno == parts.blktot - 1:
            try:
                mtime = parse_time(h["mtime"])
                atime = parse_time(h["atime"]) if "atime" in h else mtime
            except ValueError:
                mtime = atime = None
    if mode is None and mtime is None:
        return
    try:
        t.set_attributes(url, mode=mode, mtime=mtime, atime=atime)
    except (TransferError, AttributeError) as e:
        flow.log.debug("%s: attributes not set: %s", _shown(url), e)


def announce(flow, work, url) -> Message:
    """The post for the remote pump: post_base_url (default: destination) + the remote
    path, so that baseurl + relpath is the delivered file's URL; pubtime and headers kept."""
    cfg, msg = flow.cfg, work.msg
    dest = cfg.destination.rstrip("/")
    rel = url[len(dest):] if url.startswith(dest) else "/" + url.split("/", 3)[-1]
    relpath = rel if rel.startswith("/") else "/" + rel
    base = public_base_url((first_url(cfg.post_base_url) or dest).rstrip("/"), flow.log)
    return Message(msg.pubtime, base, relpath, dict(msg.headers),
                   topic=topic_for(cfg.post_topic_prefix or "v02.post", relpath),
                   exchange=cfg.post_exchange or "")


__all__ = ["send", "place", "local_file", "remote_target", "announce"]
