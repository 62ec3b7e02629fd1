"""One poll of sr_poll: list each ``directory`` of ``destination`` and build the posts of
the files that are new or changed since they were last announced (the flow engine posts
them: sarra/poll/source.py).

1. ``do_poll`` plugins, when configured, replace the listing: they post with
   ``parent.post(...)`` (v2's arguments).
2. Otherwise each directory line (with the accept/reject lines that follow it) is listed
   (lister.py), subdirectories too (at most MAX_DEPTH deep). A file is announced when it
   is accepted (the first accept/reject matching its NAME wins, v2), not older than
   ``file_time_limit``, and its [size, mtime] differ from what was announced (a file that
   grew between polls is announced again, once per change).
3. The record of the poll is staged; it is committed once the broker confirmed the posts
   (state.py), dropped otherwise: the files are then announced at the next poll. A
   directory whose listing failed keeps its record.
"""

import collections
import time
import types
from typing import Dict, List

from sarra import paths
from sarra.config.credentials import Credentials
from sarra.message import Message, now as now_stamp, topic_for
from sarra.poll import announce, lister, listing
from sarra.poll.state import PollState, state_path
from sarra.transfer import TransferError, close_pool, for_url, redact

COMPONENT = "poll"
#: subdirectories listed below a directory line, at most this deep
MAX_DEPTH = 16
#: directories listed in one poll, at most (a hostile server's endless tree)
MAX_DIRS = 10_000
#: seconds between polls when ``sleep`` is 0
DEFAULT_SLEEP = 300.0


class Poller:
    """What one poll lists and announces, and the record of what was announced. No broker
    here: ``poll()`` returns the posts and stages the record; the caller commits it once
    the broker confirmed them (``commit``), or drops it (``rollback``)."""

    def __init__(self, cfg, log, stop_event, hooks, parent, instance: int = 1,
                 credentials=None, reset: bool = False):
        self.cfg, self.log, self.stop = cfg, log, stop_event
        self.hooks, self.parent = hooks, parent
        self.cname = cfg.name or "-"
        self.sdir = paths.state_dir(COMPONENT, self.cname)
        self.state = PollState(state_path(self.cname, instance), log)
        if reset:               # v2: forget what was announced; every file is posted again
            self.state.remove()
            log.info("reset: what was announced is forgotten, every file listed is posted")
        self.interval = cfg.sleep if cfg.sleep and cfg.sleep > 0 else DEFAULT_SLEEP
        self.pulls = collections.OrderedDict()
        for m in cfg.masks:
            self.pulls.setdefault(m.directory or ".", []).append(m)
        self.base = announce.base_url(cfg)
        self.zone = time_zone(cfg)
        self.credentials = credentials or Credentials.load()
        self.pool: Dict = {}
        self.batch: List[Message] = []
        self.touched, self.ok, self.listed = set(), True, 0
        self.unannounceable = set()         # names refused once (logged once)
        self.counters = {"polls": 0, "listed": 0, "failed_listings": 0}

    def poll(self) -> List[Message]:
        """One poll: the posts of what is new or changed (the record staged)."""
        self.counters["polls"] += 1
        self.batch, self.state.staged = [], {}
        self.complete = False
        if self.hooks.has("do_poll"):
            scheme = (self.cfg.destination or "").split(":", 1)[0].lower()
            self.hooks.run_first("do_poll", scheme=scheme)
        else:
            self.complete = self.poll_all()
        batch, self.batch = self.batch, []
        return batch

    def commit(self) -> None:
        """The posts are confirmed: the staged record is what was announced (directories
        no longer polled forgotten after a complete poll)."""
        keep = self.touched if self.complete else None
        try:
            self.state.commit(keep)
        except OSError as e:
            self.log.error("cannot write %s: %s (these files may be announced again)",
                           self.state.path, e.strerror or e)

    def rollback(self) -> None:
        self.state.rollback()

    def close(self) -> None:
        close_pool(self.pool)

    def v2_post(self, post_exchange, post_base_url, post_relpath, to_clusters, partstr=None,
                sumstr=None, rename=None, mtime=None, atime=None, mode=None, link=None):
        """``parent.post(...)`` of do_poll plugins (v2's arguments): one post for this
        poll's batch, published and confirmed at the end of the poll."""
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
        self.batch.append(Message(
            now_stamp(), post_base_url, post_relpath, h,
            topic=topic_for(self.cfg.post_topic_prefix or "v02.post", post_relpath),
            exchange=post_exchange or self.cfg.post_exchange))
        return True

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
        for e in entries:
            listing.in_zone(e, self.zone)
        self.touched.add(directory)
        self.counters["listed"] += len(entries)
        old = self.state.get(directory)
        new, subdirs = {}, []
        http = url[:4].lower() == "http"
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
            if http and ("%" in e.name or "?" in e.name):
                # the URL a subscriber builds (baseurl + relpath) would name another file
                if e.name not in self.unannounceable:
                    self.unannounceable.add(e.name)
                    self.log.warning("poll: %s%s: a '%%' or '?' in a name cannot be announced "
                                     "over http (the URL would name another file)",
                                     shown, listing.shown(e.name))
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

def time_zone(cfg):
    """The tzinfo of option destination_timezone (None for UTC, v2's default); ValueError
    naming the option's file:line for a zone that does not exist."""
    name = (getattr(cfg, "destination_timezone", None) or "UTC").strip()
    if name.upper() in ("UTC", "GMT", "Z"):
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        where = cfg.origin("destination_timezone") if hasattr(cfg, "origin") else ""
        raise ValueError(f"{where}: option destination_timezone: unknown time zone "
                         f"{name!r}") from None


#: what an entry no accept/reject matched is accepted as, with accept_unmatch on
_UNMATCHED = types.SimpleNamespace(accept=True, filename=None)


def _quote(name: str, url: str) -> str:
    """A listed name in a URL path: v02's escapes (%20, %23), and for http(s) '%' and '?'
    too (the other drivers decode only %20 and %23)."""
    if url[:4].lower() == "http":
        name = name.replace("%", "%25").replace("?", "%3F")
    return name.replace(" ", "%20").replace("#", "%23")
