"""A consumed batch's posts, reports and acks committed together: one AMQP transaction.

A flow that consumes a queue ends each batch with three writes: its posts, its reports, its
acks. Written one after the other (posts confirmed, reports, then acks), a process killed
(kill -9) or a broker node lost between the posts and the acks makes the broker deliver the
batch again: it is done again and announced a second time downstream, and the reports of
the batch in hand are lost.

When they go to the broker, vhost and user the flow consumes from (the usual pump: sr_sarra
consuming xs_<source> and posting on xpublic; reports always do), they go on the consuming
channel in transaction mode (``tx.select`` once per channel incarnation, one ``tx.commit``
per batch): the broker makes the batch's posts, reports and acks happen together or not at
all. A process killed before the commit leaves nothing behind: the broker drops what was
not committed and delivers the messages again; they are done again (a file already in
place is announced then: download.already_here). Automatic, no option: ``Flow.connect``
calls :func:`start`; a flow posting to another broker keeps publisher confirms there
(waited for before the commit, its spool unchanged) and commits its reports and acks;
a flow with neither reports nor posts to the consumed broker acks as before.

* posts: kept by the Broker (``tx_publish``) and written just before the commit;
* reports: all but the first one, which is confirmed on the reporter's own connection (a
  report exchange we may not write to switches reports off, report.py, instead of closing
  the consuming channel, and may be sent twice); report.Reporter publishes the others
  through :meth:`BatchTx.publish`;
* acks, and the requeues of a stop: in the same commit, the acks in one frame (a
  ``multiple`` ack) when they are every delivery in hand up to the highest, else one frame
  each (Broker.tx_commit). The engine takes its batches from the inbox in delivery order
  and a malformed message's ack joins the next commit, so on one channel a batch's acks
  are all the deliveries in hand up to the highest; the check is what keeps a multiple
  ack from dropping one still in the inbox should that change. An ack is kept with its
  channel's generation and checked when the commit is written: a tag of a channel since
  lost names another delivery on the new one;
* after the commit only, and only for the messages it acked (or taken from the retry
  queue): retry entries marked done, the duplicate cache told (a message that comes back
  after a kill is not a duplicate of itself: its post was never made), ``source.done`` and
  the preset's ``confirmed`` (sr_sender's ``delete``); ``Flow.settle`` does that with what
  :meth:`BatchTx.commit` returns.

A post or report for a message delivered on a channel since lost (a reconnection) is
dropped: that message was not acked, it comes back and is done again (``Broker.tx_select``).
A commit the broker refuses (a missing exchange) is followed by a pause, 1 s doubling up to
COMMIT_BACKOFF_MAX until one succeeds: the batch would come back at once otherwise. A
commit whose reply is lost with the connection may have happened or not; taken as not: the
retry entries are kept (done again at worst, never lost). A failed message written to the
retry queue before a commit that surely did not happen (refused, or the channel lost
before it left), or whose delivery's channel was lost, comes back from the queue: its
retry entry is removed (:meth:`BatchTx.commit`), or it would be done and posted twice;
in doubt the entry is kept.

Cost (bench/pumpchain.py, 3 runs each at the same load, 2,000 files): chain 307 files/s and
5.5 CPU s per 1,000 files with confirms then acks, 355 files/s and 3.7 s with transactions
(one commit a batch instead of a confirm a post; no reporter connection of its own).

sr_winnow posts this way too (winnow.py: its claims are committed to SQLite by the cache
flush just before the broker commit). Sources that build their messages (sr_post, sr_watch,
sr_poll) have no consuming channel: they are unchanged.
"""

import collections
import os
import time
from typing import List, Optional, Sequence

from sarra.broker.client import Broker, BrokerError, BrokerStopped
from sarra.config.brokerurl import parse_url
from sarra.flow import report
from sarra.flow.work import Result

#: longest pause after a failed commit (seconds)
COMMIT_BACKOFF_MAX = 30.0
#: messages remembered as placed here in a batch whose commit did not (surely) happen
PLACED_MAX = 10000
#: when this process started: a file changed since was placed by it (see redone)
STARTED = time.time()


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


def redone(flow, work, why, path=None):
    """The report of a message whose bytes are already in place at ``path`` (download.
    already_here: the file holds this message's sum): ``why`` (a 304), or the 201 its
    first delivery earned and never sent: with reports committed with the acks, a delivery
    that placed the file and lost its commit (a kill, a lost channel) comes back
    redelivered. Redelivered is not enough: every unacked delivery comes back so, those
    still unprocessed in prefetch too, whose file an older message may have placed. So a
    redelivered message gets the 201 when

    * this process placed its file in a batch whose commit did not (surely) happen
      (:attr:`BatchTx.placed`: exact), or
    * the file last changed before this process started (the instance before it, killed
      before its commit, may have placed it) but not before the message was published
      (then an older message placed it). Without a record of the killed instance's work,
      a file an older message placed after this one was published still gets the 201.

    Otherwise (a file placed by this process for another message) the 304 it is."""
    d = work.delivery
    tx = getattr(flow, "batchtx", None)
    if tx is None or d is None or not d.redelivered:
        return why
    if _identity(work) in tx.placed:
        return report.DOWNLOADED
    try:
        changed = os.lstat(path).st_ctime
        published = work.msg.pubtime_epoch
    except (OSError, TypeError, ValueError, OverflowError):
        return why
    if changed >= STARTED or changed < published:
        return why
    return report.DOWNLOADED


def _identity(work):
    """What tells a message from another one about the same file: path, time and sum."""
    m = work.msg
    return (m.relpath, m.pubtime, m.headers.get("sum"))


def start(flow) -> Optional["BatchTx"]:
    """Called by Flow.connect once the connections are up: the flow's transaction (its
    post broker and reporter then publish into it), or None when it has nothing to put in
    one (no consuming channel, or neither reports nor posts to the consumed broker)."""
    broker, cfg = flow.broker, flow.cfg
    if not flow.source.consumes or not isinstance(broker, Broker) or flow.consumer is None:
        return None
    posts = flow.post_broker is not None and same_broker(cfg.broker, cfg.post_broker)
    reporter = flow.reporter
    reports = reporter is not None and reporter.enabled
    if not (posts or reports):
        return None
    tx = BatchTx(flow, broker, posts)
    if getattr(flow, "batchtx", None) is not None:      # connected again: kept
        tx.placed = flow.batchtx.placed
    if posts:
        flow.post_broker = TxPost(tx, flow.post_broker)
    if reports:
        reporter.tx = tx
    flow.consumer = TxConsumer(flow.consumer, tx)
    flow.log.debug("batches committed in AMQP transactions (%s and acks)",
                   "posts, reports" if posts and reports else "posts" if posts else "reports")
    return tx


class BatchTx:
    """The transaction of the batch in hand on the consuming Broker."""

    def __init__(self, flow, broker, posts: bool = True):
        self.flow, self.broker, self.posts = flow, broker, posts
        self.log = flow.log
        self._acks = []                 # deliveries acked outside settle (malformed)
        self._failed_commits = 0        # in a row: the pause after the next failure doubles
        self._open = False              # published into since the last commit
        self._retried = {}              # id(work from the retry queue) -> channel posted on
        #: messages whose file this process placed in a batch not (surely) committed
        self.placed = collections.OrderedDict()

    def publish(self, exchange, routing_key, body, headers, persistent=True,
                expiration=None):
        """Add a post or a report about the message in hand (``flow.msg``) to the batch's
        transaction; dropped when that message came on a channel since lost."""
        work = self.flow.msg
        tag = getattr(getattr(work, "delivery", None), "delivery_tag", None)
        b = self.broker
        if b.tx_select(tag):
            b.tx_publish(exchange, routing_key, body, headers, persistent, expiration)
            self._open = True
            if work is not None and getattr(work, "delivery", None) is None:
                self._retried.setdefault(id(work), set()).add(b.generation)

    def ack_later(self, delivery) -> None:
        """An ack outside a batch's settle (a malformed message): sent at the next commit
        if its channel is still the current one then (kept with its generation: a tag of
        a lost channel names another delivery on the new one)."""
        self._acks.append(delivery)

    def commit(self, batch: List, acks: List, added: Sequence = ()) -> Optional[List]:
        """Commit the batch's posts and reports with the acks of ``acks`` (deliveries);
        returns the works of the batch whose outcome is now committed (those delivered on
        the current channel, and those from the retry queue), or None when nothing was.
        ``added``: (work, retry entry) of the batch's failed messages written to the retry
        queue: an entry whose message was surely not acked is removed (it comes back from
        the queue: done twice, posted twice otherwise); in doubt it is kept."""
        b = self.broker
        flow = self.flow
        if flow.cache is not None:
            flow.cache.flush()          # winnow's claims: before their posts can be seen
        current = [d for d in self._acks + list(acks) if b.is_current(d)]
        self._acks = []
        retried, self._retried = self._retried, {}
        tags = [d.delivery_tag for d in current]    # with their generation: tx_commit
        self._open = False
        try:
            done = b.tx_commit(tags)
        except BrokerStopped:
            raise
        except BrokerError as e:
            self._back(batch, added, (), None)
            self._pause(e)
            return None
        self._failed_commits = 0
        if not done:                # the channel was lost: dropped (False), or in doubt (None)
            self._back(batch, added, () if done is False else current, None)
            self.log.info("connection lost before the commit: the batch comes back")
            return None
        self._back(batch, added, current, current)
        # posts dropped with a lost channel's transaction (the broker says so): a message
        # from the retry queue (no delivery to come back) that posted on that channel is
        # not committed: its retry entry stays, it is done again
        lost = set()
        if getattr(b, "tx_dropped", False):
            lost = {i for i, gens in retried.items() if gens - {b.generation}}
        return [w for w in batch if (b.is_current(w.delivery) if w.delivery is not None
                                     else id(w) not in lost)]

    def _back(self, batch, added, maybe, acked) -> None:
        """After a commit: the deliveries not in ``maybe`` (the acks that may have been
        committed) surely come back from the queue: their retry entries are removed. Those
        not in ``acked`` (surely committed; None: none was) may come back: the files they
        placed are remembered (:func:`redone`)."""
        maybe = {id(d) for d in maybe}
        acked = set() if acked is None else {id(d) for d in acked}
        for w, entry in added:
            if w.delivery is not None and id(w.delivery) not in maybe:
                self.flow.retry.done(entry)
        for w in batch:
            if w.delivery is not None and id(w.delivery) not in acked \
                    and w.outcome == Result.DONE and getattr(w, "code", None) == 201:
                self.placed[_identity(w)] = True
                while len(self.placed) > PLACED_MAX:
                    self.placed.popitem(last=False)

    def idle(self) -> None:
        """Between batches: commit what was put in the transaction outside one (the acks
        and reports of malformed messages, a plugin's post), so that prefetch is freed."""
        if self._acks or self._open:
            self.commit([], [])

    def abandon(self) -> None:
        """The batch goes back to the queue (its posts to another broker were refused):
        its requeues committed now (its reports too: they will be sent again)."""
        self.commit([], [])

    def _pause(self, e) -> None:
        # the broker gives the batch back at once: without a pause, a refused post (a
        # missing exchange) would be received and refused again hundreds of times a second
        delay = min(COMMIT_BACKOFF_MAX, 2.0 ** self._failed_commits)
        self._failed_commits += 1
        self.log.error("%s (the batch comes back from the queue and is done again then; "
                       "next try in %g s)", e, delay)
        self.flow.stop_event.wait(delay)


class TxPost:
    """Stands in for the flow's post broker when posts go in the transaction: publish adds
    to it; wait_confirms has nothing to wait for (the commit makes the posts visible).
    Declarations, ticks and the rest go to the post connection (``other``), kept for them:
    a refused declaration must not close the consuming channel."""

    unconfirmed = 0

    def __init__(self, tx: BatchTx, other=None):
        self.tx, self.other = tx, other

    def __getattr__(self, name):
        if self.other is None:
            raise AttributeError(name)
        return getattr(self.other, name)

    def publish(self, exchange, routing_key, body, headers, persistent=True, expiration=None):
        self.tx.publish(exchange, routing_key, body, headers, persistent, expiration)

    def wait_confirms(self, timeout=30):
        """Nothing to wait for: the commit after the acks makes the posts visible."""

    def tick(self):
        if self.other is not None:
            self.other.tick()

    def close(self):
        if self.other is not None:
            self.other.close()


class TxConsumer:
    """Stands in for the flow's consumer: acks outside settle wait for the next commit
    (settle passes its acks to :meth:`BatchTx.commit`); the rest is the consumer's."""

    def __init__(self, consumer, tx: BatchTx):
        object.__setattr__(self, "_consumer", consumer)
        object.__setattr__(self, "_tx", tx)

    def __getattr__(self, name):
        return getattr(self._consumer, name)

    def __setattr__(self, name, value):        # reload.py sets consumer.cfg
        setattr(self._consumer, name, value)

    def ack(self, delivery):
        self._tx.ack_later(delivery)

    def ack_many(self, deliveries):
        for d in deliveries:
            self._tx.ack_later(d)
