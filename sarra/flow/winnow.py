"""The winnow step: each product goes out once, however many sources announce it.

sr_winnow is the shared flow (flow.py) with three hooks of its preset (components.py):

``connected``  after the connections are up: opens the claim store (it takes the place of
               the flow's duplicate cache) and, when the post broker is the broker consumed
               from, moves posting onto the consuming channel in AMQP transactions.
``dedupe``     in the place of the duplicate-cache check (after on_message): claims the
               message's key; the first claimant re-posts the message (or, with
               ``winnow_link``, a link announcement), every later one is dropped (304).

Claims (:class:`ClaimStore`): one SQLite file per configuration in its state directory,
shared by all the instances of the configuration, which consume from one queue. A claim
is a single atomic upsert ("first writer wins"): whichever instance inserts the key first
posts the product, so two instances that get the two copies at the same moment cannot both
post it. The key is the duplicate-cache key of checksums-and-parts.md §2 (the ``sum``
header plus path, name or nothing per ``suppress_duplicates_basis``, and the parts) hashed
to 16 bytes. An entry lives ``suppress_duplicates`` seconds from its claim (1200 by
default); an expired entry is claimed again like a new one, and expired rows are swept
every minute. The claim records which message made it (``who``: exchange and body hashed),
so a message that comes back after its instance died (redelivered, or from the retry
queue) recognises its own claim and is posted, instead of being taken for a duplicate.

Exactly once across a kill -9: a claim is committed before the post can be seen. With the
post broker the same as the broker (same host, port, vhost and user: the usual winnow),
the posts of a batch and the acks of its messages go in one AMQP transaction (tx.select /
tx.commit on the consuming channel): either the broker has both (the messages are gone
from the queue, the posts are out) or neither (the messages come back redelivered, find
their own claims, and are posted then): the flow's batch transaction (batchtx.py), which
holds the batch's reports too, and the posts of messages from the retry queue (their
entries are done after the commit). In that mode the claims of a batch are also one
SQLite transaction, committed by the cache flush batchtx makes just before the broker
commit (another instance's claims wait for it: a few milliseconds); a crash before it
leaves no claim at all.
With another post broker, posts are confirmed before the acks and a claim is marked
"confirmed" before the acks: a crash between a post reaching the broker and its confirm
reaching us can post that product twice (never lose it).

Links (``winnow_link on``): the first path of each data checksum (``d``/``s`` of whole
files) is remembered too; a first copy of a known checksum under another path is posted as
an ``L`` announcement of the new path whose ``link`` is the relative path to the earlier
copy; ``link_sum`` keeps the data checksum and every other header (``parts``, ``mtime``,
...) is kept, so that a subscriber without the earlier copy downloads the new path as
usual (download.py).
"""

import hashlib
import os
import posixpath
import sqlite3
import time
from typing import Optional, Tuple

from sarra.flow import cache as dupcache
from sarra.flow import nodeclaims
from sarra import checksum
from sarra.flow import report
from sarra.message import MAX_HEADER_BYTES, Message
from sarra.flow.work import Outcome

#: entry lifetime when suppress_duplicates is off (winnow's cache is not optional)
DEFAULT_LIFETIME = 1200.0
#: seconds between two sweeps of expired rows
SWEEP_EVERY = 60.0
#: the claim store's file in the configuration's state directory
STORE_NAME = "recent_files.sqlite"
#: header of a winnow link announcement holding the checksum of the data it stands for
LINK_SUM = "link_sum"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS claims (k BLOB PRIMARY KEY, t REAL NOT NULL,"
    " who INTEGER NOT NULL, done INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS firsts (s BLOB PRIMARY KEY, t REAL NOT NULL,"
    " path TEXT NOT NULL) WITHOUT ROWID",
)
_CLAIM = ("INSERT INTO claims (k, t, who, done) VALUES (?, ?, ?, 0) ON CONFLICT (k) DO UPDATE"
          " SET t = excluded.t, who = excluded.who, done = 0 WHERE claims.t <= ?")
_FIRST = ("INSERT INTO firsts (s, t, path) VALUES (?, ?, ?) ON CONFLICT (s) DO UPDATE"
          " SET t = excluded.t, path = excluded.path WHERE firsts.t <= ?")


def digest(*fields: str, size: int = 16) -> bytes:
    h = hashlib.blake2b(digest_size=size)
    h.update("\0".join(fields).encode("utf-8", "surrogateescape"))
    return h.digest()


def key_digest(key: Tuple[str, str]) -> bytes:
    """16 bytes standing for a duplicate-cache key (sum, second component)."""
    return digest(key[0], key[1])


def who_of(msg: Message) -> int:
    """Identity of one announcement (not of the product): exchange and body fields."""
    return int.from_bytes(digest(msg.exchange or "", msg.pubtime, msg.baseurl, msg.relpath,
                                 size=8), "big", signed=True)


class ClaimStore:
    """Keys claimed recently, shared by processes through one SQLite file (WAL mode).

    Also usable as the flow's ``cache``: ``check_and_add`` marks a claim confirmed (its
    post reached the broker) and ``flush`` commits those marks; ``stats`` feeds hb_cache.
    """

    def __init__(self, path: str, lifetime: float, clock=time.time, timeout: float = 60.0,
                 batch: bool = False):
        self.path = path
        self.lifetime = float(lifetime)
        self.clock = clock
        self.timeout = timeout
        # batch: the claims between two flush() calls are one transaction (holding the
        # write lock); only right when nothing they decide is visible before the flush
        self.batch = batch
        self.hits = self.misses = self.links = self.reclaims = 0
        self._done = []
        self._next_sweep = 0.0
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        try:
            # timeout 0: a busy database raises at once and _retry() waits in short steps
            # (SQLite's own busy handler sleeps up to 100 ms at a time: the other instance
            # would take the lock again and again meanwhile)
            self.db = sqlite3.connect(path, timeout=0, isolation_level=None,
                                      check_same_thread=False)
            self._retry(lambda: self.db.execute("PRAGMA journal_mode=WAL"))
            self._retry(lambda: self.db.execute("PRAGMA synchronous=NORMAL"))
            for statement in _SCHEMA:
                self._retry(lambda: self.db.execute(statement))
        except sqlite3.Error as e:
            raise OSError(f"{path}: cannot open the winnow claim store: {e}") from None

    def _retry(self, fn):
        """fn() again while the database is busy (another instance writing), up to timeout."""
        delay, deadline = 0.0001, None
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                text = str(e)
                if "locked" not in text and "busy" not in text:
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.timeout
                elif now >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    # ---------------------------------------------------------------- claims

    def claim(self, key: bytes, who: int, again: bool = False,
              sumkey: Optional[bytes] = None, path: Optional[str] = None
              ) -> Tuple[bool, Optional[str]]:
        """(first, earlier_path): first is True when ``key`` was free (absent or expired)
        and is now claimed by ``who``, or when ``again`` (a redelivery or a retry) and the
        claim is who's own and not confirmed yet.  With ``sumkey``, earlier_path is the
        path a first claim of the same data checksum was made under, if it is not ``path``.
        """
        now = self.clock()
        cutoff = now - self.lifetime
        run = self._retry
        ex = self.db.execute
        if self.batch and not self.db.in_transaction:
            run(lambda: ex("BEGIN IMMEDIATE"))
        first = run(lambda: ex(_CLAIM, (key, now, who, cutoff)).rowcount) == 1
        if not first and again:
            row = run(lambda: ex("SELECT who, done, t FROM claims WHERE k = ?",
                                 (key,)).fetchone())
            first = row is not None and row[0] == who and not row[1] and row[2] > cutoff
            self.reclaims += first
        if not first:
            self.hits += 1
            return False, None
        self.misses += 1
        earlier = None
        if sumkey is not None and path is not None:
            if run(lambda: ex(_FIRST, (sumkey, now, path, cutoff)).rowcount) != 1:
                row = run(lambda: ex("SELECT path FROM firsts WHERE s = ?",
                                     (sumkey,)).fetchone())
                if row is not None and row[0] != path:
                    earlier = row[0]
                    self.links += 1
        return True, earlier

    def check_and_add(self, key: bytes) -> bool:
        """Flow.settle's call for a finished message: mark its claim confirmed (at flush)."""
        self._done.append((key,))
        return True

    def flush(self) -> None:
        """Commit the batch's claims (batch mode) and the confirmed marks (before the
        messages are acknowledged)."""
        db = self.db
        if self._done:
            done, self._done = self._done, []
            if not db.in_transaction:
                self._retry(lambda: db.execute("BEGIN IMMEDIATE"))
            db.executemany("UPDATE claims SET done = 1 WHERE k = ?", done)
        if db.in_transaction:
            self._retry(lambda: db.execute("COMMIT"))

    def __contains__(self, key: bytes) -> bool:
        row = self._retry(lambda: self.db.execute("SELECT t FROM claims WHERE k = ?",
                                                  (key,)).fetchone())
        return row is not None and row[0] > self.clock() - self.lifetime

    # ---------------------------------------------------------------- housekeeping

    def sweep(self, force: bool = False) -> int:
        """Delete expired rows (at most once a minute unless forced); returns how many."""
        now = self.clock()
        if not force and now < self._next_sweep:
            return 0
        self._next_sweep = now + SWEEP_EVERY
        cutoff = now - self.lifetime
        ex = self.db.execute
        n = self._retry(lambda: ex("DELETE FROM claims WHERE t <= ?", (cutoff,)).rowcount)
        n += self._retry(lambda: ex("DELETE FROM firsts WHERE t <= ?", (cutoff,)).rowcount)
        return n

    def __len__(self) -> int:
        cutoff = self.clock() - self.lifetime
        return self._retry(lambda: self.db.execute("SELECT COUNT(*) FROM claims WHERE t > ?",
                                                   (cutoff,)).fetchone()[0])

    def stats(self):
        return {"hits": self.hits, "misses": self.misses, "links": self.links,
                "reclaims": self.reclaims, "size": len(self)}

    def close(self) -> None:
        db, self.db = self.db, None
        if db is not None:
            db.close()


# -------------------------------------------------------------------- the preset's hooks

class Winnow:
    def __init__(self, store: ClaimStore, tx: bool, links: bool, basis: str):
        self.store, self.tx, self.links, self.basis = store, tx, links, basis
        self.nodes = None           # node_shares + nodes_state_dir: nodeclaims.NodeClaims
        self.confirmed = None       # the works settle() committed (confirmed hook)


def connected(flow):
    """Open the claim store in place of the flow's cache; the posts are in the batch's
    transaction (batchtx.py) when the post broker is the consumed broker."""
    cfg, log = flow.cfg, flow.log
    lifetime = cfg.suppress_duplicates or 0
    if lifetime <= 0:
        log.warning("suppress_duplicates is off, but winnow needs its cache: using %g s",
                    DEFAULT_LIFETIME)
        lifetime = DEFAULT_LIFETIME
    tx = flow.batchtx is not None and flow.batchtx.posts
    # in transaction mode a batch's claims are one database transaction too, committed
    # (by settle's flush) before the broker commit makes the batch's posts visible
    store = ClaimStore(os.path.join(flow.user_cache_dir, STORE_NAME), lifetime, batch=tx)
    old = flow.cache
    if old is not None and hasattr(old, "close"):
        old.close()
    flow.cache = store
    flow.winnow = Winnow(store, tx, bool(cfg.get("winnow_link", False)),
                         cfg.suppress_duplicates_basis or "path")
    flow.winnow.nodes = nodeclaims.make(flow, store)     # claims that follow a shard
    log.info("winnow: claims in %s (lifetime %g s, shared by the instances); %s%s",
             store.path, lifetime,
             "posts and acks committed together (AMQP transactions)" if tx else
             "posts confirmed before the acks (post_broker is another broker)",
             "; links for known checksums" if flow.winnow.links else "")


def linkable(msg: Message) -> bool:
    """A whole-file post with a data checksum (names, random and block sums never link)."""
    algo = msg.headers.get("sum", "").split(",", 1)[0]
    parts = msg.headers.get("parts", "")
    return algo in checksum.DATA_ALGOS and parts.startswith("1,")


def link_post(msg: Message, earlier: str) -> Optional[Message]:
    """The L announcement of msg's path pointing at the earlier copy's path (relative, as
    readlink would show it), or None when the link header would be too long for v02."""
    link = posixpath.relpath(earlier, posixpath.dirname(msg.path) or "/")
    if len(link.encode("utf-8")) >= MAX_HEADER_BYTES:
        return None
    headers = dict(msg.headers)
    headers[LINK_SUM] = headers["sum"]
    headers["link"] = link
    headers["sum"] = "L," + checksum.name_sum("L", link)
    return Message(msg.pubtime, msg.baseurl, msg.relpath, headers, topic=msg.topic,
                   exchange=msg.exchange)


def dedupe(flow, work):
    """Claim the message's product: the first claimant posts it, later ones get 304."""
    w = flow.winnow
    msg = work.msg
    key = key_digest(dupcache.cache_key(msg, w.basis))
    again = work.again
    sumkey = digest(msg.headers["sum"]) if w.links and linkable(msg) else None
    reclaims = w.store.reclaims
    who = who_of(msg)
    shard = _shard_claims(flow, w, work)
    try:
        first, earlier = w.store.claim(key, who, again, sumkey, msg.path)
    except sqlite3.Error as e:
        raise Outcome(500, f"winnow claim store {w.store.path}: {e}", retry=True) from None
    if w.store.reclaims != reclaims:
        flow.counters["reclaimed"] = flow.counters.get("reclaimed", 0) + 1
        flow.log.info("%s: back after an interrupted batch, it holds its claim: posting it",
                      msg.url)
    if not first:
        flow.counters["duplicates"] += 1
        raise Outcome(*report.DUPLICATE)
    if w.nodes is not None:
        w.nodes.claimed(shard, work, key, who)     # journaled once the batch is committed
    post = link_post(msg, earlier) if earlier is not None else None
    if post is not None:
        flow.counters["linked"] = flow.counters.get("linked", 0) + 1
    work.posts.append(post or msg)
    if not w.tx:
        work.cache_key = key          # settle() marks the claim confirmed before the ack
    try:
        w.store.sweep()
    except sqlite3.Error as e:
        flow.log.warning("winnow: cannot sweep expired claims in %s: %s", w.store.path, e)


def _shard_claims(flow, w, work):
    """node_shares with nodes_state_dir: the claims of the message's shard that other
    nodes wrote are in the store before it is judged; returns the shard (or None)."""
    if w.nodes is None:
        return None
    shard = w.nodes.shard_of(getattr(flow.consumer, "broker", None), work)
    try:
        w.nodes.sync(shard)
    except (OSError, sqlite3.Error) as e:     # judged on this host's claims alone
        flow.log.warning("winnow: cannot read the claims of shard %s in %s: %s",
                         shard, w.nodes.dir, e)
    return shard


def confirmed(flow, batch):
    """End of settle(): ``batch`` holds the works whose posts and acks are committed (or
    confirmed and sent); settled() journals their claims."""
    flow.winnow.confirmed = batch


def settled(flow, batch):
    """After settle() (which committed the batch's transaction, batchtx.py, or waited for
    its posts' confirms and sent its acks, then called :func:`confirmed`): the claims of
    a committed batch appended to their shards' journals (nodeclaims.py)."""
    w = flow.winnow
    committed, w.confirmed = w.confirmed, None
    if w.nodes is not None:
        w.nodes.end_batch(committed)
