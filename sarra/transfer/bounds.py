"""Bounds on one download, whatever its protocol (issue 16, item 4).

* **Size**: never more bytes than announced. ``LocalWriter`` refuses a write past its
  ``limit`` (the announced size of the file, or the block's length) and ``expect()`` refuses
  up front a body whose announced length (Content-Length, the remote file's size) is
  longer: ``TransferRefused`` 413, permanent (no retry can make the body shorter).
* **Time**: an overall deadline ``grace + size / min_rate`` per transfer, and a minimum
  progress on the way: after ``grace`` seconds, the bytes received must keep up with
  ``min_rate``. Checked at every piece received (the clock is read there already) and,
  in the main thread, by an interval timer (SIGALRM) that interrupts a read blocked on a
  silent or dripping server. Exceeding it: ``TransferDeadline``, 504, retried later.
* **Slow sources**: a transfer still running after ``grace`` seconds takes one of the
  ``slots`` slow slots of its source (at a pump: the source account; elsewhere: the
  server) shared by all instances of the configuration (locks on files in its state
  directory, sarra.locks: freed when an instance dies). When every slot is
  taken it gives up (deferred to the retry queue), and new messages of that source are
  deferred before they start: one slow source never holds more than ``slots`` instances,
  so other sources' files still flow. A source whose transfer missed its deadline is held
  back the same way for ``penalty`` seconds. A deferred message goes to the retry queue,
  never dropped.

Costs on the fast path: one ``stat`` per file (the source's first slot file) and two
``setitimer`` calls; per piece, one comparison.
"""

import hashlib
import os
import signal
import threading
import time

from sarra import locks
from sarra.transfer import TransferError

TOO_LONG = 413
BAD_ENCODING = 415
REDIRECT = 403
DEADLINE = 504
DEFERRED = 503
#: how long a slow transfer's claim on its slot lasts without being renewed (it is
#: renewed every few seconds while the transfer goes on; an instance killed -9 frees it)
CLAIM = 20.0


class TransferRefused(TransferError):
    """A bound refused the transfer and no retry can help: reported, not retried."""

    permanent = True


class TransferDeadline(BaseException):
    """The transfer's deadline passed. A BaseException, as TransferInterrupted, so that it
    leaves drivers' ``except Exception`` clauses (it may be raised from the SIGALRM
    handler into any driver code); fetch turns it into a retried 504."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class TransferDeferred(BaseException):
    """Every slow slot of the transfer's source is taken: retry later. A BaseException for
    the same reason as TransferDeadline."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def refuse_length(total, limit, shown):
    """Refuse a body of ``total`` bytes (None: unknown) when more than ``limit`` are allowed."""
    if limit is not None and total is not None and total > limit:
        raise TransferRefused(TOO_LONG, 'Payload Too Large: %s is %d bytes, %d announced'
                              % (shown, total, limit))


def too_long(count, limit, path):
    return TransferRefused(TOO_LONG, 'Payload Too Large: more than the %d bytes announced '
                           'came for %s (refused after %d)' % (limit, path, count))


def refuse_encoding(encoding, shown):
    """Refuse a Content-Encoding we did not ask for (we send Accept-Encoding: identity)."""
    encoding = (encoding or '').strip().lower()
    if encoding not in ('', 'identity'):
        raise TransferRefused(BAD_ENCODING, 'Unsupported Media Type: Content-Encoding %r '
                              'not asked for %s' % (encoding[:40], shown))


def deadline_for(size, min_rate, grace):
    """Seconds a transfer of ``size`` bytes may take: grace + size / min_rate (rate 0: none)."""
    if not min_rate or min_rate <= 0:
        return None
    return grace + max(0, size or 0) / float(min_rate)


# --- the interval timer ----------------------------------------------------------------------

_armed = {'on': None}       # the callable the next SIGALRM calls (None: nothing armed)


def _on_alarm(signum, frame):
    fire = _armed['on']
    if fire is not None:
        fire()


def arm(seconds, fire, interval=0.0):
    """Call ``fire()`` (in the main thread, from a signal handler) after ``seconds``, then
    every ``interval`` seconds (0: once). Returns whether the timer is armed: only in the
    main thread, and only when nobody else handles SIGALRM. disarm() always."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        return False
    if not hasattr(signal, 'setitimer'):     # Windows: the checks at every piece only
        return False
    if signal.getsignal(signal.SIGALRM) is not _on_alarm:
        if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
            return False
        signal.signal(signal.SIGALRM, _on_alarm)
    _armed['on'] = fire
    signal.setitimer(signal.ITIMER_REAL, max(0.001, seconds), interval)
    return True


def disarm():
    if _armed['on'] is not None:
        _armed['on'] = None
        signal.setitimer(signal.ITIMER_REAL, 0)


# --- slow slots --------------------------------------------------------------------------------

class SlowSlots:
    """The slow slots of each source, shared by the instances of one configuration through
    files in ``directory``: a slot is held by a lock on its file (sarra.locks), and the file's
    mtime says until when it counts as taken (renewed by its holder; set ahead by a
    penalty)."""

    def __init__(self, directory, slots=1, penalty=60.0):
        self.dir = directory
        self.slots = max(1, int(slots))
        self.penalty = penalty
        self._made = False

    def _path(self, key, i):
        digest = hashlib.sha1(key.encode('utf-8', 'surrogateescape')).hexdigest()[:20]
        return os.path.join(self.dir, '%s.%d' % (digest, i))

    def busy(self, key, now=None):
        """Whether every slot of key is taken (or key is held back): one stat in the usual
        case, when its first slot is free."""
        now = time.time() if now is None else now
        for i in range(self.slots):
            try:
                if os.stat(self._path(key, i)).st_mtime <= now:
                    return False
            except OSError:
                return False
        return True

    def _open(self, key, i):
        if not self._made:
            os.makedirs(self.dir, 0o700, exist_ok=True)
            self._made = True
        return os.open(self._path(key, i), os.O_RDWR | os.O_CREAT | getattr(os, 'O_CLOEXEC', 0),
                       0o600)

    def claim(self, key):
        """Take a free slot of key: a Claim, or None when every slot is taken."""
        for i in range(self.slots):
            fd = self._open(key, i)
            try:
                held = locks.acquire(fd, self._path(key, i), blocking=False)
            except BaseException:
                os.close(fd)
                raise
            if held is None:
                os.close(fd)
                continue
            claim = Claim(fd, held)
            claim.renew()
            return claim
        return None

    def hold_back(self, key):
        """key missed a deadline: its new messages wait ``penalty`` seconds (all slots)."""
        until = time.time() + self.penalty
        for i in range(self.slots):
            try:
                fd = self._open(key, i)
            except OSError:
                return
            try:
                if os.fstat(fd).st_mtime < until:
                    os.utime(fd, (until, until))
            except OSError:
                pass
            finally:
                os.close(fd)


class Claim:
    """One slow slot held: renew() while the transfer goes on, release() at its end."""

    def __init__(self, fd, held=None):
        self.fd, self.held = fd, held

    def renew(self):
        until = time.time() + CLAIM
        try:
            if os.fstat(self.fd).st_mtime < until:
                os.utime(self.fd, (until, until))
        except OSError:
            pass

    def release(self):
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_mtime <= time.time() + CLAIM:   # not a penalty since
                os.utime(self.fd, (0, 0))
        except OSError:
            pass
        if self.held is not None:
            self.held.release()
        os.close(self.fd)
        self.fd = None


# --- one transfer ------------------------------------------------------------------------------

class Guard:
    """The time bounds of one transfer (module docstring). ``check()`` at every piece and
    from the timer; ``count`` is kept up to date by the caller (bytes received so far)."""

    #: seconds between checks by the timer once the grace time is over
    TICK = 1.0

    def __init__(self, size, min_rate, grace, slots=None, key=None, shown=''):
        self.start = time.monotonic()
        self.rate, self.grace = float(min_rate or 0), float(grace or 0)
        self.total = deadline_for(size, min_rate, self.grace)
        self.slots, self.key, self.shown = slots, key, shown
        self.claim = None
        self.count = 0
        self.fired = None           # the exception raised once (never twice)
        self.next_renew = 0.0

    def check(self, now=None):
        now = time.monotonic() if now is None else now
        elapsed = now - self.start
        if elapsed <= self.grace or self.fired is not None:
            return
        if self.rate and elapsed > self.grace + self.count / self.rate:
            self.fired = TransferDeadline(
                'Gateway Timeout: %s too slow: %d bytes in %.0f s (transfer_min_rate %d B/s '
                'after transfer_grace %.0f s)' % (self.shown, self.count, elapsed, self.rate,
                                                  self.grace))
            raise self.fired
        if self.slots is None:
            return
        if self.claim is None:
            self.claim = self.slots.claim(self.key)
            if self.claim is None:
                self.fired = TransferDeferred(
                    'Service unavailable: deferred: %s still running after %.0f s while '
                    'other slow transfers of %s hold its %d slot(s)'
                    % (self.shown, elapsed, self.key, self.slots.slots))
                raise self.fired
            self.next_renew = now + CLAIM / 4
        elif now >= self.next_renew:
            self.claim.renew()
            self.next_renew = now + CLAIM / 4

    def release(self, penalise=False):
        if self.claim is not None:
            self.claim.release()
            self.claim = None
        if penalise and self.slots is not None:
            self.slots.hold_back(self.key)
