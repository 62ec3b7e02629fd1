"""sr_watch: announce what happens in directory trees, with the options and headers of sr_post.

    sr_watch [options] <action> [<config>]        (v2 order; '<config> <action>' too)

Actions: foreground start stop restart status sanity cleanup list edit add remove enable
disable show log.  ``foreground`` also runs without a configuration, from command-line
options (--post_broker, --post_base_url, --path ...).

Events (events=create,modify,delete,link,move): a new or changed file is posted once it is
ready (see sarra.watcher.Pending), block by block, and only the blocks whose checksum
changed since the last announcement; a removal is an R post; a symbolic link an L post; a
rename an R post with newname then the post of the new name with oldname.  New directories
are watched at once and what they already hold is posted.  What was announced is kept in
the state directory, so a restart posts only what changed meanwhile.

Watch-only options not (yet) in the common option table, read from the configuration:
``snapshot_interval <duration>`` (post a file still being written at that interval, only
its changed blocks; default 0 = wait until it is closed or quiet) and
``ignore_written <on|off>`` (skip files a subscriber of this package wrote and marked with
the user.sr_origin extended attribute, for two-way synchronisation; default off).
"""

import dataclasses
import errno
import json
import logging
import os
import shutil
import stat
import sys
import time

from sarra import actions, checksum, config, instances, logs, options, paths, plugin
from sarra.broker import Broker, BrokerError
from sarra.cache import DupCache
from sarra.commands import common, consumer
from sarra.commands.post import Publisher, post_options
from sarra.credentials import Credentials, CredentialsError
from sarra.message import escape
from sarra.poster import PostError, file_posts, link_post, relpath_of, remove_post
from sarra.watcher import (FileState, InotifySource, Pending, PollSource, Rec, Sink, WatchError,
                           dir_key, inotify_watched, limit_message, probe_watch, temp_name,
                           walk_files, written_path)

PROGRAM = "sr_watch"
COMPONENT = "watch"
ACTIONS = ("foreground", "start", "stop", "restart", "status", "sanity", "cleanup", "list",
           "edit", "add", "remove", "enable", "disable", "show", "log")
ALL_CONFIG_ACTIONS = ("status", "start", "stop", "restart", "sanity", "cleanup")
WATCH_OPTIONS = {"snapshot_interval": (options.parse_duration, 0.0),
                 "ignore_written": (options.parse_bool, False)}


def load_config(name, pairs):
    cfg = config.load(COMPONENT, name, pairs, warn_unknown=False)
    cfg.check_unknown(list(WATCH_OPTIONS))
    for opt, (conv, default) in WATCH_OPTIONS.items():
        raw = cfg.unknown.get(opt)
        if options.lookup(opt) is not None:          # once in the common option table
            value = cfg.get(opt, default)
        else:
            try:
                value = conv(raw[-1] or None) if raw else default
            except ValueError as e:
                raise config.ConfigError(f"{cfg.origin(opt)}: option '{opt}': {e}") from None
        cfg.__dict__["watch_" + opt] = default if value is None else value
    return cfg


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    synopsis = f"{PROGRAM} [options] <action> [<config>]"
    if not argv or common.wants_help(argv):
        common.print_help(PROGRAM, COMPONENT, synopsis, ACTIONS)
        return common.OK if argv else common.USAGE
    try:
        pairs, words, no = common.split_argv(argv, ACTIONS)
    except common.UsageError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    action = name = None
    for w in words:
        if action is None and w in ACTIONS:
            action = w
        elif name is None:
            name = w
        else:
            return common.fail(PROGRAM, f"unexpected argument {w!r}", common.USAGE)
    if action is None:
        return common.fail(PROGRAM, f"no action given (one of {', '.join(ACTIONS)})", common.USAGE)
    if action in consumer.FILE_ACTIONS:
        return consumer._file_action(COMPONENT, action, name)
    if name is None and action in ALL_CONFIG_ACTIONS:
        rc = common.OK
        for cname, enabled in actions.list_configs(COMPONENT):
            if enabled:
                rc = max(rc, _one(action, cname, pairs, no))
        return rc
    if name is None and action not in ("foreground", "show"):
        return common.fail(PROGRAM, f"action {action} needs a config name", common.USAGE)
    return _one(action, name, pairs, no)


def _one(action, name, pairs, no) -> int:
    try:
        cfg = load_config(name, pairs)
    except config.ConfigError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    cname = cfg.name or "-"
    if action == "show":
        print(cfg.show(), end="")
        return common.OK
    if action == "foreground":
        return foreground(cfg, no)
    if action in ("stop", "restart"):
        n = instances.stop(COMPONENT, cname)
        if action == "stop":
            print(f"{PROGRAM} {cname}: stopped {n} instance(s)")
            return common.OK
    if action in ("start", "restart"):
        return _start(cfg)
    if action == "status":
        st = instances.status(COMPONENT, cname)
        print(f"{PROGRAM} {cname}: {st.state} ({len(st.running)}/{max(st.expected, 1)} instances)")
        return common.OK
    if action == "sanity":
        st = instances.status(COMPONENT, cname)
        return _start(cfg) if st.expected and not st.running else common.OK
    if action == "log":
        os.execvp("tail", ["tail", "-f", str(logs.log_file(COMPONENT, cname, 1))])
    if action == "cleanup":
        instances.stop(COMPONENT, cname)
        shutil.rmtree(paths.state_dir(COMPONENT, cname, create=False), ignore_errors=True)
        print(f"{PROGRAM} {cname}: state removed (the next start posts every file again)")
        return common.OK
    return common.fail(PROGRAM, f"unknown action {action}", common.USAGE)


def _start(cfg) -> int:
    """sr_watch runs one instance per configuration, whatever `instances` says."""
    started = instances.start(COMPONENT, cfg.name, 1, module="sarra.commands.watch")
    for n, code in started.failed:
        print(f"{PROGRAM} {cfg.name}: instance {n} exited at once with code {code}; see "
              f"{logs.log_file(COMPONENT, cfg.name, n)}", file=sys.stderr)
    print(f"{PROGRAM} {cfg.name}: started {len(started)} instance(s)")
    return common.SOME_FAILED if started.failed else common.OK


def foreground(cfg, no=None) -> int:
    background = no is not None
    instance = no or 1
    cname = cfg.name or "-"
    log = logs.setup_logging(COMPONENT, cname, instance if background else None,
                             level=cfg.loglevel, foreground=not background, logdays=cfg.logdays)
    common.quiet_third_party()
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    for required in ("post_broker", "post_base_url"):
        if not getattr(cfg, required):
            log.error("option %s is required", required)
            return common.USAGE
    if not cfg.paths:
        log.error("no path to watch (give 'path' lines or --path)")
        return common.USAGE
    stop = instances.instance_signals(lambda: log.info("stop requested"))
    if background:
        instances.write_pid(COMPONENT, cname, instance)
    try:
        return Daemon(cfg, log, stop, instance).run()
    except (CredentialsError, plugin.PluginError) as e:
        log.error("%s", e)
        return common.USAGE
    except BrokerError as e:
        log.error("%s", e)
        return common.BROKER
    finally:
        if background:
            instances.remove_pid(COMPONENT, cname, instance)
        logging.shutdown()


class Daemon:
    """One sr_watch instance: sources -> Pending -> posts -> broker, with a FileState."""

    def __init__(self, cfg, log, stop_event, instance=1):
        self.cfg, self.log, self.stop = cfg, log, stop_event
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
        self.roots = [os.path.abspath(os.path.expanduser(p)).rstrip("/") or "/" for p in cfg.paths]
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
        self.counters = {"events": 0, "posted": 0, "pending": 0, "watched": 0}
        creds = Credentials.load()
        self.hooks = plugin.Hooks(None, log)
        for hook, names in cfg.plugins.items():
            for n in names:
                self.hooks.add(hook, n)
        self.broker = Broker(cfg.post_broker, logger=log, should_stop=stop_event.is_set,
                             batch_writes=True,           # each batch ends with wait_confirms
                             password_lookup=lambda u: (creds.lookup(u).password
                                                        if creds.lookup(u) else None))
        cache = None
        if cfg.suppress_duplicates:
            cache = DupCache(os.path.join(sdir, "recent_files_%03d.cache" % instance),
                             cfg.suppress_duplicates)
        self.pub = Publisher(cfg, self.broker, log, self.hooks, cache)
        self.pub.counters = self.counters
        self.hooks.parent = self.pub
        self._next_poll = self._next_roots = 0.0
        self._next_hb = time.time() + (cfg.heartbeat or 300)
        self.stats = {"start": time.time(), "pid": os.getpid(), "received": 0,
                      "last_activity": None, "retry_queue": 0}
        self.stats_path = instances.stats_file(COMPONENT, cname, instance)

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self.hooks.run("on_start")
        try:
            self.broker.connect()
            if self.cfg.declare_exchange and self.cfg.post_exchange:
                try:
                    self.broker.declare_exchange(self.cfg.post_exchange)
                except BrokerError as e:
                    self.log.warning("cannot declare exchange %s: %s", self.cfg.post_exchange, e)
            now = time.time()
            self.write_stats(now)
            for root in self.roots:
                self.add_root(root, now, initial=True)
            self.log.info("watching %s with %s, events %s", " ".join(self.roots),
                          "polling" if self.polling else "inotify", "|".join(sorted(self.events)))
            while not self.stop.is_set():
                t0 = time.monotonic()
                self.step(time.time())
                left = self.interval - (time.monotonic() - t0)
                if left > 0:
                    self.stop.wait(left)
                if not self.pending and not self.poller.entries and not self.sink.q:
                    self.sink.wake.wait(0.25)
        finally:
            self.hooks.run("on_stop")
            self.state.close()
            if self.pub.cache is not None:
                self.pub.cache.close()
            if self.inotify is not None:
                self.inotify.stop()
            self.broker.close()
            self.log.info("stopped: %d messages posted", self.pub.posted)
        return common.OK

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
        self.flush(now)
        self.counters["pending"] = len(self.pending)
        if now >= self._next_hb:
            self._next_hb = now + (self.cfg.heartbeat or 300)
            self.heartbeat(now)

    def flush(self, now: float) -> None:
        """Publish the batch; the state is committed only once the broker confirmed it."""
        if not self.batch:
            self.state.commit()
            return
        batch, self.batch = self.batch, []
        try:
            for m in batch:
                self.pub.publish(m)
            self.broker.wait_confirms(timeout=max(30.0, len(batch) / 500.0))
        except BrokerError as e:
            self.log.error("%s; the %d files concerned will be posted again", e, len(batch))
            for p in self.state.rollback():
                self.pending.change(p, now)
            return
        self.counters["posted"] = self.pub.posted
        self.stats["last_activity"] = time.time()
        self.state.commit()
        if self.pub.cache is not None:
            self.pub.cache.flush()

    def write_stats(self, now: float) -> None:
        """For `sr status`: files announced (as 'received'), rate between heartbeats."""
        st = self.stats
        if "time" in st:
            st["prev_time"], st["prev_received"] = st["time"], st["received"]
        st.update(time=now, received=self.pub.posted, **self.counters)
        try:
            paths.atomic_write(str(self.stats_path), json.dumps(st))
        except OSError as e:
            self.log.warning("cannot write %s: %s", self.stats_path, e.strerror or e)

    def heartbeat(self, now: float) -> None:
        self.counters["watched"] = len(self.state)
        self.write_stats(now)
        self.hooks.run("on_heartbeat")
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
        elif self.wanted(root) and (not initial or self.cfg.post_on_start or root in self.state):
            self.pending.found(root, now)

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
        post_new = not initial or self.cfg.post_on_start
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
            return
        try:
            st = os.lstat(p)
        except OSError:
            return
        if rec.link is not None or (rec.size, rec.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.pending.found(p, now)

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

    # ------------------------------------------------------------------ posting
    def post_path(self, path: str) -> str:
        return os.path.realpath(path) if self.cfg.realpath_post else path

    def rel(self, path: str) -> str:
        return relpath_of(self.post_path(path), self.opts.post_base_dir)

    def post(self, build, path: str) -> bool:
        try:
            self.batch.extend(build())
            return True
        except PostError as e:
            self.report(path, str(e))
        except OSError as e:
            self.report(path, f"{path}: {e.strerror or e}")
        return False

    def announce(self, path: str, e, now: float) -> None:
        try:
            st = os.lstat(path)
        except OSError as err:
            if err.errno != errno.ENOENT:
                return self.report(path, f"{path}: cannot stat: {err.strerror}")
            if e.oldname and "delete" in self.events:       # renamed, then gone at once
                self.post(lambda: [remove_post(self.post_path(e.oldname), self.opts)], path)
            if path in self.state:                          # a removal to post (again)
                self.on_delete(path, now)
            return
        if stat.S_ISDIR(st.st_mode):
            self.scan_dir(path, now)
        elif stat.S_ISLNK(st.st_mode):
            self.announce_link(path, e, st)
        elif stat.S_ISREG(st.st_mode):
            self.announce_file(path, e, st, now)

    def _moved(self, path, e):
        """The R post of a rename (old name, with newname), when events ask for it."""
        if e.oldname and self.events & {"delete", "move"}:
            return [remove_post(self.post_path(e.oldname), self.opts, newname=self.rel(path))]
        return []

    def announce_link(self, path, e, st) -> None:
        target = os.readlink(path)
        rec = self.state.get(path)
        if rec is not None and rec.link == target and not e.oldname:
            return

        def build():
            msgs = self._moved(path, e)
            old = self.rel(e.oldname) if e.oldname else None
            if "link" in self.events:
                msgs.append(link_post(self.post_path(path), self.opts, target, oldname=old))
            if self.follow:
                try:
                    st2 = os.stat(path)
                    if stat.S_ISREG(st2.st_mode):
                        msgs += file_posts(path, self.opts, st=st2)
                except OSError:
                    pass
            return msgs
        if self.post(build, path):
            self.state.set(path, Rec(link=target))
            self.born.discard(path)

    def announce_file(self, path, e, st, now) -> None:
        if self.ignore_written:
            where = written_path(path, st)
            if where is not None and where in (path, os.path.realpath(path)):
                self.state.set(path, Rec(st.st_size, st.st_mtime_ns, foreign=True))
                self.born.discard(path)
                self.log.debug("%s: written by a sarra subscriber, not posted", path)
                return
            if where is not None and not e.oldname and where != path \
                    and not os.path.lexists(where) and self.wanted(where):
                e.oldname = where                 # a local rename of a subscriber's file
        rec = self.state.get(path)
        new = rec is None or rec.link is not None or rec.foreign
        if e.oldname:
            ok = bool(self.events & {"create", "modify", "move"})
        else:
            ok = ("create" if new else "modify") in self.events
            if not new and (rec.size, rec.mtime_ns) == (st.st_size, st.st_mtime_ns):
                return
        if not ok:
            return
        try:
            moved = self._moved(path, e)            # the R post first: its pubtime is earlier
            msgs = self.file_msgs(path, st, self.rel(e.oldname) if e.oldname else None)
            st2 = os.lstat(path)
        except (PostError, OSError) as err:
            try:
                st2 = os.lstat(path)
            except OSError:
                return                                # gone meanwhile: its delete follows
            if (st2.st_size, st2.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                self.pending.change(path, now)        # changed while read: try again later
            else:
                self.report(path, str(err) if isinstance(err, PostError)
                            else f"{path}: {err.strerror or err}")
            return
        if (st2.st_size, st2.st_mtime_ns) != (st.st_size, st.st_mtime_ns) and not e.snap:
            self.pending.change(path, now)
            return
        self.reported.discard(path)
        sums = tuple(m.headers["sum"] for m in msgs)
        parts = checksum.Parts.parse(msgs[0].headers["parts"])
        bsz = 0 if parts.whole else parts.bsz
        if rec is not None and not new and not e.oldname and rec.bsz == bsz \
                and sums[0].split(",")[0] in checksum.DATA_ALGOS:
            msgs = [m for i, (m, s) in enumerate(zip(msgs, sums))
                    if i >= len(rec.sums) or rec.sums[i] != s]
        self.state.set(path, Rec(st.st_size, st.st_mtime_ns, bsz, sums))
        self.born.discard(path)
        self.batch.extend(moved + msgs)

    def file_msgs(self, path, st, oldname):
        """Posts of a regular file; a '.Part' file is one block, posted with method p."""
        part = checksum.parse_part_suffix(os.path.basename(path))
        if part is None:
            return file_posts(self.post_path(path), self.opts, oldname=oldname, st=st)
        _target, parts, algo = part
        if st.st_size != parts.length:
            raise PostError(f"{path}: part file holds {st.st_size} bytes, its name says "
                            f"{parts.length}")
        rename = self.opts.rename
        if rename and not rename.endswith("/"):
            rename += parts.suffix(algo)
        o = dataclasses.replace(self.opts, blocksize=1, rename=rename,
                                sum=algo if algo in checksum.DATA_ALGOS else self.opts.sum)
        msgs = file_posts(self.post_path(path), o, oldname=oldname, st=st)
        for m in msgs:
            m.headers["parts"] = str(parts)
        return msgs


if __name__ == "__main__":
    sys.exit(main())
