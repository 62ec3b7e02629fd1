"""Where a flow's work comes from: the engine's one pluggable seam for its input.

The engine (engine.py) runs one loop for every component:

    source.get(wait) -> batch of Work -> handle (process or post step) -> settle:
        posts confirmed, duplicate cache flushed -> source.done(batch)
        (posts refused or the connection lost    -> source.failed(batch, error))
    -> reporter tick, post broker tick, heartbeat (stats file, on_heartbeat, source.heartbeat)
    ... until the stop event, or source.finished() with nothing left (a one-shot run).

A source is a :class:`Source` subclass. A preset names it (``Preset.source``): a callable
``flow -> Source`` or a ``"package.module:Name"`` string imported when the flow is built
(a string lets a preset in this package name a source that lives in a higher layer, such
as sarra.watch, the way default plugins are named); ``None`` is the queue.

* :class:`QueueSource`: a consumer's queue and its retry queue (the engine's
  ``gather``); its messages go through the whole of ``Flow.process``; settle acks them.
* ``sarra.flow.postsource.PathSource``: sr_post's paths, announced once (one-shot).
* ``sarra.watch.daemon.WatchSource``: sr_watch's events, readiness and state.

A source whose messages are built here (``built = True``: announcements of local or
remote files) skips accept/reject, header defaults, on_message and the work step: its
Works go straight to the post step (``Flow.post``: the posters' duplicate suppression,
on_post, publish), and their posts are confirmed before ``done`` is called, which is
where such a source commits what it remembers (sr_watch's state file).
"""

import importlib
from typing import Dict, List

from sarra.flow.work import Result, Work


class Announced(Work):
    """The Work of a message a source built (cheap to make: sr_post makes thousands a
    second): the post itself, when it was made, and the local file it announces."""

    delivery = retry_entry = mask = new_dir = new_file = root = sum = cache_key = None
    file_complete = False
    code, text = 201, "Published"
    _outcome = Result.DONE

    def __init__(self, msg, received: float, local_path=None):
        self.msg = msg
        self.posts = [msg]
        self.received = received
        self.local_path = local_path

    url = property(lambda self: self.msg.url)      # as the posters' plugins always saw it


class Source:
    """Where work comes from. Subclass it and override what differs (see the docstring)."""

    #: True: the flow opens the consuming connection, the queue and the reporter
    consumes = False
    #: True: messages arrive built; they go straight to the post step (Flow.post)
    built = True
    #: True: a command run once, not a daemon: the engine's lifecycle lines (started,
    #: stopped) are debug, and a broker error is left to the command (Flow.error), not logged
    one_shot = False
    #: extra keyword arguments of the post connection's Broker (batch_writes, reconnect...)
    broker_options: Dict = {}
    #: True: a one-shot source with nothing to commit (sr_post): the engine waits for the
    #: confirms once, when the source is finished, not after each batch (no pause in the
    #: pipeline per batch); done() then follows the batch's publish, not its confirms
    confirm_at_end = False
    #: what the "started" line says is being read
    what = ""

    def __init__(self, flow):
        self.flow = flow

    def start(self) -> None:
        """Called once the flow's connections are up, before the first get()."""

    def get(self, wait: float) -> List[Work]:
        """The next batch (empty when there is none yet); may block up to ``wait`` s
        (the engine's next housekeeping: heartbeat, a retry due)."""
        return []

    def done(self, batch: List[Work]) -> None:
        """The batch is settled: its posts were confirmed by the broker and the duplicate
        cache flushed. Commit what the source remembers (a queue's acks are settle's)."""

    def failed(self, batch: List[Work], error: Exception) -> None:
        """The batch's posts were not confirmed (or the post connection failed while they
        were published): take them back to be posted again, or raise ``error`` to end the
        run (a one-shot command exits 3). The engine then waits a second."""
        raise error

    def finished(self) -> bool:
        """True once a one-shot source has nothing more to give: the run ends."""
        return False

    def heartbeat(self, now: float) -> None:
        """At each heartbeat, after the stats file and on_heartbeat."""

    def stats(self) -> Dict:
        """Fields of the source added to the stats file (what `sr status` reads)."""
        return {}

    def close(self) -> None:
        """At the end of the run (after on_stop), whatever ended it."""


class QueueSource(Source):
    """A consumer's queue (flow.consumer, made by Flow.connect) and its retry queue."""

    consumes = True
    built = False

    @property
    def what(self):
        consumer = self.flow.consumer
        return "queue %s" % (consumer.queue if consumer is not None else "- (stopped in standby)")

    def get(self, wait: float) -> List[Work]:
        return self.flow.gather()          # its own wait: Flow._idle_wait

    def failed(self, batch: List[Work], error: Exception) -> None:
        flow = self.flow
        flow.log.error("posts not confirmed (%s): messages go back to the queue", error)
        for w in batch:
            if w.delivery is not None:
                flow._safe(flow.consumer.requeue, w.delivery)
            elif w.retry_entry is not None:
                flow.retry.failed(w.retry_entry)     # backoff, not at once again


def make(flow, source=None) -> Source:
    """The flow's source: ``source`` if given (a Source, or what a preset may name),
    else the preset's, else the queue."""
    if source is None:
        source = flow.preset.source
    if source is None:
        return QueueSource(flow)
    if isinstance(source, Source):
        return source
    if isinstance(source, str):
        module, _, name = source.partition(":")
        source = getattr(importlib.import_module(module), name)
    return source(flow)
