"""How the work steps (fetch.py, send.py) run a transfer: inside an interruptible
context, tried ``attempts`` times.

:class:`Interruptible` is the flow's one switch saying "a transfer is blocked on the
network now": the SIGTERM/SIGINT handler (Flow.interrupt) raises TransferInterrupted into
the transfer only while it is on, and never during broker I/O (paused()).

:func:`repeat` is the one retry loop: an operation tried up to ``attempts`` times, a
short wait between tries (0.5 s more each time, at most 5 s, cut short by a stop), a stop
turned into download_stopped, and the step deciding which errors end it at once.
"""

from contextlib import contextmanager
from typing import Callable, Optional

from sarra.flow.work import Outcome, TransferInterrupted, download_stopped
from sarra.transfer import TransferError


class Interruptible:
    """``with flow.interruptible(): ...`` around a transfer; interrupt() from a signal
    handler raises TransferInterrupted only inside it (and outside paused())."""

    def __init__(self):
        self.on = False

    @contextmanager
    def __call__(self):
        self.on = True
        try:
            yield self
        finally:
            self.on = False

    @contextmanager
    def paused(self):
        """Broker I/O in the middle of a transfer (heartbeats): never interrupted."""
        was, self.on = self.on, False
        try:
            yield
        finally:
            self.on = was

    def interrupt(self):
        if self.on:
            self.on = False
            raise TransferInterrupted()


def repeat(flow, shown: str, op: Callable[[int], object],
           final: Callable[[TransferError, bool], Optional[Outcome]],
           again: Optional[Callable[[], None]] = None):
    """op(attempt) up to ``attempts`` times; its value when it succeeds.

    A TransferError is given to final(error, last) (last: no try is left, or a stop was
    requested): the Outcome it returns ends the message, None means try again, after
    a warning, again() (e.g. drop the session) and a short wait. TransferInterrupted
    (a stop during the transfer) becomes download_stopped."""
    tries = max(1, flow.cfg.attempts or 1)
    for attempt in range(1, tries + 1):
        try:
            return op(attempt)
        except TransferInterrupted:
            raise download_stopped() from None
        except TransferError as e:
            outcome = final(e, attempt == tries or flow.stop_event.is_set())
            if outcome is not None:
                raise outcome from None
            flow.log.warning("%s: attempt %d/%d failed: %s", shown, attempt, tries, e.message)
            if again is not None:
                again()
            flow.stop_event.wait(min(5.0, 0.5 * attempt))
    return None     # not reached: the last try's final() returns an Outcome
