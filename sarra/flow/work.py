"""One message on its way through the flow, and the ways its handling can end early.

Kept apart from flow.py so that the work steps (download.py, send.py) and plugins can use
these without importing the engine.
"""

import enum
import time
from typing import List, Optional

from sarra.message import Message


class download_stopped(Exception):
    """Raised by a work step when a stop request interrupts a transfer."""


class TransferInterrupted(BaseException):
    """Raised from the signal handler into a transfer blocked on the network (see
    Flow.interrupt). A BaseException so that drivers' ``except Exception`` clauses let it
    through; the flow turns it into download_stopped."""


class Result(str, enum.Enum):
    """What became of a message (Work.outcome), and so what settle() does with it:
    done and rejected are acked, failed goes to the retry queue (then acked), returned
    goes back to the broker. A str, so that plugins comparing with "failed" keep working."""
    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"
    RETURNED = "returned"

    def __str__(self):
        return self.value

    __format__ = str.__format__


class Outcome(Exception):
    """Raised by a work step to end a message early with a report code."""

    def __init__(self, code: int, text: str, retry: bool = False, failed: bool = False):
        super().__init__(f"{code} {text}")
        self.code, self.text, self.retry = code, text, retry
        # counted as failed in the summary even when not retried (a 417 on its last try)
        self.failed = retry or failed


class Work:
    """One message on its way through the flow; plugins see it as ``parent.msg``."""

    def __init__(self, msg: Message, delivery=None, retry_entry=None):
        self.msg = msg
        self.delivery = delivery
        self.retry_entry = retry_entry
        self.received = time.time()
        self.mask = None
        self.new_dir: Optional[str] = None
        self.new_file: Optional[str] = None
        self.root: Optional[str] = None
        self.local_path: Optional[str] = None
        self.posts: List[Message] = []
        self.code, self.text = 201, "Downloaded"
        self.outcome = Result.DONE
        self.file_complete = False
        self.cache_key = None
        self.sum = None             # msg.sum parsed once by the work step

    @property
    def outcome(self) -> Result:
        return self._outcome

    @outcome.setter
    def outcome(self, value):
        """A plugin may set the string ("failed"): kept as the Result it names."""
        if type(value) is Result:
            self._outcome = value
            return
        try:
            self._outcome = Result(value)
        except ValueError:
            raise ValueError(f"outcome {value!r}: not one of "
                             f"{', '.join(r.value for r in Result)}") from None

    # v2 plugin vocabulary
    headers = property(lambda self: self.msg.headers)
    topic = property(lambda self: self.msg.topic)
    exchange = property(lambda self: self.msg.exchange)
    pubtime = property(lambda self: self.msg.pubtime)
    time = property(lambda self: self.msg.pubtime)
    baseurl = property(lambda self: self.msg.baseurl)
    relpath = property(lambda self: self.msg.path)
    urlstr = property(lambda self: self.msg.url)
    isRetry = property(lambda self: self.retry_entry is not None)

    @property
    def again(self) -> bool:
        """Seen before: redelivered by the broker or taken from the retry queue (its work
        may have been done, all or in part, by an instance that died before the ack)."""
        return self.retry_entry is not None or bool(
            self.delivery is not None and self.delivery.redelivered)
    isPulse = property(lambda self: self.msg.kind == "pulse")
    partstr = property(lambda self: self.msg.headers.get("parts"))
    sumstr = property(lambda self: self.msg.headers.get("sum"))

    def get_elapse(self) -> float:
        return time.time() - self.received


class Counters(dict):
    NAMES = ("received", "rejected", "accepted", "duplicates", "transferred", "bytes",
             "posted", "failed", "retried", "malformed")

    def __init__(self):
        super().__init__({n: 0 for n in self.NAMES})

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.items())
