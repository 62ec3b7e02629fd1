"""Posts kept on disk while the post broker is down, replayed in order when it returns.

A consumer whose ``post_broker`` is another broker than the one it consumes from (a
shovel, a sarra or subscriber feeding another pump) keeps working when that broker goes
away: each post it cannot send is appended to an on-disk journal (the retry queue's
format, flow/retry.py: written, flushed and fsynced before ``publish`` returns), so the
incoming message is acknowledged only once its post is confirmed by the broker or safe on
disk.  Posts sent but not yet confirmed when the connection drops go to the journal too
(duplicates possible, loss not).  While the journal holds posts, new posts join its end,
so that the order is kept.  Every few seconds the broker is tried again; once back, the
journal is replayed in order, in batches of ``REPLAY_BATCH``, each entry removed only
after the broker confirmed it.  A process killed meanwhile (even by SIGKILL) finds the
journal at its next start and replays it first.

A refusal that is not an outage (a nack: no such exchange) is raised to the flow as
before: the incoming messages go back to the queue.

The journal is ``<state dir>/sr_<component>_<config>_<NN>.posts``, one per instance.

Facts: doc/spec/components.md (save/restore: messages saved during an outage, replayed).
"""
import logging
import os
import time

from sarra.broker.client import BrokerAccessRefused, BrokerError, BrokerStopped
from sarra.flow import retry
from sarra.flow.batchtx import same_broker

#: seconds between two tries of a post broker that is down
RETRY_EVERY = 5.0
#: entries replayed (published, then confirmed, then removed) at a time
REPLAY_BATCH = 100


def wrap(flow, broker):
    """The broker to post on: ``broker`` itself when an outage of it stops the flow
    anyway (it is also the broker consumed from) or the flow does not consume, else a
    Spool around it."""
    source = getattr(flow, "source", None)
    if source is not None and (not source.consumes or source.one_shot):
        return broker
    if same_broker(flow.cfg.broker, flow.cfg.post_broker):
        return broker
    path = os.path.join(flow.user_cache_dir, "sr_%s_%s_%02d.posts" % (
        flow.cfg.component, flow.cfg.name or "-", flow.no))
    return Spool(broker, path, flow.log, persistent=bool(flow.cfg.get("persistent", True)))


class Spool:
    """A post broker (sarra.broker.client.Broker) that never blocks the flow on an outage:
    publish / wait_confirms / tick / connect / close, the rest passed to the broker."""

    def __init__(self, broker, path, log=None, persistent=True, clock=time.monotonic):
        broker.reconnect = False            # an outage is seen at once, not waited out
        self.broker = broker
        self.log = log or logging.getLogger("sarra.spool")
        self.persistent = persistent
        self.clock = clock
        self.journal = retry.RetryQueue(path, ttl=0, base_delay=0.0, max_delay=0.0,
                                        jitter=0.0)
        self.down = False
        self.next_try = 0.0
        self.sent = []                      # published since the last confirm: (x, rk, b, h)
        if len(self.journal):
            self.log.info("%d posts kept in %s from an earlier run: posting them first",
                          len(self.journal), path)

    def __getattr__(self, name):
        return getattr(self.broker, name)

    @property
    def path(self):
        return self.journal.path

    # ------------------------------------------------------------ what the flow calls
    def connect(self):
        try:
            self.broker.connect()
        except (BrokerStopped, BrokerAccessRefused):
            raise
        except BrokerError as e:
            self._outage(e)
        return self

    def declare_exchange(self, *args, **kw):
        if self.down:
            raise BrokerError("%s: down, exchange not declared" % self.broker.display)
        return self.broker.declare_exchange(*args, **kw)

    def publish(self, exchange, routing_key, body, headers, persistent=True,
                expiration=None):
        rec = (exchange, routing_key, body, headers)
        if self.down or len(self.journal):
            self._keep([rec])
            return
        try:
            self.broker.publish(exchange, routing_key, body, headers, persistent=persistent,
                                expiration=expiration)
            self.sent.append(rec)
        except BrokerStopped:
            raise
        except BrokerError as e:
            if self.broker.connected:
                raise
            self._outage(e)
            self._keep([rec])

    def wait_confirms(self, timeout=30):
        """Every post confirmed or on disk when this returns; raises BrokerError only for
        a refusal of a broker that is up (nack, return)."""
        if self.sent and not self.down:
            try:
                self.broker.wait_confirms(timeout)
            except BrokerStopped:
                raise
            except BrokerError as e:
                if self.broker.connected:
                    self.sent = []
                    raise
                self._outage(e)
        self.sent = []
        if len(self.journal) and not self.down:
            self._replay()

    def tick(self):
        if self.down:
            if self.clock() >= self.next_try:
                self._try_again()
            return
        try:
            self.broker.tick()
        except BrokerStopped:
            raise
        except BrokerError as e:
            self._outage(e)
            return
        if len(self.journal):
            self._replay()

    def close(self):
        self.journal.close()
        self.broker.close()

    # ------------------------------------------------------------ internals
    def _keep(self, recs):
        for exchange, rk, body, headers in recs:
            if isinstance(body, bytes):
                body = body.decode("utf-8", "surrogateescape")
            self.journal.add(rk, body, headers, exchange)

    def _outage(self, e):
        """The broker went away: what was sent and not confirmed goes to the journal, and
        a fresh connection object replaces the old one (whose resend queue holds the same
        posts: replaying both would post them twice)."""
        if self.sent:
            self._keep(self.sent)
            self.sent = []
        if not self.down:
            self.log.warning("post broker %s down (%s): posts kept in %s until it returns",
                             self.broker.display, e, self.journal.path)
        self.down = True
        self.next_try = self.clock() + RETRY_EVERY
        old = self.broker
        self.broker = old.sibling(reconnect=False)
        try:
            old.close()
        except Exception:       # noqa: BLE001 - it is already gone
            pass

    def _try_again(self):
        try:
            self.broker.connect()
        except BrokerStopped:
            raise
        except BrokerError as e:
            self.log.debug("post broker still down: %s", e)
            self.next_try = self.clock() + RETRY_EVERY
            return
        self.down = False
        self.log.info("post broker %s back: posting the %d kept posts", self.broker.display,
                      len(self.journal))
        self._replay()

    def _replay(self):
        """Post the journal in order; each entry removed once confirmed."""
        while len(self.journal) and not self.down:
            chunk = self.journal.in_order(REPLAY_BATCH)
            try:
                for e in chunk:
                    self.broker.publish(e.exchange, e.routing_key, e.body, e.headers,
                                        persistent=self.persistent)
                self.broker.wait_confirms()
            except BrokerStopped:
                raise
            except BrokerError as err:
                if self.broker.connected:       # refused: try again later, in order
                    self.log.error("kept posts refused by %s (%s): trying again in %g s",
                                   self.broker.display, err, RETRY_EVERY)
                    self.down = True
                    self.next_try = self.clock() + RETRY_EVERY
                    return
                self._outage(err)
                return
            for e in chunk:
                self.journal.done(e)
            if not len(self.journal):
                self.log.info("post broker %s: every kept post posted", self.broker.display)
