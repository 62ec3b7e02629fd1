"""Delivery reports: what a consumer did with each message, published upstream.

Codes and texts from reports.md §3. A report exchange that is missing or refuses us gives
one warning and switches reporting off for this process; it never stalls the data flow.

Reports are written in batches (flush(): once per batch of messages, before its acks;
tick(): once a second), their confirms not waited for after the first. Written one at a
time, each would cost the broker and every report shovel downstream a batch of its own
(measured: the chain's CPU per file back to what it was with batches of one). The price:
a crash (kill -9) loses the reports of the batch in hand; its messages, not acked, come
back and are reported again (304 for a file already in place). Not so when the flow
commits its batches in AMQP transactions (batchtx.py, the usual case): reports after the
first go in the batch's transaction, with its posts and acks.
Reports go on a connection of their own (opened at the first report): a publish the broker
refuses closes the channel it came on, and on the consumer's channel that would hand every
unacknowledged delivery back to the queue (received again, downloaded twice).
"""

import logging
import socket
import time

from sarra.broker.client import Broker, BrokerStopped
from sarra.flow import quotanote
from sarra.message import MAX_HEADER_BYTES

DOWNLOADED = (201, "Downloaded")
INSERTED = (201, "Inserted")
PUBLISHED = (201, "Published")
DELIVERED = (201, "Delivered")
LINKED = (201, "Linked")
MOVED = (201, "moved")
REMOVED = (201, "removed")
DUPLICATE = (304, "Not modified1")
SAME_CHECKSUM = (304, "not modified3")
DEFERRED = (307, "Temporary Redirect")
OUTSIDE = (403, "Forbidden: path outside the target directory")
NOT_FOUND = (404, "Not Found")
CHECKSUM_MISMATCH = (417, "Expectation Failed: checksum mismatch")
MALFORMED = (417, "Expectation Failed: invalid message (corrupt headers)")
FAILED = (499, "Not Copied")
LOCAL_FAILURE = (500, "local file operation failed")
UNSUPPORTED = (503, "Service unavailable")


def fit_text(text: str, limit: int = MAX_HEADER_BYTES - 1) -> str:
    """A report's text cut to ``limit`` UTF-8 bytes (ending in '...'): an error naming a
    long path or link would otherwise make a report no v02 peer passes on (a header
    of MAX_HEADER_BYTES or more), and the source would never hear of it."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[:limit - 3].decode("utf-8", "ignore") + "..."


def hostname() -> str:
    return socket.getfqdn()


class Reporter:
    """Publishes reports about consumed messages to ``exchange`` on ``broker``.

    probe() checks at start (before consuming) that the exchange exists; the first report
    is then confirmed by the broker, which catches a refused publish (permissions). Either
    failure gives one warning and switches reports off for this process.  With a
    :class:`Broker`, reports use their own connection to the same broker (same settings);
    tick() keeps it alive between reports and close() ends it.
    """

    def __init__(self, broker, exchange: str, user: str, enabled: bool = True,
                 logger=None, hooks=None, parent=None):
        self.broker = broker
        self.exchange = exchange
        self.user = user
        self.host = hostname()
        self.enabled = enabled and bool(exchange) and broker is not None
        self.log = logger or logging.getLogger("sarra")
        self.hooks = hooks
        self.parent = parent
        self.sent = 0
        self._confirmed = False
        self._own = None          # (broker it was made from, our Broker)
        self._ticked = 0.0
        self.tx = None            # the batch's transaction, once a report was confirmed

    def _off(self, why) -> None:
        self.enabled = False
        self.close()
        self.log.warning("reports switched off: cannot publish to exchange %s (%s); "
                         "set report_exchange or report_back off", self.exchange, why)

    def probe(self) -> bool:
        """True if reporting is on and the report exchange exists (passive declare)."""
        if not self.enabled:
            return False
        b = self.broker
        try:
            if not b.exchange_exists(self.exchange):
                self._off(f"no such exchange on {getattr(b, 'display', 'the broker')}")
        except Exception as e:  # BrokerError: 403 access refused, connection lost
            if type(e).__name__ == "BrokerStopped":
                raise
            self._off(e)
        return self.enabled

    def report(self, msg, code: int, text: str, received: float) -> None:
        if not self.enabled or msg is None:
            return
        rep = msg.to_report(code, fit_text(text), self.host, self.user,
                            max(0.0, time.time() - received))
        quotanote.stamp(self.parent, rep)      # sr_sarra with quota: the source's use
        if self.hooks is not None and self.hooks.has("on_report"):
            saved = getattr(self.parent, "report_msg", None)
            self.parent.report_msg = rep
            try:
                if self.hooks.run("on_report") is False:
                    return
            finally:
                self.parent.report_msg = saved
        try:
            topic, body, headers = rep.encode(allow_long_headers=True)
        except ValueError as e:   # MessageError: a header a plugin broke
            self.log.warning("%s: report not sent: %s", msg.relpath, e)
            return
        if self._confirmed and self.tx is not None:     # batchtx.py: with the acks
            try:
                self.tx.publish(self.exchange, topic, body, headers)
                self.sent += 1
            except Exception as e:  # a channel error: not a refusal of reports (first one was)
                if type(e).__name__ == "BrokerStopped":
                    raise
                self.log.warning("%s: report not sent: %s", msg.relpath, e)
            return
        try:
            b = self._publisher()
            b.publish(self.exchange, topic, body, headers)
            if not self._confirmed:
                b.wait_confirms(timeout=30)
                self._confirmed = True
                if self.tx is not None:
                    self.close()    # the rest go in the transactions: no connection of ours
            self.sent += 1
        except Exception as e:  # BrokerError, access refused, missing exchange
            if type(e).__name__ == "BrokerStopped":
                raise
            self._off(e)

    def _publisher(self):
        """Where reports are published: our own connection when given a Broker (anything
        else, e.g. a test double, is used as it is)."""
        src = self.broker
        if not isinstance(src, Broker):
            return src
        if self._own is not None and self._own[0] is src:
            return self._own[1]
        self.close()
        b = src.sibling(reconnect=False, batch_writes=True)
        b.connect()               # once, without retries: failing, reports go off
        b.reconnect = src.reconnect
        self._own = (src, b)
        self._ticked = time.monotonic()
        return b

    def flush(self) -> None:
        """Send the reports collected so far (published reports are written ~8 KiB at a
        time; the flow calls this once per batch, tick() once a second)."""
        if self._own is None:
            return
        try:
            self._own[1].flush()
        except BrokerStopped:
            raise
        except Exception as e:    # lost and not recovered (reconnect off)
            self._off(e)

    def tick(self) -> None:
        """Heartbeats and confirms of the reports' connection (at most once a second);
        call it from the main loop so that an idle one is not dropped by the broker."""
        if self._own is None or time.monotonic() - self._ticked < 1.0:
            return
        self._ticked = time.monotonic()
        try:
            self._own[1].tick()
        except BrokerStopped:
            raise
        except Exception as e:    # lost and not recovered (reconnect off)
            self._off(e)

    def close(self) -> None:
        """Close our connection, after the confirms of what was sent (a few seconds at
        most, no reconnection)."""
        own, self._own = self._own, None
        if own is None:
            return
        b = own[1]
        try:
            b.reconnect = False
            if b.unconfirmed and self.enabled:
                b.wait_confirms(timeout=5)
        except Exception as e:    # BrokerError, BrokerStopped: they are only reports
            self.log.warning("reports: %s", e)
        try:
            b.close()
        except Exception as e:
            self.log.debug("closing the reports connection: %s", e)
