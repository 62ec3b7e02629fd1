"""The download of one block of a partitioned file written in place (inplace on, the
subscriber's default): the block goes at its offset into the file's temporary name, a
manifest (assemble.py) records which blocks of which version are in, and the file is
renamed to its final name, once, when every block of that version is.

A block the local file already holds (the announced bytes at that offset: same length and
the same sum, wherever the local file ends) is copied from it rather than downloaded
(heldblocks.py): a file that grows or changes in place is announced again block by block
(sr_watch, issue 19 item 10) and only its changed blocks cross the network.
"""

import os
from contextlib import ExitStack

from sarra import checksum, paths, transfer
from sarra.oscompat import pread, pwrite
from sarra.flow import assemble, download, heldblocks, nodeparts, placement, report
from sarra.flow.stepstate import DownloadState
from sarra.flow.work import Outcome
from sarra.paths import NOFOLLOW


def block(flow, work, final, parts):
    """One block written at its offset into the file's temporary name; the manifest says
    when every block of this generation is in, and only then is the file renamed.
    A block the local file already holds (same sum at that range: an unchanged block of a
    rewritten or grown file, or one from a second source) is copied from it, not
    downloaded; the version is then completed, renamed and posted like any other
    (downstream gets every block of it). A block of an older version than the one
    recorded is refused (304)."""
    msg, bno = work.msg, parts.bno
    mtime = msg.headers.get("mtime")
    gen = assemble.generation(parts, mtime, msg.pubtime)
    version = assemble.order(mtime, msg.pubtime)
    # the sum tells versions apart only when it is of the data (not 0, n, z ...)
    s = work.sum
    bsum = str(s) if s.algo in checksum.DATA_ALGOS and s.value else ""
    # sr3 puts each block's own length in the 4th field: only the last block's post
    # gives the file size
    size = parts.filesize if parts.last or parts.brem != parts.bsz else None
    temp = placement.inflight_path(final, flow.cfg.inflight)
    download._temp_place(flow, work, temp)
    man = manifest(flow, final, temp)
    with locked(man):
        st = man.state(gen)
        if st == "new" and man.supersedes(version):
            raise Outcome(304, "not modified3: block of an older version of the file than "
                               "the one already here")
        ours = assemble.is_regular(temp)     # a link put there is not our temporary file
        if man.has(gen, bno, bsum or None):
            if st == "complete":
                if ours:    # recorded complete, then stopped before the rename: do it now
                    complete(flow, man, temp, final, msg, bno, parts.filesize)
                    work.code, work.text = report.INSERTED
                    download._done(flow, work, final, complete=True)
                    return
                if os.path.lexists(final):
                    download.already_here(flow, work, final,
                                           (304, "not modified3: file already assembled"))
            elif ours:
                download.already_here(flow, work, final,
                                       (304, "not modified3: block already received"))
        if st != "partial" or not ours or man.conflicts(gen, bno, bsum):
            paths.discard(temp)
            man.start(gen, final, temp, version)
        try:
            assemble.open_for_blocks(temp)
            # the block goes into this file, even if another instance replaces the
            # temporary file meanwhile (a newer version): then it is not recorded
            fd = os.open(temp, os.O_RDWR | NOFOLLOW)
        except OSError as e:            # an unwritable directory: the retry queue
            raise Outcome(499, f"cannot write {temp}: {e.strerror or e}", retry=True) from None
    try:
        digest = None
        if not flow.cfg.overwrite:
            digest = heldblocks.copy_range(final, fd, work.sum, parts.offset, parts.length,
                                           parts.offset)
        if digest is None:      # the driver writes the block into fd (PinnedPath)
            digest = download._fetch(flow, work, transfer.PinnedPath(temp, fd), parts.offset,
                                     parts.length, parts.offset)
        download._check(work, digest, f" in block {bno}")
        ino = os.fstat(fd).st_ino
    finally:
        os.close(fd)
    with locked(man):
        if man.state(gen) == "complete":
            raise Outcome(304, "not modified3: file completed by another instance")
        if man.state(gen) != "partial" or inode(temp) != ino:
            raise Outcome(304, "not modified3: a newer version of the file came in meanwhile")
        done = man.add(gen, bno, bsum, size if parts.last else None)
        if done:
            man.save()      # completion is on record before the rename (see above)
            complete(flow, man, temp, final, msg, bno, parts.filesize)
    work.code, work.text = report.INSERTED
    download._done(flow, work, final, complete=done)


def locked(man):
    """``man.locked()``; something other than a regular file where the manifest should be
    (a directory, a link, a fifo) fails this block's message once (500, not retried: no
    retry can help, the admin must remove it), never a retry loop."""
    stack = ExitStack()
    try:
        stack.enter_context(man.locked())
    except assemble.NotAManifest as e:
        raise Outcome(500, f"cannot keep the block manifest of {os.path.basename(man.final)}: "
                           f"{e.filename} is {e.strerror} (remove it)", failed=True) from None
    return stack


def manifest(flow, final, temp=None):
    if temp is not None and nodeparts.shared(flow.cfg):    # pump nodes: on the data tree
        return nodeparts.manifest(flow, final, temp)
    state = os.path.join(flow.user_cache_dir, "parts")
    st = DownloadState.of(flow)
    if not st.parts_pruned:             # once per process: old manifests go
        st.parts_pruned = True
        cfg = flow.cfg
        assemble.prune(state, max(cfg.retry_ttl or 0, cfg.expire or 0, 86400.0))
    return assemble.Manifest(state, final)


def complete(flow, man, temp, final, msg, bno, filesize):
    """Cut the assembled file to its size and rename it (inside the manifest's lock). On
    failure the block that completed it is taken back, so that its retry completes it."""
    try:
        assemble.finish(temp, final, man.size(filesize))
    except OSError as e:
        man.unadd(bno)
        man.save()
        raise Outcome(500, f"cannot complete {final} from {temp}: {e.strerror or e}",
                      retry=True) from None
    download._apply_meta(flow, msg, final)
    if isinstance(man, nodeparts.TreeManifest):
        nodeparts.completed(flow, temp)        # old manifests of the directory pruned


def inode(path):
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None
