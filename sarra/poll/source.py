"""sr_poll as a source of the flow engine (sarra/flow/sources.py): every ``sleep`` seconds
one poll (poller.py) whose posts the engine publishes; once the broker confirmed them
(``done``) the poll's record is committed, and dropped when it did not (``failed``): the
files are then announced at the next poll. vip standby, the post connection, on_post,
the duplicate cache, heartbeats and the stats file are the engine's.
"""

import time

from sarra.flow.sources import Announced, Source
from sarra.poll.poller import Poller
from sarra.transfer import redact


class PollSource(Source):

    broker_options = {"batch_writes": True}     # each batch ends with wait_confirms

    def __init__(self, flow):
        Source.__init__(self, flow)
        self.log = flow.log
        self.poller = None
        self._poller()
        self._next = 0.0
        self._start = time.time()

    def _poller(self) -> Poller:
        """The poller of the configuration in force: made again after a reload (between
        two polls: the last one's record is committed, the new one reads it from disk)."""
        flow, old = self.flow, self.poller
        if old is None or old.cfg is not flow.cfg or old.hooks is not flow.hooks:
            if old is not None:
                old.close()
            self.poller = Poller(flow.cfg, flow.log, flow.stop_event, flow.hooks,
                                 flow.plugin_parent, flow.no, flow.credentials,
                                 reset=old is None and bool(flow.cfg.reset))   # at start only
            flow.plugin_parent.post = self.poller.v2_post       # do_poll plugins (v2)
        return self.poller

    @property
    def what(self):
        return "polling %s every %gs: %s" % (
            redact(self.flow.cfg.destination or ""), self.poller.interval,
            ", ".join(self.poller.pulls) or "(do_poll)")

    def get(self, wait: float):
        left = self._next - time.monotonic()
        if left > 0:
            self.flow.stop_event.wait(min(left, max(wait, 0.05)))
            return []
        poller = self._poller()
        self._next = time.monotonic() + poller.interval
        batch = poller.poll()
        if not batch:
            self.poller.commit()            # nothing to confirm: what was listed is on record
            return []
        now = time.time()
        return [Announced(m, now) for m in batch]

    def done(self, batch) -> None:
        self.poller.commit()

    def failed(self, batch, error) -> None:
        self.log.error("%s; the %d files concerned are announced at the next poll",
                       error, len(batch))
        self.poller.rollback()
        cache = self.flow.cache
        if cache is not None:               # not announced: not duplicates next time
            for w in batch:
                cache.remove_path(w.msg.path)

    def stats(self):
        return dict(self.poller.counters, polled=len(self.poller.state), start=self._start)

    def close(self) -> None:
        self.poller.close()
