"""The flow engine shared by every component that runs a loop (all but sr_police).

    gather (source.get: a queue, then due retries) → accept/reject → header defaults →
    component check → placement → on_message → duplicate cache → work (download / send /
    none) → on_part/on_file → post → report → ack

Messages are handled in small batches (up to ``prefetch``; half of it when nothing is
posted, so that the broker sends the next batch while this one is worked on; a batch's
acks go in one write): the posts of a batch are
confirmed by the broker (pipelined) and the duplicate cache flushed before any message of
the batch is acked, so an ack always means "finished" or "durably recorded in the retry
queue" (an fsynced append, retry.py). Posts to the broker consumed from, reports and acks
are one AMQP transaction a batch (batchtx.py: nothing announced twice after a kill -9; the
cache is told after its commit). A message is acked in exactly one of these cases:
done (whatever the report code), rejected (filters, on_message), malformed, or written to
the retry queue. A stop request returns the unfinished messages to the broker instead.

Retries: a failed message goes to the on-disk retry queue with exponential backoff
(1 s doubling up to 5 min, plus jitter). Retries are taken only when the broker queue has
nothing new, and one every 100 new messages so that a busy queue does not starve them, so
new data goes first and nothing is retried in a tight loop. When the retry is due is
decided when the queue is looked at (RetryQueue.due), not by a timer.

Duplicate cache: a message is looked up before its work and recorded only once its work
ended without failure, so a message that crashed half-way or went to the retry queue is
never mistaken for a duplicate when it comes back. Expiry is decided at lookup.

What differs per component (placement, download or send or nothing, post or not, source
checks, where work comes from) is a preset in presets.py; this loop has no
component-specific branches.

Where work comes from is the one seam of the loop (sources.py): a consumer's queue
(QueueSource, the gather above), sr_post's paths (postsource.PathSource, one-shot) or
sr_watch's events (sarra.watch.daemon.WatchSource). A source whose messages are built
there (``Source.built``) skips accept/reject ... work: its Works go straight to the post
step (poststep.py: the posters' duplicate suppression, then on_post, outbound,
publish); settle confirms their posts, flushes the cache, then calls ``source.done``
(sr_watch commits its state there) or, when the posts were not confirmed,
``source.failed``. Every component thus shares the post connection (declare, confirms,
reconnect), the heartbeat and on_heartbeat, the stats file, on_start/on_stop and the hook
set-up (plugins see ``pluginview.PluginParent``). To add a source: subclass
sources.Source and name it in a preset (``Preset.source``), see sources.py.
"""

import logging
import os
import threading
import time
from typing import List, Optional

from sarra.flow import cache as dupcache
from sarra.flow import msgbounds
from sarra import message, paths, plugin
from sarra.flow import batchtx, outlet, report, reset, retry, routing, sources
from sarra.flow import drivers, monitor, statsfile
from sarra.flow import saving, spool, standby
from sarra.broker.frames import Undecodable
from sarra.broker.client import Broker, BrokerAccessRefused, BrokerError, BrokerStopped
from sarra.flow.attempts import Interruptible
from sarra.flow.pluginview import PluginParent
from sarra.flow import meter, pacing, poststep, reload
from sarra.config.credentials import Credentials
from sarra.message import Message, MessageError
from sarra.flow.work import (Counters, Outcome, Result, TransferInterrupted, Work,  # noqa: F401
                             download_stopped)

MAX_DRIVERS = drivers.MAX_DRIVERS
#: retries are also taken after this many new messages, so a busy queue cannot starve them
RETRY_EVERY = 100
STATS_EVERY, RATE_WINDOW = statsfile.STATS_EVERY, statsfile.RATE_WINDOW


class Flow:
    """A component: its config, its preset, its source, its connections and its loop."""

    def __init__(self, cfg, preset, logger=None, stop_event=None, instance: int = 1,
                 source=None):
        self.cfg = cfg
        self.preset = preset
        self.logger = self.log = logger or logging.getLogger("sarra")
        routing.refuse_bad_config(cfg, preset, self.log)     # a loop, a missing cluster: exit 2
        self.stop_event = stop_event or threading.Event()
        self.no = instance
        self.msg: Optional[Work] = None
        self.counters = Counters()
        self.transfers = {}
        self._by_base = {}
        self._creds = {}                    # _credential_for's cache
        # what the work step keeps between messages (stepstate.py), made by the preset
        self.step_state = preset.state() if preset.state is not None else None
        self.interruptible = Interruptible()    # with flow.interruptible(): a transfer
        self.user_cache_dir = paths.state_dir(cfg.component, cfg.name or "-")
        self.credentials = Credentials.load()
        self.plugin_parent = PluginParent(self)     # what plugins see as parent
        self.hooks = self.make_hooks(self.plugin_parent)
        self.broker = None
        self.consumer = None
        self.post_broker = None
        self._post_ticked = 0.0
        self.reporter = None
        self.batchtx = None                 # a consumed batch's one transaction (batchtx.py)
        self.cache = None
        self._batch_keys = set()
        if cfg.suppress_duplicates:
            self.cache = dupcache.DupCache(
                os.path.join(self.user_cache_dir, "recent_files_%03d.cache" % instance),
                cfg.suppress_duplicates)
        self.retry = retry.RetryQueue(
            os.path.join(self.user_cache_dir,
                         "sr_%s_%s_%02d.retry" % (cfg.component, cfg.name or "-", instance)),
            ttl=cfg.retry_ttl or cfg.expire or 86400)
        self._since_retry = 0
        self.last_activity = None
        self._next_heartbeat = time.time() + (cfg.heartbeat or 300)
        self.unacked = 0                    # messages of the batch in hand (health: hung)
        self._stats_at, self._stats_unacked, self._stats_prev = 0.0, 0, None
        self.error = None       # what ended run() with 3 (a one-shot's command shows it)
        # SIGHUP / the reload action set the event; load_config (given by the command)
        # reads the configuration again; reload.py applies it between two batches
        self.reload_event = threading.Event()
        self.load_config = None
        self.source = sources.make(self, source)    # last: a source may use all of the above

    # ------------------------------------------------------------ plugin helpers
    def make_hooks(self, parent):
        """The preset's default plugins, then the configuration's (at start, at reload)."""
        hooks = plugin.Hooks(parent, self.log)
        keep = self.preset.keep_plugin
        for hook, names in self.preset.default_plugins.items():
            for n in names:
                hooks.add(hook, n)
        for hook, names in self.cfg.plugins.items():
            for n in names:
                if keep is None or keep(self, hook, n):
                    hooks.add(hook, n)
        return hooks

    def get_option(self, name, default=None):
        return self.cfg.get(name, default) if hasattr(self.cfg, "get") else getattr(self.cfg, name, default)

    def _password(self, url):
        return self.credentials.password_for(url)

    # ------------------------------------------------------------ connections
    def connect(self):
        cfg = self.cfg
        stop = self.stop_event.is_set
        if self.source.consumes:
            self.broker = Broker(cfg.broker, password_lookup=self._password, logger=self.log,
                                 should_stop=stop)
            self.broker.connect()
        # no consuming connection (a poster): a reporter that is off, for the same loop
        self.reporter = report.Reporter(self.broker, cfg.report_exchange, cfg.broker_user(),
                                        enabled=bool(cfg.report_back) and self.preset.reports,
                                        logger=self.log, hooks=self.hooks, parent=self)
        if self.source.consumes:
            self.reporter.probe()   # before consuming: a refusal must not touch deliveries
            self.consumer = meter.make_consumer(cfg, self.broker, self.log, self.stop_event)
            self.consumer.start()
        if self.preset.posts and cfg.post_broker:
            self.post_broker = spool.wrap(self, Broker(   # down: posts kept on disk
                cfg.post_broker, password_lookup=self._password, logger=self.log,
                should_stop=stop, **self.source.broker_options))
            self.post_broker.connect()
            for px in routing.post_exchanges(cfg) if cfg.declare_exchange else ():
                try:                    # post_exchange_split: each shard
                    self.post_broker.declare_exchange(px)
                except BrokerAccessRefused as e:
                    # a pump's sources may not declare exchanges: sr_police made it already
                    (self.log.debug if self.source.one_shot else self.log.warning)(
                        "could not declare post exchange %s: %s", px, e)
                except BrokerError as e:
                    if self.source.one_shot:
                        raise
                    self.log.warning("could not declare post exchange %s: %s", px, e)
        self.batchtx = batchtx.start(self)     # posts, reports, acks: one commit a batch
        if self.preset.connected is not None:
            self.preset.connected(self)

    def close(self):
        drivers.close_all(self)
        if self.reporter is not None:
            self.reporter.close()
        for b in (self.post_broker, self.broker):
            if b is not None:
                try:
                    b.close()
                except Exception:
                    pass

    def interrupt(self):
        """Called from the SIGTERM/SIGINT handler after the stop event is set: abort a
        transfer that is blocked on the network (the message goes back to the queue)."""
        self.interruptible.interrupt()

    # ------------------------------------------------------------ main loop
    def run(self) -> int:
        """Run until the stop event (or a one-shot source's end); 0, or 3 (logged before
        the "stopped:" line; a one-shot's command shows ``self.error``) when the broker
        refused us or was still unreachable when the stop came."""
        rc = 0
        source = self.source
        lifecycle = self.log.debug if source.one_shot else self.log.info
        self.hooks.run("on_start")
        try:
            reset.at_start(self)            # option reset: queue, cache, retries emptied
            standby.connect(self)           # vip: waits while another node holds it
            saving.restore(self)            # restore: the save file back into the queue
            self.write_stats()
            source.start()
            lifecycle("%s %s started, %s", self.cfg.component, self.cfg.name, source.what)
            while not self.stop_event.is_set():
                if not standby.check(self):     # vip gone: idle until it is back
                    continue
                batch = self.source.get(self._idle_wait())     # (a reload may renew it)
                if batch:
                    self.unacked = len(batch)
                    self.handle(batch)
                    self.unacked = 0
                elif self.source.finished():
                    if self.source.confirm_at_end and self.post_broker is not None:
                        self.post_broker.wait_confirms(
                            timeout=max(30.0, self.counters["posted"] / 1000.0))
                    break
                elif self.batchtx is not None:
                    self.batchtx.idle()         # malformed messages' acks and reports
                self.reporter.tick()
                self.tick_post_broker()
                self.heartbeat()
                reload.between_batches(self)    # SIGHUP: the configuration read again
        except BrokerStopped as e:
            self.log.info("stop requested while waiting for the broker")
            self.error, rc = e, 3
        except BrokerError as e:
            if not source.one_shot:
                self.log.error("%s", e)
            self.error, rc = e, 3
        finally:
            self.hooks.run("on_stop")
            if self.cache is not None:
                self.cache.flush()
            self.retry.close()
            self.source.close()
            self.close()
            lifecycle("stopped: %s", self.counters.line())
        return rc

    def gather(self) -> List[Work]:
        """New messages: up to half of ``prefetch`` (the broker sends the other half while
        this batch is handled: no wait for deliveries after each ack), or up to all of it
        when the flow posts (each batch waits for its posts' confirms, winnow commits a
        transaction: fewer, larger batches); due retries when the queue has nothing."""
        limit = max(1, self.cfg.prefetch or 1)
        if self.post_broker is None:
            limit = (limit + 1) // 2
        batch = []
        take_retry = self._since_retry >= RETRY_EVERY
        wait = 0.0 if take_retry else self._idle_wait()
        delivery = self.consumer.get(wait)
        while delivery is not None:
            work = self.decode(delivery)
            if work is not None:
                batch.append(work)
            if len(batch) >= limit or self.stop_event.is_set():
                break
            delivery = self.consumer.get(0)
        self._since_retry += len(batch)
        if batch:
            self.last_activity = time.time()
            monitor.seen(self, batch)       # lag: the oldest message's age when taken
        if not batch or take_retry:
            self._since_retry = 0
            for entry in self.retry.due(limit=1 if batch else limit):
                try:
                    msg = message.decode(entry.routing_key, entry.body, entry.headers, entry.exchange)
                except MessageError as e:
                    self.log.error("dropping unreadable retry entry: %s", e)
                    self.retry.done(entry)
                    continue
                self.counters["retried"] += 1
                batch.append(Work(msg, retry_entry=entry))
        return batch

    def _idle_wait(self) -> float:
        nd = self.retry.next_due_in()
        wait = 1.0 if nd is None else max(0.0, min(1.0, nd))
        return min(wait, max(0.0, self._next_heartbeat - time.time()))

    def decode(self, delivery) -> Optional[Work]:
        self.counters["received"] += 1
        try:
            if getattr(delivery, "undecodable", ""):    # a frame py-amqp could not read
                raise Undecodable(delivery.undecodable)
            msg = message.decode(delivery.routing_key, delivery.body, delivery.headers, delivery.exchange)
        except (MessageError, Undecodable) as e:
            self.counters["malformed"] += 1
            self.log.error("malformed message from exchange %s, key %s: %s (acknowledged and dropped)",
                           delivery.exchange, delivery.routing_key, e)
            self._report_malformed(delivery)
            self._safe(self.consumer.ack, delivery)
            return None
        return Work(msg, delivery=delivery)

    def _report_malformed(self, delivery):
        """Report 417 about a message that could not be decoded, when its body starts with
        the three fields of a post (else there is nothing to say it about)."""
        if self.reporter is None or not self.reporter.enabled:
            return
        fields = str(delivery.body).split()
        if len(fields) < 3:
            return
        try:
            message.parse_time(fields[0])      # a body that is not a post gets no report
        except ValueError:
            return
        try:
            hdrs = msgbounds.malformed_report_headers(self, delivery)
            hdrs.setdefault("sum", "0,0")
            bad = Message(fields[0], fields[1], fields[2], hdrs,
                          topic=str(delivery.routing_key) or "v02.post")
            self.reporter.report(bad, *report.MALFORMED, time.time())
        except (MessageError, ValueError, TypeError) as e:
            self.log.warning("no report for the malformed message: %s", e)

    def handle(self, batch: List[Work]):
        if saving.take(self, batch):        # save on: to the save file, not processed
            return
        if self.source.built:
            if poststep.post_built(self, batch):
                self.settle(batch)
            return
        self._batch_keys = set()        # done earlier in this batch, not yet in the cache
        for i, work in enumerate(batch):
            if i and self.stop_event.is_set():
                work.outcome = Result.RETURNED   # stopping: give it back untouched
                continue
            self.process(work)
            if work.cache_key is not None and work.outcome == Result.DONE:
                self._batch_keys.add(work.cache_key)
        self.settle(batch)
        if self.preset.settled is not None:
            self.preset.settled(self, batch)

    def settle(self, batch: List[Work]):
        """Make every outcome durable, then ack: posts confirmed, cache flushed, retries saved.
        With a transaction (batchtx.py): retries saved, then posts, reports and acks
        committed together, then the cache told and the retry entries done."""
        tx = self.batchtx
        if self.post_broker is not None and not self.source.confirm_at_end \
                and any(w.posts for w in batch):
            try:
                self.post_broker.wait_confirms()
            except BrokerStopped:
                raise
            except BrokerError as e:
                self.source.failed(batch, e)  # the queue: back to it; a poster: posted again
                if tx is not None:
                    tx.abandon()                # the requeues are in the transaction
                self.stop_event.wait(1.0)      # a refusing exchange must not spin the loop
                return
        if tx is None:
            self._cache_done(batch)
        acks, finished, added = [], [], []
        for w in batch:
            if w.outcome == Result.RETURNED:
                if w.delivery is not None:
                    self._safe(self.consumer.requeue, w.delivery)
                continue
            if w.outcome == Result.FAILED and self.cfg.retry:
                if w.retry_entry is not None:
                    self.retry.failed(w.retry_entry)
                else:
                    try:
                        topic, body, headers = w.msg.encode(allow_long_headers=True)
                        added.append((w, self.retry.add(topic, body, headers, w.msg.exchange)))
                    except (OSError, MessageError) as e:
                        self.log.error("cannot record %s for retry (%s); returning it to the queue",
                                       w.msg.path, e)
                        self._safe(self.consumer.requeue, w.delivery)
                        self.stop_event.wait(1.0)
                        continue
            elif w.retry_entry is not None:
                finished.append(w)
            if w.delivery is not None:
                acks.append(w.delivery)
        if tx is not None:
            batch = tx.commit(batch, acks, added)   # only what it committed goes on
            if batch is None:
                return
            self._cache_done(batch)
        else:
            if self.reporter is not None:
                self.reporter.flush()        # the batch's reports: one write
            if acks:
                self._safe(self.consumer.ack_many, acks)     # one write, usually one frame
        kept = set(map(id, batch))
        for w in finished:
            if id(w) in kept:
                self.retry.done(w.retry_entry)
        self.source.done(batch)
        if self.preset.confirmed is not None:   # posts confirmed, acks sent (senddone.py)
            self.preset.confirmed(self, batch)

    def _cache_done(self, batch: List[Work]):
        if self.cache is not None:
            for w in batch:
                if w.cache_key is not None and w.outcome == Result.DONE:
                    self.cache.check_and_add(w.cache_key)
            self.cache.flush()

    def _safe(self, fn, *args):
        try:
            fn(*args)
        except BrokerStopped:
            raise
        except BrokerError as e:
            self.log.warning("%s: %s (the broker will redeliver)", fn.__name__, e)

    # ------------------------------------------------------------ one message
    def process(self, work: Work):
        msg = work.msg
        if msg.kind == "pulse":
            return
        pacing.per_message(self)    # message_rate_max
        self.msg = work
        try:
            if not self.accept(work):
                if work.retry_entry is not None:
                    self.log.info("%s: no longer accepted, retry dropped", msg.url)
                work.outcome = Result.REJECTED
                self.counters["rejected"] += 1
                return
            self.counters["accepted"] += 1
            if self.preset.check is not None:
                self.preset.check(self, work)
            self.fill_defaults(msg)
            if self.preset.place is not None and not self.cfg.notify_only:
                self.preset.place(self, work)
            if not self.hooks.run("on_message"):
                if work.outcome != Result.FAILED:      # msg_to_retry() keeps it for later
                    work.outcome = Result.REJECTED
                return
            if self.preset.dedupe is not None:
                self.preset.dedupe(self, work)
            elif self.cache is not None and not (self.preset.uncached is not None
                                                 and self.preset.uncached(self, work)):
                work.cache_key = dupcache.cache_key(msg, self.cfg.suppress_duplicates_basis or "path")
                if work.retry_entry is None and (work.cache_key in self.cache
                                                 or work.cache_key in self._batch_keys):
                    self.counters["duplicates"] += 1
                    raise Outcome(*report.DUPLICATE)
            msgbounds.check_work(self, work)    # before the transfer: refused once
            if self.preset.work is not None and not self.cfg.notify_only:
                self.preset.work(self, work)
            else:
                work.code, work.text = report.PUBLISHED if self.preset.posts else (201, "Accepted")
            if self.preset.posts and self.post_broker is not None:
                self.post(work)
            elif self.post_broker is None:
                outlet.emit(self, work)         # outlet json/url: a line on the command's stdout
            self.reporter.report(msg, work.code, work.text, work.received)
        except Outcome as o:
            work.code, work.text = o.code, o.text
            if o.retry:
                work.outcome = Result.FAILED
                self.counters["failed"] += 1
                self.log.error("%s: %s %s (will retry)", msg.url, o.code, o.text)
            elif o.code >= 400:
                if o.failed:        # e.g. a 417 on its last try
                    self.counters["failed"] += 1
                self.log.error("%s: %s %s", msg.url, o.code, o.text)
            else:
                self.log.info("%s: %s %s%s", msg.url, o.code, o.text,
                              " (seen before: posting it again)" if work.posts else "")
                if work.posts and self.preset.posts and self.post_broker is not None:
                    if not self._post_again(work):      # see download.already_here
                        return
            self.reporter.report(msg, o.code, o.text, work.received)
        except download_stopped:
            work.outcome = Result.RETURNED
            self.log.info("%s: stop requested during transfer, returned to the queue", msg.url)
        except BrokerStopped:
            work.outcome = Result.RETURNED
            raise
        except Exception as e:  # a bug or an unexpected OS error: never lose the message
            work.outcome = Result.FAILED
            self.counters["failed"] += 1
            self.log.exception("%s: unexpected error, will retry: %s", msg.url, e)
            self.reporter.report(msg, 503, "Unable to process", work.received)
        finally:
            self.msg = None

    def _post_again(self, work: Work) -> bool:
        """Post a 304 that was seen before (download.already_here) with the same
        outcomes as a post on the main path; False when that failed (reported here)."""
        try:
            self.post(work)
            return True
        except BrokerStopped:
            work.outcome = Result.RETURNED
            raise
        except Outcome as o:        # cannot be encoded: refused once, never retried
            work.code, work.text = o.code, o.text
            self.log.error("%s: %s %s", work.msg.url, o.code, o.text)
            self.reporter.report(work.msg, o.code, o.text, work.received)
            return False
        except Exception as e:      # exchange refused...: retry it later
            work.outcome = Result.FAILED
            self.counters["failed"] += 1
            self.log.error("%s: posting again failed, will retry: %s", work.msg.url, e)
            self.reporter.report(work.msg, 503, "Unable to process", work.received)
            return False

    def msg_to_retry(self):
        """Plugins (e.g. delay) call this to put the current message aside for a later retry."""
        if self.msg is not None:
            self.msg.outcome = Result.FAILED

    def accept(self, work: Work) -> bool:
        """accept/reject: first matching clause wins; no clause at all accepts everything."""
        masks = self.cfg.masks
        url = work.msg.baseurl + work.msg.path      # as v2, not message.join_url: masks unchanged
        for m in masks:
            if m.regex.match(url):
                if m.accept:
                    work.mask = m
                    return True
                break
        else:
            if self.cfg.accept_unmatch or not any(m.accept for m in masks):
                return True
        if self.cfg.log_reject:
            self.log.info("rejected %s", url)
        return False

    def fill_defaults(self, msg: Message):
        h = msg.headers
        if "source" not in h:
            h["source"] = self.cfg.source or self.cfg.broker_user()
        if "from_cluster" not in h:
            h["from_cluster"] = self.cfg.cluster or self.cfg.broker_netloc()
        if "to_clusters" not in h and self.cfg.to:
            h["to_clusters"] = self.cfg.to

    def post(self, work: Work):
        """The post step: on_post, then publish each of work.posts (work.msg when the
        component has no work step); raises Outcome when one cannot be encoded."""
        cfg = self.cfg
        if not work.posts and (cfg.notify_only or self.preset.work is None):
            work.posts = [work.msg]     # recorded, so that settle() waits for its confirm
        poststep.publish(self, work, cfg.post_exchange, bool(cfg.get("persistent", True)),
                         self.hooks.has("on_post"))

    # ------------------------------------------------------------ housekeeping
    def tick_brokers(self):
        """While busy elsewhere (a long transfer): heartbeats and pending frames of the
        consuming connection, and of the one we post on."""
        if self.broker is not None:
            self.broker.tick()
        self.tick_post_broker()
        self.stats_tick()

    def tick_post_broker(self):
        """Keep the connection we post on alive while nothing is posted (at most once a
        second): without it, the broker drops it after missed AMQP heartbeats and the next
        post has to reconnect first."""
        pb = self.post_broker
        if pb is None:
            return
        now = time.monotonic()
        if now - self._post_ticked >= 1.0:
            self._post_ticked = now
            pb.tick()

    def stats_tick(self, now: Optional[float] = None):
        """The stats file rewritten when due (statsfile.tick)."""
        statsfile.tick(self, time.time() if now is None else now)

    def heartbeat(self):
        statsfile.heartbeat(self)

    def write_stats(self):
        statsfile.write(self)

    def transfer_for(self, url: str, baseurl: Optional[str] = None):
        """The pooled transfer driver for url (drivers.py); KeyError: no such scheme."""
        return drivers.transfer_for(self, url, baseurl)

    def _credential_for(self, url: str):
        return drivers.credential_for(self, url)
