"""sr_watch's source for the flow engine: event sources -> readiness -> posts, with a state.

Events (events=create,modify,delete,link,move): a new or changed file is posted once it is
ready (see sarra.watch.ready.Pending), block by block, every block of it each time its
content changed (announce.py); a removal is an R post; a symbolic link an L post; a
rename an R post with newname then the post of the new name with oldname.  New directories
are watched at once and what they already hold is posted.  What was announced is kept in
the state directory (sarra.watch.state.FileState), so a restart posts only what changed
meanwhile.  Directories inotify cannot watch (watch limit, permission) are polled.

:class:`WatchSource` follows the roots and turns events into pending paths; building the
posts of a ready path is :class:`sarra.watch.announce.Announcer`'s job.  The loop, the post
connection, the post step (duplicate suppression, on_post), the heartbeat, the stats file
and the hooks are the flow engine's (sarra.flow.engine, preset "watch"): each step's posts
are a batch, and the state is committed once the broker confirmed them (``done``), or the
files are pending again (``failed``).  The command line and actions are in
sarra.commands.watch.
"""

import dataclasses
import errno
import os
import stat
import time

from sarra import paths
from sarra.flow import presets
from sarra.flow.engine import Flow
from sarra.flow.sources import Announced, Source
from sarra.message import escape
from sarra.flow.poster import PostError, relpath_of, remove_post, resolve_path
from sarra.flow.publisher import post_options
from sarra.watch.announce import Announcer
from sarra.watch.events import (InotifySource, PollSource, Sink, WatchError, dir_key,
                                inotify_watched, limit_message, probe_watch, walk_files)
from sarra.watch.ready import Pending, temp_name
from sarra.watch.state import FileState, Rec

COMPONENT = "watch"


def Daemon(cfg, log, stop_event, instance=1) -> Flow:
    """One sr_watch instance: the flow engine with the watch preset (``.run()``)."""
    return Flow(cfg, presets.preset(COMPONENT), logger=log, stop_event=stop_event,
                instance=instance)


class WatchSource(Announcer, Source):
    """sr_watch's source: roots -> sources -> Pending -> posts, with a FileState."""

    def __init__(self, flow):
        Source.__init__(self, flow)
        cfg, instance = flow.cfg, flow.no
        self.cfg, self.log, self.stop = cfg, flow.log, flow.stop_event
        self.opts = dataclasses.replace(post_options(cfg), use_xattr=False)
        self.events = cfg.events or frozenset()
        self.polling = bool(cfg.force_polling)
        self.interval = max(cfg.sleep or 0.0, 0.1)
        self.follow = bool(cfg.follow_symlinks)
        self.ignore_written = cfg.__dict__.get("watch_ignore_written", False)
        cname = cfg.name or "-"
        sdir = paths.state_dir(COMPONENT, cname)
        self.state = FileState(os.path.join(sdir, f"sr_watch_{cname}_{instance:02d}.files"))
        self.pending = Pending(cfg.inflight, quiet=max(1.0, self.interval),
                               snapshot=cfg.__dict__.get("watch_snapshot_interval", 0.0))
        self.roots = [os.path.abspath(resolve_path(os.path.expanduser(p), cfg.post_base_dir))
                      .rstrip("/") or "/" for p in cfg.paths]
        self.active, self.missing = {}, set()
        self.born, self.denied, self.fallback = set(), set(), set()
        self.limited = False
        self.unverified = {}
        self.verify_ok = True
        self.reported = set()
        self.batch = []
        self.sink = Sink()
        self.poller = PollSource(self.follow)
        self.inotify = None if self.polling else InotifySource(self.sink, self.follow)
        self.counters = {"events": 0, "pending": 0}
        self.hooks = flow.hooks
        self._next_poll = self._next_roots = 0.0
        self._next_step = 0.0
        self._start = time.time()
        self._next_recheck = self._start + (cfg.heartbeat or 300)

    # ------------------------------------------------------------------ the flow's source
    broker_options = {"batch_writes": True}     # each batch ends with wait_confirms

    @property
    def what(self):
        return "watching %s with %s, events %s" % (
            " ".join(self.roots), "polling" if self.polling else "inotify",
            "|".join(sorted(self.events)))

    def start(self) -> None:
        now = time.time()
        for root in self.roots:
            self.add_root(root, now, initial=True)
        self.state.started()

    def get(self, wait: float):
        """One step every ``sleep`` seconds (at least 0.1), sooner than that never; when
        nothing is pending or polled, the first event wakes it (or 0.25 s)."""
        left = self._next_step - time.monotonic()
        if left > 0:
            self.stop.wait(left)
        if not self.pending and not self.poller.entries and not self.sink.q:
            self.sink.wake.wait(min(0.25, max(wait, 0.0)))
        self._next_step = time.monotonic() + self.interval
        now = time.time()
        self.step(now)
        batch, self.batch = self.batch, []
        if not batch:
            self.state.commit()         # what was recorded without a post (spared, foreign)
            return []
        return [Announced(m, now) for m in batch]

    def done(self, batch) -> None:
        """The batch's posts are confirmed: what they announced is on record."""
        self.state.commit()

    def failed(self, batch, error) -> None:
        self.log.error("%s; the %d files concerned will be posted again", error, len(batch))
        now = time.time()
        for p in self.state.rollback():
            self.pending.change(p, now)

    def stats(self):
        """For `sr status`, next to the flow's counters (files announced as 'received')."""
        return dict(self.counters, watched=len(self.state), start=self._start)

    def close(self) -> None:
        self.state.close()
        if self.inotify is not None:
            self.inotify.stop()

    def step(self, now: float) -> None:
        evs = self.sink.drain()
        if self.poller.entries and now >= self._next_poll:
            evs += self.poller.poll()
            self._next_poll = now + max(self.interval, 5 * self.poller.duration)
            for d in self.poller.denied - self.denied:
                self.denied_dir(d)
        self.counters["events"] += len(evs)
        if self.inotify is not None and self.inotify.overflowed.is_set():
            self.inotify.overflowed.clear()
            self.log.warning("inotify event queue overflowed, events were lost: rescanning "
                             "(raise fs.inotify.max_queued_events to avoid it)")
            for root in [r for r, key in self.active.items() if key is not None]:
                self.rescan(root, now)
        for ev in evs:
            handler = getattr(self, "on_" + ev.kind)
            if ev.dest is None:
                handler(ev.path, now)
            else:
                handler(ev.path, ev.dest, now)
        if now >= self._next_roots:
            self._next_roots = now + 1.0
            self.check_roots(now)
            self.verify(now)
        self.hooks.run("on_watch")
        for path, e in self.pending.ready(now):
            self.announce(path, e, now)
        self.counters["pending"] = len(self.pending)
        if now >= self._next_recheck:
            self._next_recheck = now + (self.cfg.heartbeat or 300)
            self.recheck(now)

    def recheck(self, now: float) -> None:
        """Every heartbeat, at the end of a step (in the same step as verify(), so that
        no poll comes between the fallback found there and its end here): denied
        directories and the inotify watch limit looked at again."""
        for d in sorted(self.denied):
            try:
                os.listdir(d)
            except OSError:
                continue
            self.log.info("%s: readable again, watching it", d)
            self.denied.discard(d)
            self.reported.discard(d)
            if self.inotify is not None and d not in self.fallback:
                try:
                    self.inotify.add(d)          # its own watch: the parent's skipped it
                except WatchError as e:
                    self.log.error("%s; polling it instead", e)
                    self.poll_dir(d, now)
            self.scan_dir(d, now)
        if self.limited and self.inotify is not None and self.fallback \
                and probe_watch(next(iter(self.fallback))) == 0:
            self.log.info("inotify watches available again: watching every directory again")
            self.limited = False
            for d in list(self.fallback):
                self.poller.remove(d)
            self.fallback.clear()
            for d in list(self.inotify.watches):
                self.inotify.remove(d)
            for root in list(self.active):
                self.add_root(root, now, initial=False)

    # ------------------------------------------------------------------ roots
    def add_root(self, root: str, now: float, initial: bool) -> None:
        try:
            st = os.stat(root)
        except OSError as e:
            if root not in self.missing:
                why = "does not exist" if e.errno == errno.ENOENT else e.strerror
                self.log.error("%s: watched path %s; waiting for it to appear", root, why)
            self.missing.add(root)
            return
        self.missing.discard(root)
        if not stat.S_ISDIR(st.st_mode):
            self.poller.add(root, recursive=False)
        elif self.inotify is not None:
            try:
                self.inotify.add(root)
            except WatchError as e:
                self.log.error("%s; polling it instead", e)
                self.poller.add(root, recursive=True)
                self.limited = self.limited or e.errno in (errno.ENOSPC, errno.EMFILE)
        else:
            self.poller.add(root, recursive=True)
        # a file root is left to the poller (a replaced or removed file is a change/delete)
        self.active[root] = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
        if stat.S_ISDIR(st.st_mode):
            self.rescan(root, now, initial)
        elif self.wanted(root):
            if not initial or self.cfg.post_on_start or root in self.state \
                    or self.state.restarted:
                self.pending.found(root, now)
            else:
                self.spare(root)

    def rescan(self, root: str, now: float, initial: bool = False) -> None:
        """Compare a tree with what was announced: post changes and removals."""
        self.scan_dir(root, now, initial)
        for p in self.state.under(root):
            if not os.path.lexists(p):
                self.on_delete(p, now)

    def check_roots(self, now: float) -> None:
        for root in sorted(self.missing):
            if os.path.exists(root):
                self.log.info("%s: appeared, watching it", root)
                self.add_root(root, now, initial=False)
        for root, key in list(self.active.items()):
            if key is None:
                continue
            try:
                st = os.stat(root)
                same = (st.st_dev, st.st_ino) == key
            except OSError:
                same = False
            if not same:
                self.root_gone(root, now)

    def root_gone(self, root: str, now: float) -> None:
        self.log.warning("%s: watched directory disappeared; waiting for it to come back", root)
        if self.inotify is not None:
            self.inotify.remove(root)
        self.poller.remove(root)
        self.active.pop(root, None)
        self.missing.add(root)
        for d in [d for d in self.fallback if d.startswith(root + "/")]:
            self.poller.remove(d)
            self.fallback.discard(d)
        self.on_rmdir(root, now)

    # ------------------------------------------------------------------ events
    def wanted(self, path: str) -> bool:
        inflight = self.cfg.inflight
        if temp_name(os.path.basename(path), inflight):
            return False
        if isinstance(inflight, str) and inflight.endswith("/") and \
                "/" + inflight.rstrip("/") + "/" in path:
            return False
        if not self.cfg.masks and self.cfg.accept_unmatch:
            return True
        # like sr_post: accept/reject on post_base_url + relpath
        p = os.path.realpath(path) if self.cfg.realpath_filter else path
        try:
            url = self.opts.post_base_url + escape(relpath_of(p, self.opts.post_base_dir))
        except PostError:
            url = p
        ok = self.cfg.filter(url)[0]
        if not ok and self.cfg.log_reject:
            self.log.info("rejected %s", url)
        return ok

    def on_change(self, path, now, closed=False):
        if self.wanted(path):
            if path not in self.state and path not in self.pending:
                self.born.add(path)
            (self.pending.close if closed else self.pending.change)(path, now)

    def on_close(self, path, now):
        self.on_change(path, now, closed=True)

    def on_delete(self, path, now):
        self.pending.pop(path)
        was_born = path in self.born
        self.born.discard(path)
        rec = self.state.pop(path)
        if rec is None and (was_born or not self.wanted(path)):
            return
        if "delete" in self.events:
            self.post(lambda: [remove_post(self.post_path(path), self.opts)], path)

    def on_move(self, src, dst, now):
        rec = self.state.pop(src)
        self.born.discard(src)
        if not self.wanted(dst):
            self.pending.pop(src)
            if rec is not None and "delete" in self.events:
                self.post(lambda: [remove_post(self.post_path(src), self.opts)], src)
            return
        e = self.pending.move(src, dst, now)
        if rec is not None:
            e.oldname, e.old_rec = src, rec
        elif not e.oldname and dst not in self.state:
            self.born.add(dst)

    def on_mkdir(self, path, now):
        self.scan_dir(path, now)

    def on_rmdir(self, path, now):
        if path in self.active:
            return self.root_gone(path, now)
        for p in self.state.under(path):
            self.on_delete(p, now)
        for p in self.pending.under(path):
            self.pending.pop(p)
            self.born.discard(p)
        for d in [d for d in self.fallback if d == path or d.startswith(path + "/")]:
            self.poller.remove(d)
            self.fallback.discard(d)
        if self.inotify is not None:
            for d in [d for d in self.inotify.watches if d == path or d.startswith(path + "/")]:
                self.inotify.remove(d)

    def on_dirmove(self, src, dst, now):
        if src in self.active:
            return self.root_gone(src, now)
        for p in self.state.under(src):
            self.on_move(p, dst + p[len(src):], now)
        for p in self.pending.under(src):
            self.on_move(p, dst + p[len(src):], now)
        self.on_rmdir(src, now)
        self.scan_dir(dst, now)

    def scan_dir(self, d: str, now: float, initial: bool = False) -> None:
        """Make pending what a directory holds that was not announced as it is now."""
        self.note_dir(d, now)
        # post_on_start off spares the tree found at the very first start; on a restart
        # (a state file from the last run) what appeared meanwhile is posted like any change
        post_new = not initial or self.cfg.post_on_start or self.state.restarted
        for p, isdir in walk_files(d, self.follow, self.walk_error):
            if isdir:
                self.note_dir(p, now)
            else:
                self.consider(p, now, post_new)

    def consider(self, p: str, now: float, post_new: bool = True) -> None:
        """A file or link found by a scan becomes pending unless announced as it is now."""
        if p in self.pending or not self.wanted(p):
            return
        rec = self.state.get(p)
        if rec is None:
            if post_new:
                self.born.add(p)
                self.pending.found(p, now)
            else:
                self.spare(p)
            return
        try:
            st = os.lstat(p)
        except OSError:
            return
        if rec.link is not None or (rec.size, rec.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.pending.found(p, now)

    def spare(self, p: str) -> None:
        """Spared by post_on_start off at the first start: on record as it is (written by
        state.started()), so that it is posted once it changes, and not at a restart."""
        try:
            st = os.lstat(p)
        except OSError:
            return
        if stat.S_ISREG(st.st_mode):
            self.state.set(p, Rec(st.st_size, st.st_mtime_ns))

    def walk_error(self, e: OSError) -> None:
        if isinstance(e, PermissionError):
            self.denied_dir(e.filename)
        elif not isinstance(e, FileNotFoundError):
            self.report(e.filename, f"{e.filename}: cannot list: {e.strerror}")

    def denied_dir(self, d: str) -> None:
        if d not in self.denied:
            self.denied.add(d)
            self.log.error("%s: permission denied: cannot watch or list it, the files below it "
                           "are not posted (checked again at each heartbeat)", d)

    def report(self, key: str, text: str) -> None:
        if key not in self.reported:
            self.reported.add(key)
            self.log.error("%s", text)

    # ------------------------------------------------------------------ inotify coverage
    def note_dir(self, d: str, now: float) -> None:
        if self.inotify is not None and self.verify_ok and d not in self.fallback:
            self.unverified.setdefault(d, [now, 0])

    def verify(self, now: float) -> None:
        """Directories whose inotify watch is missing (watch limit, permission) are polled."""
        due = [d for d, (t, _) in self.unverified.items() if now - t >= 1.0]
        if not due:
            return
        watched = inotify_watched()
        roots = []
        for r in self.active:
            try:
                if r in self.inotify.watches and os.path.isdir(r):
                    roots.append(dir_key(os.stat(r)))
            except OSError:
                pass
        if watched is None or (roots and not any(k in watched for k in roots)):
            self.log.debug("cannot check inotify watches in /proc; trusting watchdog")
            self.verify_ok = False
            self.unverified.clear()
            return
        limited = []
        for d in due:
            try:
                st = os.stat(d)
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode) or dir_key(st) in watched:
                del self.unverified[d]
                continue
            err = probe_watch(d)
            if err in (errno.ENOSPC, errno.EMFILE):
                limited.append(d)
            elif err == errno.EACCES:
                del self.unverified[d]
                self.denied_dir(d)
                continue
            else:
                entry = self.unverified[d]
                entry[0], entry[1] = now, entry[1] + 1
                if entry[1] < 3:
                    continue
                self.log.warning("%s: not watched by inotify (reason unknown); polling it", d)
            del self.unverified[d]
            self.poll_dir(d, now)
        if limited and not self.limited:
            more = f" ({len(limited) - 1} more directories polled too)" if len(limited) > 1 else ""
            self.log.error("%s%s", limit_message(limited[0]), more)
        elif limited:
            self.log.info("inotify watch limit: %d more directories polled (%s...)",
                          len(limited), limited[0])
        self.limited = self.limited or bool(limited)

    def poll_dir(self, d: str, now: float) -> None:
        self.fallback.add(d)
        self.poller.add(d, recursive=False)
        try:
            names = os.listdir(d)
        except OSError:
            return
        for n in names:
            p = os.path.join(d, n)
            if not os.path.isdir(p) or os.path.islink(p):
                self.consider(p, now)
