"""The download step of the flow (sr_subscribe, sr_sarra): fetch, verify, place, re-post.

Every file is written under a temporary name and renamed only after its checksum is
verified, so a redelivered message never yields a second copy or a corrupt file, and a
mismatch never leaves anything under the final name.
"""

import errno
import os
import time

from sarra import assemble, checksum, placement, report
from sarra.config import expand_message_vars
from sarra.flow import Outcome, download_stopped
from sarra.message import Message, escape, parse_time, topic_for
from sarra.transfer import TransferError


def destination(flow, work):
    """Compute work.new_dir/new_file/local_path from the matched accept clause."""
    cfg, msg = flow.cfg, work.msg
    m = work.mask
    directory = (m.directory if m is not None and m.directory else None) or cfg.directory or "."
    mirror = m.mirror if m is not None else cfg.mirror
    strip = m.strip if m is not None else cfg.strip
    flatten = (m.flatten if m is not None else cfg.flatten) or "/"
    root = os.path.abspath(expand_message_vars(directory, msg.headers.get("source"), extra={
        "BD": cfg.base_dir or "", "PBD": cfg.post_base_dir or "", "PDR": cfg.post_base_dir or "",
        "DR": cfg.post_base_dir or ""}))
    try:
        new_dir, new_file = placement.local_name(msg.relpath, root, mirror, strip, flatten,
                                                 msg.headers.get("rename"))
        work.local_path = placement.check_inside(new_dir, new_file, root)
    except placement.PlacementError as e:
        raise Outcome(403, f"Forbidden: {e}") from None
    work.root, work.new_dir, work.new_file = root, new_dir, new_file
    return work.local_path


def _mkdirs(flow, d):
    try:
        os.makedirs(d, mode=flow.cfg.chmod_dir or 0o775, exist_ok=True)
    except OSError as e:
        raise Outcome(500, f"cannot create directory {d}: {e.strerror}", retry=True) from None


def _apply_meta(flow, msg, path):
    cfg, h = flow.cfg, msg.headers
    try:
        if cfg.preserve_mode and "mode" in h:
            os.chmod(path, int(h["mode"], 8) & 0o7777)
        elif cfg.chmod:
            os.chmod(path, cfg.chmod)
        if cfg.preserve_time and "mtime" in h:
            mt = parse_time(h["mtime"])
            at = parse_time(h["atime"]) if "atime" in h else mt
            os.utime(path, (at, mt))
    except (ValueError, OSError) as e:
        flow.log.warning("%s: could not apply mode/time from the message: %s", path, e)


def _have(path, parts, s) -> bool:
    """The local file already holds the announced bytes (same checksum)."""
    if s.algo not in checksum.DATA_ALGOS or not s.value:
        return False
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if parts.whole and size != parts.filesize:
        return False
    if size < parts.offset + parts.length:
        return False
    try:
        return checksum.hash_range(path, s.algo, parts.offset, parts.length) == s.value
    except (OSError, ValueError):
        return False


def _fetch(flow, work, dest, offset, length, write_offset):
    """Download [offset, offset+length) of the message's URL into dest; returns digest."""
    msg = work.msg
    s = msg.sum
    algo = s.value if s.algo == "z" else s.algo
    hasher = checksum.new_hasher(algo)
    url = msg.url
    if flow.hooks.has("do_download"):
        handled = flow.hooks.run_first("do_download")
        if handled is True:
            return None
        if handled is False:
            raise Outcome(499, "do_download plugin failed", retry=True)
    tries = max(1, flow.cfg.attempts or 1)
    for attempt in range(1, tries + 1):
        h = checksum.new_hasher(algo) if hasher is not None else None
        try:
            t = flow.transfer_for(url)
            n = t.get(url, dest, offset=offset, length=length, hasher=_Progress(flow, h),
                      write_offset=write_offset)
            flow.counters["bytes"] += n
            return h.hexdigest() if h is not None else None
        except TransferError as e:
            if e.code == 404 or attempt == tries:
                raise Outcome(e.code if e.code in (404, 499, 503) else 499, e.message, retry=True) from None
            flow.log.warning("%s: attempt %d/%d failed: %s", url, attempt, tries, e.message)
            flow.stop_event.wait(min(5.0, 0.5 * attempt))
        except KeyError:
            raise Outcome(*report.UNSUPPORTED) from None
        except OSError as e:
            code = "disk full" if e.errno == errno.ENOSPC else e.strerror
            raise Outcome(500, f"cannot write {dest}: {code}", retry=True) from None


class _Progress:
    """Sits in the hasher's place during a transfer: feeds the real hasher, keeps the broker
    connection alive on long transfers, and aborts the transfer when a stop is requested."""

    def __init__(self, flow, hasher):
        self.flow, self.hasher = flow, hasher
        self.next_tick = time.monotonic() + 5.0

    def update(self, data):
        if self.hasher is not None:
            self.hasher.update(data)
        now = time.monotonic()
        if now >= self.next_tick:
            self.next_tick = now + 5.0
            if self.flow.stop_event.is_set():
                raise Stopped()
            if self.flow.broker is not None:
                self.flow.broker.tick()


Stopped = download_stopped


def _verify(flow, work, digest, temp):
    s = work.msg.sum
    if digest is None:
        return
    if s.algo == "z":
        work.msg.headers["sum"] = f"{s.value},{digest}"
        return
    if s.algo in checksum.DATA_ALGOS and digest != s.value:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise Outcome(417, f"Expectation Failed: checksum mismatch (announced {s.algo},{s.value}, "
                           f"received {s.algo},{digest})")


def download(flow, work):
    """The work step of sr_subscribe and sr_sarra."""
    msg, cfg = work.msg, flow.cfg
    s = msg.sum
    final = destination(flow, work)
    if s.algo == "R":
        return _remove(flow, work, final)
    if s.algo == "L":
        return _link(flow, work, final)
    if s.algo in ("m", "r", "l"):
        raise Outcome(304, "not modified3: directory operations are not applied")
    parts = msg.parts
    _mkdirs(flow, work.new_dir)
    if not cfg.overwrite and _have(final, parts, s):
        work.file_complete = parts.whole
        raise Outcome(*report.SAME_CHECKSUM)
    if parts.whole:
        temp = placement.inflight_path(final, cfg.inflight)
        _mkdirs(flow, os.path.dirname(temp))
        digest = _fetch(flow, work, temp, 0, None, None)
        _verify(flow, work, digest, temp)
        _apply_meta(flow, msg, temp)
        os.replace(temp, final)
        work.code, work.text = report.DOWNLOADED
        _done(flow, work, final, complete=True)
    elif cfg.inplace:
        _block_inplace(flow, work, final, parts)
    else:
        _block_partfile(flow, work, final, parts)
    flow.counters["transferred"] += 1


def _block_inplace(flow, work, final, parts):
    msg = work.msg
    gen = assemble.generation(parts, msg.headers.get("mtime"))
    temp = placement.inflight_path(final, flow.cfg.inflight)
    man = assemble.Manifest(os.path.join(flow.user_cache_dir, "parts"), final)
    with man.locked():
        st = man.state(gen)
        if (st == "complete" and os.path.exists(final)) or man.has(gen, parts.bno):
            raise Outcome(304, "not modified3: block already received")
        if st != "partial":
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            man.start(gen, final, temp)
        assemble.open_for_blocks(temp)
    digest = _fetch(flow, work, temp, parts.offset, parts.length, parts.offset)
    s = msg.sum
    if digest is not None and s.algo in checksum.DATA_ALGOS and digest != s.value:
        raise Outcome(417, f"Expectation Failed: checksum mismatch in block {parts.bno} "
                           f"(announced {s.value}, received {digest})")
    with man.locked():
        if man.state(gen) != "partial":
            raise Outcome(304, "not modified3: file completed by another instance")
        complete = man.add(gen, parts.bno)
        if complete:
            assemble.finish(temp, final, parts.filesize)
            _apply_meta(flow, msg, final)
    work.code, work.text = report.INSERTED
    _done(flow, work, final, complete=complete)


def _block_partfile(flow, work, final, parts):
    s = work.msg.sum
    part_path = final + parts.suffix(s.algo)
    temp = placement.inflight_path(part_path, flow.cfg.inflight)
    digest = _fetch(flow, work, temp, parts.offset, parts.length, None)
    _verify(flow, work, digest, temp)
    _apply_meta(flow, work.msg, temp)
    os.replace(temp, part_path)
    work.code, work.text = report.DOWNLOADED
    _done(flow, work, part_path, complete=False, part_file=True)


def _done(flow, work, path, complete: bool, part_file: bool = False):
    work.file_complete = complete
    work.local_path = path
    work.new_file = os.path.basename(path)
    ok = flow.hooks.run("on_part")
    if complete and ok:
        ok = flow.hooks.run("on_file")
    if flow.cfg.discard and complete:
        try:
            os.unlink(path)
        except OSError:
            pass
    if ok and flow.post_broker is not None:
        work.posts.append(repost(flow, work, path, part_file))


def repost(flow, work, path, part_file=False) -> Message:
    """The announcement of our local copy: same pubtime and headers, our base URL."""
    cfg, msg = flow.cfg, work.msg
    base = cfg.post_base_dir or work.root
    rel = os.path.relpath(path, base)
    if rel.startswith(".."):
        rel = path
    rel = "/" + rel.lstrip("/")
    headers = dict(msg.headers)
    parts = msg.parts
    if parts is not None and part_file:
        headers["parts"] = str(parts.__class__("p", parts.bsz, parts.blktot, parts.brem, parts.bno))
    headers.pop("rename", None)
    relpath = escape(rel)
    return Message(msg.pubtime, cfg.post_base_url, relpath, headers,
                   topic=topic_for(cfg.post_topic_prefix or "v02.post", relpath),
                   exchange=cfg.post_exchange or "")


def _remove(flow, work, final):
    newname = work.msg.headers.get("newname")
    if newname:
        try:
            new_dir, new_file = placement.local_name(escape(newname), work.root, flow.cfg.mirror,
                                                     flow.cfg.strip, flow.cfg.flatten or "/")
            target = placement.check_inside(new_dir, new_file, work.root)
        except placement.PlacementError as e:
            raise Outcome(403, f"Forbidden: {e}") from None
        if os.path.lexists(final):
            _mkdirs(flow, new_dir)
            os.replace(final, target)
            work.code, work.text = report.MOVED
            return
    try:
        os.unlink(final)
        work.code, work.text = report.REMOVED
    except FileNotFoundError:
        work.code, work.text = 304, "not modified3: already absent"
    except IsADirectoryError:
        raise Outcome(500, f"remove failed: {final} is a directory") from None
    except OSError as e:
        raise Outcome(500, f"remove failed: {final}: {e.strerror}", retry=True) from None
    if work.posts is not None and flow.post_broker is not None:
        work.posts.append(repost(flow, work, final))


def _link(flow, work, final):
    target = work.msg.headers.get("link")
    if not target:
        raise Outcome(499, "symlink failed: the L post carries no link header (sr3 peer?)")
    _mkdirs(flow, work.new_dir)
    tmp = final + ".sarra-link"
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, final)
    except OSError as e:
        raise Outcome(500, f"symlink failed: {final}: {e.strerror}") from None
    work.code, work.text = report.LINKED
    if flow.post_broker is not None:
        work.posts.append(repost(flow, work, final))
