"""The sr_poll loop: every ``sleep`` seconds, list each ``directory`` of ``destination``,
announce the files that are new or changed since they were last announced, then wait.

One poll:

1. ``vip``: only the node holding one of the addresses polls (sarra/ops/vip.py); the
   other lists nothing and posts nothing (standby).
2. ``do_poll`` plugins, when configured, replace the listing: they post with
   ``parent.post(...)`` (v2's arguments).
3. Otherwise each directory line (with the accept/reject lines that follow it) is listed
   (lister.py), subdirectories too (at most MAX_DEPTH deep). A file is announced when it
   is accepted (the first accept/reject matching its NAME wins, v2), not older than
   ``file_time_limit``, and its [size, mtime] differ from what was announced (a file that
   grew between polls is announced again, once per change).
4. The posts are published, the broker's confirms awaited; only then is the new record
   committed (state.py). A broker failure drops the record: the files are announced at
   the next poll. A directory whose listing failed keeps its record.
"""

import collections
import json
import os
import time
import types
from typing import Dict, List

from sarra import paths, plugin
from sarra.broker.client import Broker, BrokerError
from sarra.config.credentials import Credentials
from sarra.flow.cache import DupCache
from sarra.flow.publisher import Publisher
from sarra.message import Message, topic_for
from sarra.ops import instances, vip
from sarra.poll import announce, lister
from sarra.poll.state import PollState, state_path
from sarra.transfer import TransferError, close_pool, for_url, redact

COMPONENT = "poll"
#: subdirectories listed below a directory line, at most this deep
MAX_DEPTH = 16
#: directories listed in one poll, at most (a hostile server's endless tree)
MAX_DIRS = 10_000


class PollParent(Publisher):
    """What plugins see as ``parent``: the options (parent.<option>), ``logger``,
    ``line`` (on_line), ``data``/``entries`` (on_html_page), ``msg`` (on_post), and
    ``post(...)`` for do_poll plugins."""

    def __init__(self, poller, cfg, broker, log, hooks, cache):
        super().__init__(cfg, broker, log, hooks, cache)
        self.poller = poller
        self.logger = log
        self.line = self.data = None
        self.entries = {}
        self.user_cache_dir = poller.sdir
        self.details = None

    def post(self, post_exchange, post_base_url, post_relpath, to_clusters, partstr=None,
             sumstr=None, rename=None, mtime=None, atime=None, mode=None, link=None):
        """v2's sr_poll.post(): queue one post for this poll's batch (published, then
        confirmed, at the end of the poll)."""
        h = {}
        for k, v in (("to_clusters", to_clusters), ("parts", partstr), ("sum", sumstr),
                     ("rename", rename), ("mtime", mtime), ("atime", atime), ("link", link)):
            if v is not None:
                h[k] = str(v)
        if mode is not None:
            h["mode"] = "%o" % (int(mode) & 0o7777)
        if self.cfg.source:
            h["source"] = self.cfg.source
        if self.cfg.cluster:
            h["from_cluster"] = self.cfg.cluster
        from sarra.message import now
        msg = Message(now(), post_base_url, post_relpath, h,
                      topic=topic_for(self.cfg.post_topic_prefix or "v02.post", post_relpath),
                      exchange=post_exchange or self.cfg.post_exchange)
        self.poller.batch.append(msg)
        return True


class Poller:
    """One sr_poll instance."""

    def __init__(self, cfg, log, stop_event, instance: int = 1):
        self.cfg, self.log, self.stop = cfg, log, stop_event
        self.cname = cfg.name or "-"
        self.sdir = paths.state_dir(COMPONENT, self.cname)
        self.state = PollState(state_path(self.cname, instance), log)
        self.interval = cfg.sleep if cfg.sleep and cfg.sleep > 0 else 300.0
        self.pulls = collections.OrderedDict()
        for m in cfg.masks:
            self.pulls.setdefault(m.directory or ".", []).append(m)
        self.base = announce.base_url(cfg)
        self.credentials = Credentials.load()
        self.hooks = plugin.Hooks(None, log)
        for hook, names in cfg.plugins.items():
            for n in names:
                self.hooks.add(hook, n)
        self.broker = Broker(cfg.post_broker, logger=log, should_stop=stop_event.is_set,
                             batch_writes=True, password_lookup=self.credentials.password_for)
        cache = None
        if cfg.suppress_duplicates:
            cache = DupCache(os.path.join(self.sdir, "recent_files_%03d.cache" % instance),
                             cfg.suppress_duplicates)
        if cfg.reset:           # v2: forget what was announced; every file is posted again
            self.state.remove()
            if cache is not None:
                cache.clear()
            log.info("reset: what was announced is forgotten, every file listed is posted")
        self.parent = PollParent(self, cfg, self.broker, log, self.hooks, cache)
        self.hooks.parent = self.parent
        addresses = [a for a in (cfg.vip or []) if a]
        self.gate = vip.Gate(",".join(addresses) or None, None, logger=log,
                             probe=lambda _a, iface: any(vip.holds(a, iface) for a in addresses))
        self.pool: Dict = {}
        self.batch: List[Message] = []
        self.touched, self.ok, self.listed = set(), True, 0
        self.counters = {"polls": 0, "listed": 0, "posted": 0, "failed_listings": 0,
                         "standby": 0}
        self.stats = {"start": time.time(), "pid": os.getpid(), "received": 0,
                      "last_activity": None, "retry_queue": 0}
        self.stats_path = instances.stats_file(COMPONENT, self.cname, instance)
        self._next_hb = time.time() + (cfg.heartbeat or 300)

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        self.hooks.run("on_start")
        try:
            self.broker.connect()
            if self.cfg.declare_exchange and self.cfg.post_exchange:
                try:
                    self.broker.declare_exchange(self.cfg.post_exchange)
                except BrokerError as e:
                    self.log.warning("cannot declare exchange %s: %s", self.cfg.post_exchange, e)
            self.log.info("polling %s every %gs: %s", redact(self.cfg.destination or ""),
                          self.interval, ", ".join(self.pulls) or "(do_poll)")
            while not self.stop.is_set():
                t0 = time.monotonic()
                self.cycle()
                self.heartbeat()
                left = self.interval - (time.monotonic() - t0)
                while left > 0 and not self.stop.is_set():
                    self.stop.wait(min(left, 1.0))
                    self.broker.tick()
                    left = self.interval - (time.monotonic() - t0)
        finally:
            self.hooks.run("on_stop")
            close_pool(self.pool)
            if self.parent.cache is not None:
                self.parent.cache.close()
            self.broker.close()
            self.log.info("stopped: %d files announced in %d polls", self.parent.posted,
                          self.counters["polls"])
        return 0

    def cycle(self) -> None:
        """One poll, when this node is active (vip)."""
        if not self.gate.active():
            self.counters["standby"] += 1
            return
        self.counters["polls"] += 1
        self.batch, self.state.staged = [], {}
        complete = True
        if self.hooks.has("do_poll"):
            scheme = (self.cfg.destination or "").split(":", 1)[0].lower()
            self.hooks.run_first("do_poll", scheme=scheme)
        else:
            complete = self.poll_all()
        self.flush(complete)

    def poll_all(self) -> bool:
        """List every directory; True when every listing succeeded."""
        now = time.time()
        self.touched, self.ok, self.listed = set(), True, 0
        for directory, masks in self.pulls.items():
            d = self.cfg.expand_message_vars(directory, now=now) \
                if hasattr(self.cfg, "expand_message_vars") else directory
            self.poll_dir(d, masks, 0, now)
            if self.stop.is_set():
                return False
        return self.ok

    def driver(self, url):
        return for_url(url, self.pool, credentials=self.credentials.lookup,
                       timeout=self.cfg.timeout or 300, logger=self.log)

    def poll_dir(self, directory: str, masks, depth: int, now: float) -> None:
        if self.listed >= MAX_DIRS:
            self.log.error("poll: more than %d directories in one poll: the rest waits for "
                           "the next one", MAX_DIRS)
            self.ok = False
            return
        self.listed += 1
        url = announce.dir_url(self.cfg.destination, directory)
        shown = redact(url)
        try:
            entries = lister.list_directory(self.driver(url), url, self.hooks, self.parent,
                                            self.log, shown)
        except (lister.ListingError, TransferError) as e:
            self.log.error("poll: %s (nothing changes for it until it lists again)", e)
            self.counters["failed_listings"] += 1
            self.ok = False
            return
        self.touched.add(directory)
        self.counters["listed"] += len(entries)
        old = self.state.get(directory)
        new, subdirs = {}, []
        prefix = announce.dir_prefix(directory)
        for e in entries:
            if e.isdir:
                subdirs.append(e.name)
                continue
            if e.link:              # its listed size is the link's: ask for the target's
                e.size, e.listed = None, e.line
            mask = next((m for m in masks if m.regex.match(e.name)), None)
            if mask is None and self.cfg.accept_unmatch:
                mask = _UNMATCHED
            if mask is None or not mask.accept:
                if self.cfg.log_reject:
                    self.log.info("rejected %s%s", prefix, e.name)
                continue
            rec = self.record(e, old.get(e.name), url, prefix)
            if rec is None:
                if e.name in old:
                    new[e.name] = old[e.name]
                continue
            limit = self.cfg.file_time_limit
            if limit and e.mtime is not None and now - e.mtime > limit:
                self.log.debug("poll: %s%s older than file_time_limit: skipped", prefix, e.name)
                continue
            new[e.name] = rec
            if e.name in old and old[e.name][:2] == rec[:2]:
                continue
            rename = mask.filename[len("rename="):] \
                if (mask.filename or "").startswith("rename=") else self.cfg.rename
            try:
                self.batch.append(announce.file_post(self.cfg, self.base, prefix + e.name,
                                                     rec[0], e.mtime, rename))
            except ValueError as err:
                self.log.error("poll: %s%s cannot be announced: %s", prefix, e.name, err)
                new.pop(e.name, None)
        self.state.stage(directory, new)
        if depth < MAX_DEPTH:
            for sub in subdirs:
                if self.stop.is_set():
                    return
                self.poll_dir(prefix + sub, masks, depth + 1, now)

    def record(self, e, old, dir_url, prefix):
        """[size, mtime, listing words] of an entry, asking the server (HEAD) what the
        listing does not say exactly; None when it cannot be known now."""
        if e.size is None:
            if old is not None and e.listed and len(old) > 2 and old[2] == e.listed:
                return list(old)            # the listing says the same as last time
            url = dir_url + ("" if dir_url.endswith("/") else "/") + _quote(e.name, dir_url)
            if not lister.fill_in(self.driver(url), url, e, self.log, redact(url)):
                return None
        return [e.size, None if e.mtime is None else int(e.mtime), e.listed]

    def flush(self, complete: bool) -> None:
        """Publish the poll's posts; commit the record once the broker confirmed them."""
        batch, self.batch = self.batch, []
        try:
            for m in batch:
                self.parent.publish(m)
            if batch:
                self.broker.wait_confirms(timeout=max(30.0, len(batch) / 500.0))
        except BrokerError as e:
            self.log.error("%s; the %d files concerned are announced at the next poll",
                           e, len(batch))
            self.state.rollback()
            if self.parent.cache is not None:       # not seen: they are posted again
                for m in batch:
                    self.parent.cache.remove_path(m.path)
            return
        keep = self.touched if complete and not self.hooks.has("do_poll") else None
        try:
            self.state.commit(keep)
        except OSError as e:
            self.log.error("cannot write %s: %s (these files may be announced again)",
                           self.state.path, e.strerror or e)
        if batch:
            self.stats["last_activity"] = time.time()
        if self.parent.cache is not None:
            self.parent.cache.flush()

    def heartbeat(self) -> None:
        now = time.time()
        st = self.stats
        if "time" in st:
            st["prev_time"], st["prev_received"] = st["time"], st["received"]
        st.update(time=now, received=self.parent.posted, **self.counters)
        try:
            paths.atomic_write(str(self.stats_path), json.dumps(st))
        except OSError as e:
            self.log.warning("cannot write %s: %s", self.stats_path, e.strerror or e)
        if now >= self._next_hb:
            self._next_hb = now + (self.cfg.heartbeat or 300)
            self.hooks.run("on_heartbeat")


#: what an entry no accept/reject matched is accepted as, with accept_unmatch on
_UNMATCHED = types.SimpleNamespace(accept=True, filename=None)


def _quote(name: str, url: str) -> str:
    """A listed name in a URL path: v02's escapes (%20, %23), and for http(s) '%' and '?'
    too (the other drivers decode only %20 and %23)."""
    if url[:4].lower() == "http":
        name = name.replace("%", "%25").replace("?", "%3F")
    return name.replace(" ", "%20").replace("#", "%23")
