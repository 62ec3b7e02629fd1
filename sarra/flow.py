"""The flow engine shared by every consuming component.

    gather (queue, then due retries) → accept/reject → header defaults → component check →
    on_message → duplicate cache → work (download / send / none) → on_part/on_file →
    post → report → ack

Messages are handled in small batches: the posts of a batch are confirmed by the broker
(pipelined) and the duplicate cache flushed before any message of the batch is acked, so
an ack always means "finished" or "durably recorded in the retry queue". A failed message
goes to the on-disk retry queue with exponential backoff; retries are only taken when the
queue has nothing new (and one every 100 new messages so that they are not starved), so new
data goes before old retries and nothing is retried in a tight loop.

What differs per component (download or not, post or not, source checks) is a preset in
components.py; this loop has no component-specific branches.
"""

import logging
import os
import threading
import time
from typing import List, Optional

from sarra import cache as dupcache
from sarra import message, paths, plugin, report, retry
from sarra.broker import Broker, BrokerError
from sarra.consumer import Consumer
from sarra.credentials import Credentials
from sarra.message import Message, MessageError


class download_stopped(Exception):
    """Raised by a work step when a stop request interrupts a transfer."""


class Outcome(Exception):
    """Raised by a work step to end a message early with a report code."""

    def __init__(self, code: int, text: str, retry: bool = False):
        super().__init__(f"{code} {text}")
        self.code, self.text, self.retry = code, text, retry


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
        self.outcome = "done"       # done | rejected | failed
        self.file_complete = False

    # v2 plugin vocabulary
    headers = property(lambda self: self.msg.headers)
    topic = property(lambda self: self.msg.topic)
    exchange = property(lambda self: self.msg.exchange)
    pubtime = property(lambda self: self.msg.pubtime)
    baseurl = property(lambda self: self.msg.baseurl)
    relpath = property(lambda self: self.msg.path)
    urlstr = property(lambda self: self.msg.url)
    isRetry = property(lambda self: self.retry_entry is not None)
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


class Flow:
    """A consuming component: its config, its preset, its connections and its loop."""

    def __init__(self, cfg, preset, logger=None, stop_event=None, instance: int = 1):
        self.cfg = cfg
        self.preset = preset
        self.logger = self.log = logger or logging.getLogger("sarra")
        self.stop_event = stop_event or threading.Event()
        self.no = instance
        self.msg: Optional[Work] = None
        self.counters = Counters()
        self.transfers = {}
        self.user_cache_dir = paths.state_dir(cfg.component, cfg.name or "-")
        self.credentials = Credentials.load()
        self.hooks = plugin.Hooks(self, self.log)
        for hook, names in preset.default_plugins.items():
            for n in names:
                self.hooks.add(hook, n)
        for hook, names in cfg.plugins.items():
            for n in names:
                self.hooks.add(hook, n)
        self.broker = None
        self.consumer = None
        self.post_broker = None
        self.reporter = None
        self.cache = None
        if cfg.suppress_duplicates:
            self.cache = dupcache.DupCache(
                os.path.join(self.user_cache_dir, "recent_files_%03d.cache" % instance),
                cfg.suppress_duplicates)
        self.retry = retry.RetryQueue(
            os.path.join(self.user_cache_dir, "sr_%s_%s_%02d.retry" % (cfg.component, cfg.name or "-", instance)),
            ttl=cfg.retry_ttl or cfg.expire or 86400)
        self._since_retry = 0
        self.last_activity = None
        self._next_heartbeat = time.time() + (cfg.heartbeat or 300)

    # ------------------------------------------------------------ plugin helpers
    def get_option(self, name, default=None):
        return self.cfg.get(name, default) if hasattr(self.cfg, "get") else getattr(self.cfg, name, default)

    def __getattr__(self, name):
        # v2 plugins read options as parent.<option>
        cfg = self.__dict__.get("cfg")
        if cfg is None:
            raise AttributeError(name)
        return getattr(cfg, name)

    def _password(self, url):
        cred = self.credentials.lookup(url)
        return cred.password if cred else None

    # ------------------------------------------------------------ connections
    def connect(self):
        cfg = self.cfg
        stop = self.stop_event.is_set
        self.broker = Broker(cfg.broker, password_lookup=self._password, logger=self.log,
                             should_stop=stop)
        self.broker.connect()
        self.consumer = Consumer(cfg, self.broker, self.log)
        self.consumer.start()
        if self.preset.posts and cfg.post_broker:
            self.post_broker = Broker(cfg.post_broker, password_lookup=self._password,
                                      logger=self.log, should_stop=stop)
            self.post_broker.connect()
            if cfg.declare_exchange and cfg.post_exchange:
                try:
                    self.post_broker.declare_exchange(cfg.post_exchange)
                except BrokerError as e:
                    self.log.warning("could not declare post exchange %s: %s", cfg.post_exchange, e)
        rx = cfg.report_exchange
        self.reporter = report.Reporter(self.broker, rx, cfg.broker_user(),
                                        enabled=bool(cfg.report_back) and self.preset.reports,
                                        logger=self.log, hooks=self.hooks, parent=self)

    def close(self):
        for t in self.transfers.values():
            try:
                t.close()
            except Exception:
                pass
        self.transfers.clear()
        for b in (self.post_broker, self.broker):
            if b is not None:
                try:
                    b.close()
                except Exception:
                    pass

    # ------------------------------------------------------------ main loop
    def run(self) -> int:
        self.hooks.run("on_start")
        try:
            self.connect()
            self.write_stats()
            self.log.info("%s %s started, queue %s", self.cfg.component, self.cfg.name, self.consumer.queue)
            while not self.stop_event.is_set():
                batch = self.gather()
                if batch:
                    self.handle(batch)
                self.heartbeat()
        finally:
            self.hooks.run("on_stop")
            if self.cache is not None:
                self.cache.flush()
            self.close()
            self.log.info("stopped: %s", self.counters.line())
        return 0

    def gather(self) -> List[Work]:
        """Up to ``prefetch`` new messages; due retries when the queue has nothing."""
        limit = max(1, self.cfg.prefetch or 1)
        batch = []
        take_retry = self._since_retry >= 100
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
            msg = message.decode(delivery.routing_key, delivery.body, delivery.headers, delivery.exchange)
        except MessageError as e:
            self.counters["malformed"] += 1
            self.log.error("malformed message from exchange %s, key %s: %s (acknowledged and dropped)",
                           delivery.exchange, delivery.routing_key, e)
            self._report_malformed(delivery)
            self.consumer.ack(delivery)
            return None
        return Work(msg, delivery=delivery)

    def _report_malformed(self, delivery):
        fields = str(delivery.body).split()
        if len(fields) < 3 or self.reporter is None:
            return
        hdrs = {str(k): str(v) for k, v in (delivery.headers or {}).items()}
        hdrs.setdefault("sum", "0,0000")
        bad = Message(fields[0], fields[1], fields[2], hdrs, topic=str(delivery.routing_key))
        self.reporter.report(bad, *report.MALFORMED, time.time())

    def handle(self, batch: List[Work]):
        for i, work in enumerate(batch):
            if i and self.stop_event.is_set():
                work.outcome = "returned"   # stopping: give it back untouched
                continue
            self.process(work)
        self.settle(batch)

    def settle(self, batch: List[Work]):
        """Make every outcome durable, then ack: posts confirmed, cache flushed, retries saved."""
        if self.post_broker is not None and any(w.posts for w in batch):
            try:
                self.post_broker.wait_confirms()
            except BrokerError as e:
                self.log.error("posts not confirmed (%s): messages go back to the queue", e)
                for w in batch:
                    if w.delivery is not None:
                        self._safe(self.consumer.requeue, w.delivery)
                return
        if self.cache is not None:
            self.cache.flush()
        for w in batch:
            if w.outcome == "returned":
                if w.delivery is not None:
                    self._safe(self.consumer.requeue, w.delivery)
                continue
            if w.outcome == "failed" and self.cfg.retry:
                if w.retry_entry is not None:
                    self.retry.failed(w.retry_entry)
                else:
                    try:
                        topic, body, headers = w.msg.encode(allow_long_headers=True)
                        self.retry.add(topic, body, headers, w.msg.exchange)
                    except OSError as e:
                        self.log.error("cannot record %s for retry (%s); returning it to the queue",
                                       w.msg.path, e)
                        self._safe(self.consumer.requeue, w.delivery)
                        self.stop_event.wait(1.0)
                        continue
            elif w.retry_entry is not None:
                self.retry.done(w.retry_entry)
            if w.delivery is not None:
                self._safe(self.consumer.ack, w.delivery)

    def _safe(self, fn, *args):
        try:
            fn(*args)
        except BrokerError as e:
            self.log.warning("%s: %s (the broker will redeliver)", fn.__name__, e)

    # ------------------------------------------------------------ one message
    def process(self, work: Work):
        msg = work.msg
        if msg.kind == "pulse":
            return
        self.msg = work
        try:
            if work.retry_entry is None and not self.accept(work):
                work.outcome = "rejected"
                self.counters["rejected"] += 1
                return
            self.counters["accepted"] += 1
            if self.preset.check is not None:
                self.preset.check(self, work)
            self.fill_defaults(msg)
            if not self.hooks.run("on_message"):
                if work.outcome != "failed":      # msg_to_retry() keeps it for later
                    work.outcome = "rejected"
                return
            if self.cache is not None and work.retry_entry is None:
                key = dupcache.cache_key(msg, self.cfg.suppress_duplicates_basis or "path")
                if not self.cache.check_and_add(key):
                    self.counters["duplicates"] += 1
                    raise Outcome(*report.DUPLICATE)
            if self.preset.work is not None and not self.cfg.notify_only:
                self.preset.work(self, work)
            else:
                work.code, work.text = report.PUBLISHED if self.preset.posts else (201, "Accepted")
            if self.preset.posts and self.post_broker is not None:
                self.post(work)
            self.reporter.report(msg, work.code, work.text, work.received)
        except Outcome as o:
            if o.retry:
                work.outcome = "failed"
                self.counters["failed"] += 1
                self.log.error("%s: %s %s (will retry)", msg.url, o.code, o.text)
            elif o.code >= 400:
                self.log.error("%s: %s %s", msg.url, o.code, o.text)
            else:
                self.log.info("%s: %s %s", msg.url, o.code, o.text)
            self.reporter.report(msg, o.code, o.text, work.received)
        except download_stopped:
            work.outcome = "returned"
            self.log.info("%s: stop requested during transfer, returned to the queue", msg.url)
        except Exception as e:  # a bug or an unexpected OS error: never lose the message
            work.outcome = "failed"
            self.counters["failed"] += 1
            self.log.exception("%s: unexpected error, will retry: %s", msg.url, e)
            self.reporter.report(msg, 503, "Unable to process", work.received)
        finally:
            self.msg = None

    def msg_to_retry(self):
        """Plugins (e.g. delay) call this to put the current message aside for a later retry."""
        if self.msg is not None:
            self.msg.outcome = "failed"

    def accept(self, work: Work) -> bool:
        """accept/reject: first matching clause wins; no clause at all accepts everything."""
        masks = self.cfg.masks
        url = work.msg.baseurl + work.msg.path
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
        posts = work.posts or ([work.msg] if self.cfg.notify_only or self.preset.work is None else [])
        for p in posts:
            self.msg = work
            work.outgoing = p
            if not self.hooks.run("on_post"):
                continue
            topic, body, headers = p.encode()
            self.post_broker.publish(self.cfg.post_exchange, topic, body, headers)
            self.counters["posted"] += 1

    # ------------------------------------------------------------ housekeeping
    def heartbeat(self):
        now = time.time()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + (self.cfg.heartbeat or 300)
        self.write_stats()
        self.hooks.run("on_heartbeat")

    def write_stats(self):
        """Counters for `sr status` (messages/s, last activity), one small JSON per instance."""
        import json
        path = os.path.join(self.user_cache_dir, "sr_%s_%s_%02d.stats" % (
            self.cfg.component, self.cfg.name or "-", self.no))
        data = dict(self.counters, time=time.time(), last_activity=self.last_activity,
                    retry_queue=len(self.retry), pid=os.getpid())
        try:
            paths.atomic_write(path, json.dumps(data))
        except OSError as e:
            self.log.warning("cannot write %s: %s", path, e)

    def transfer_for(self, url: str):
        from sarra import transfer
        return transfer.for_url(url, self.transfers, credentials=self.credentials.lookup,
                                timeout=self.cfg.timeout or 300, logger=self.log)
