"""The winnow step: each product goes out once, however many sources announce it.

sr_winnow is the shared flow (flow.py) with three hooks of its preset (components.py):

``connected``  after the connections are up: opens the claim store (it takes the place of
               the flow's duplicate cache) and, when the post broker is the broker consumed
               from, moves posting onto the consuming channel in AMQP transactions.
``dedupe``     in the place of the duplicate-cache check (after on_message): claims the
               message's key; the first claimant re-posts the message (or, with
               ``winnow_link``, a link announcement), every later one is dropped (304).
``settled``    after the batch is settled: commits the transaction (posts and acks).

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
their own claims, and are posted then). Reports then go on the separate post connection.
In that mode the claims of a batch are also one SQLite transaction, committed by the
flow's cache flush in settle() just before the broker commit (another instance's claims
wait for it: a few milliseconds); a crash before it leaves no claim at all.
With another post broker, posts are confirmed before the acks and a claim is marked
"confirmed" before the acks: a crash between a post reaching the broker and its confirm
reaching us can post that product twice (never lose it). Announcements from the retry
queue have no ack to commit with: they are posted that way too.

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
from sarra import checksum
from sarra.flow import report
from sarra.broker.client import BrokerError, BrokerStopped
from sarra.config.brokerurl import parse_url
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


# -------------------------------------------------------------------- posting in a transaction

def same_broker(a: Optional[str], b: Optional[str]) -> bool:
    """Both URLs name one broker, vhost and user (then one channel can do both jobs)."""
    if not a or not b:
        return False
    try:
        x, y = parse_url(a), parse_url(b)
    except ValueError:
        return False
    return ((x.scheme, x.host.lower(), x.port, x.vhost, x.user)
            == (y.scheme, y.host.lower(), y.port, y.vhost, y.user))


#: longest pause after a failed commit (seconds)
COMMIT_BACKOFF_MAX = 30.0


class TxPost:
    """Stands in for the flow's post broker: the posts of a batch go on the consuming channel
    in the AMQP transaction that also holds the batch's acks.

    The channel is put in transaction mode before the first post of a channel incarnation
    (so the acks that follow are part of the transaction); the posts themselves are kept
    (by the Broker: tx_select, tx_publish, tx_commit) and written all at once by
    :meth:`commit`, just before tx.commit (nobody can see them before the commit anyway).
    A post for a message delivered on a channel since lost is not sent: that message was
    not acked and comes back."""

    def __init__(self, flow, broker, other=None):
        self.flow, self.broker, self.other = flow, broker, other
        self.log = flow.log
        self._acks = []                # delivery tags to ack (one multiple ack) at commit
        self._failed_commits = 0       # in a row: the pause after the next failure doubles
        self.unconfirmed = 0

    def tick(self):
        """Posts go on the consuming connection, which the consumer keeps alive; this keeps
        the other one (posts of messages from the retry queue) alive too."""
        if self.other is not None:
            self.other.tick()

    def publish(self, exchange, routing_key, body, headers, persistent=True, expiration=None):
        b = self.broker
        work = self.flow.msg
        if work is not None and work.delivery is None and self.other is not None:
            # from the retry queue: no ack to commit with, and the flow marks it done before
            # the commit; confirmed on the other connection first instead (at worst twice)
            self.other.publish(exchange, routing_key, body, headers, persistent, expiration)
            self.other.wait_confirms()
            return
        tag = getattr(getattr(work, "delivery", None), "delivery_tag", None)
        if b.tx_select(tag):    # else delivered on a channel since lost: it comes back
            b.tx_publish(exchange, routing_key, body, headers, persistent, expiration)

    def wait_confirms(self, timeout=30):
        """Nothing to wait for: the commit after the acks makes the posts visible."""

    def ack_later(self, delivery):
        """The flow's ack of a delivery: sent at commit, all the batch's in one frame."""
        if self.broker.is_current(delivery):
            self._acks.append(int(delivery.delivery_tag))

    def commit(self):
        """Send the batch's posts and acks and commit them together."""
        acks, self._acks = self._acks, []
        # every delivery up to the highest tag is the batch's: gather() takes them in
        # order, and those given back were rejected one by one
        try:
            self.broker.tx_commit(acks)
        except BrokerStopped:
            raise
        except BrokerError as e:
            # the broker gives the batch back at once: without a pause, a refused post
            # (a missing exchange) would be received and refused again hundreds of times
            # a second. 1 s, doubling up to COMMIT_BACKOFF_MAX, until a commit succeeds.
            delay = min(COMMIT_BACKOFF_MAX, 2.0 ** self._failed_commits)
            self._failed_commits += 1
            self.log.error("%s (the batch comes back from the queue and is posted then; "
                           "next try in %g s)", e, delay)
            self.flow.stop_event.wait(delay)
        else:
            self._failed_commits = 0

    def close(self):
        if self.other is not None:
            self.other.close()


class TxConsumer:
    """Stands in for the flow's consumer when posting in transactions: acks go to
    :meth:`TxPost.ack_later`; everything else is the consumer's."""

    def __init__(self, consumer, tx: TxPost):
        self._consumer, self._tx = consumer, tx

    def __getattr__(self, name):
        return getattr(self._consumer, name)

    def ack(self, delivery):
        self._tx.ack_later(delivery)

    def ack_many(self, deliveries):
        for d in deliveries:
            self._tx.ack_later(d)


# -------------------------------------------------------------------- the preset's hooks

class Winnow:
    def __init__(self, store: ClaimStore, tx: bool, links: bool, basis: str):
        self.store, self.tx, self.links, self.basis = store, tx, links, basis


def connected(flow):
    """Open the claim store in place of the flow's cache; post in transactions when the
    post broker is the consumed broker."""
    cfg, log = flow.cfg, flow.log
    lifetime = cfg.suppress_duplicates or 0
    if lifetime <= 0:
        log.warning("suppress_duplicates is off, but winnow needs its cache: using %g s",
                    DEFAULT_LIFETIME)
        lifetime = DEFAULT_LIFETIME
    tx = flow.post_broker is not None and same_broker(cfg.broker, cfg.post_broker)
    # in transaction mode a batch's claims are one database transaction too, committed
    # (by settle's flush) before the broker commit makes the batch's posts visible
    store = ClaimStore(os.path.join(flow.user_cache_dir, STORE_NAME), lifetime, batch=tx)
    old = flow.cache
    if old is not None and hasattr(old, "close"):
        old.close()
    flow.cache = store
    if tx:
        if flow.reporter is not None:
            flow.reporter.broker = flow.post_broker    # confirm mode stays off this channel
        flow.post_broker = TxPost(flow, flow.broker, flow.post_broker)
        flow.consumer = TxConsumer(flow.consumer, flow.post_broker)
    flow.winnow = Winnow(store, tx, bool(cfg.get("winnow_link", False)),
                         cfg.suppress_duplicates_basis or "path")
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
    try:
        first, earlier = w.store.claim(key, who_of(msg), again, sumkey, msg.path)
    except sqlite3.Error as e:
        raise Outcome(500, f"winnow claim store {w.store.path}: {e}", retry=True) from None
    if w.store.reclaims != reclaims:
        flow.counters["reclaimed"] = flow.counters.get("reclaimed", 0) + 1
        flow.log.info("%s: back after an interrupted batch, it holds its claim: posting it",
                      msg.url)
    if not first:
        flow.counters["duplicates"] += 1
        raise Outcome(*report.DUPLICATE)
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


def settled(flow, batch):
    """After settle(): commit the transaction of the batch's posts and acks."""
    p = flow.post_broker
    if isinstance(p, TxPost):
        p.commit()
