"""Delivery reports: what a consumer did with each message, published upstream.

Codes and texts from reports.md §3. A report exchange that is missing or refuses us gives
one warning and switches reporting off for this process; it never stalls the data flow.
"""

import logging
import socket
import time

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


def hostname() -> str:
    return socket.getfqdn()


class Reporter:
    """Publishes reports about consumed messages to ``exchange`` on ``broker``."""

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

    def report(self, msg, code: int, text: str, received: float) -> None:
        if not self.enabled or msg is None:
            return
        rep = msg.to_report(code, text, self.host, self.user, max(0.0, time.time() - received))
        if self.hooks is not None and self.hooks.has("on_report"):
            saved = getattr(self.parent, "report_msg", None)
            self.parent.report_msg = rep
            try:
                if self.hooks.run("on_report") is False:
                    return
            finally:
                self.parent.report_msg = saved
        topic, body, headers = rep.encode(allow_long_headers=True)
        try:
            self.broker.publish(self.exchange, topic, body, headers)
            self.sent += 1
        except Exception as e:  # BrokerError, access refused, missing exchange
            self.enabled = False
            self.log.warning("reports switched off: cannot publish to exchange %s (%s); "
                             "set report_exchange or report_back off", self.exchange, e)
