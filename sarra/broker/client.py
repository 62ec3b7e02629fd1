"""AMQP 0-9-1 broker access (RabbitMQ) on top of py-amqp; knows nothing of v02 or files.

One Broker = one connection + one channel: declarations remembered and replayed after a
reconnect; publishing with pipelined publisher confirms (at most ``max_inflight``
unconfirmed, re-published after a reconnect: duplicates possible, loss not); consuming with
prefetch and explicit acks (stale delivery tags from an old channel are ignored);
reconnection with exponential backoff interruptible by a stop event/callable.
Not thread-safe. Passwords never appear in messages or logs (see redact()).

URL parsing is in sarra.config.brokerurl, the connection/recovery machinery (and the error
classes) in sarra.broker.connection; their public names are re-exported here.
"""

import collections
import dataclasses
import logging
import time

from amqp import exceptions as amqp_exc

from sarra.broker import frames as amqpframes
from sarra.broker.connection import (BrokerAccessRefused, BrokerConnection, BrokerError,  # noqa: F401
                                     BrokerNotFound, BrokerStopped, _WriteBuffer)
from sarra.broker.wire import (_ack_frame, _ack_frames, _as_text, _content_header,  # noqa: F401
                               _frames, _publish_args)    # (the frame tests read them here)
from sarra.config.brokerurl import DEFAULT_PORTS, BrokerURL, _display, parse_url, redact  # noqa: F401

__all__ = ['BrokerError', 'BrokerAccessRefused', 'BrokerNotFound', 'BrokerStopped', 'BrokerURL',
           'Delivery', 'DeliveryTag', 'Broker', 'parse_url', 'redact']


# ---------------------------------------------------------------------------- deliveries

class DeliveryTag(int):
    """A broker delivery tag that remembers which channel incarnation it came from."""

    def __new__(cls, value, generation):
        obj = super().__new__(cls, value)
        obj.generation = generation
        return obj


@dataclasses.dataclass
class Delivery:
    exchange: str
    routing_key: str
    body: str            # UTF-8 decoded, errors replaced
    raw: bytes           # body exactly as received
    headers: dict        # application headers, every value a str
    delivery_tag: DeliveryTag
    redelivered: bool
    properties: dict     # other AMQP properties (content_type, delivery_mode, ...)
    undecodable: str = ''   # why the frame could not be decoded (see sarra.broker.frames)
    consumer_tag: str = ''  # which consumer (node_shares: which shard queue, shares.py)


# ---------------------------------------------------------------------------- broker

class Broker(BrokerConnection):
    """A connection to one broker; see the module docstring."""

    def __init__(self, url, password_lookup=None, heartbeat=60, connect_timeout=10,
                 logger=None, reconnect=True, max_inflight=1000, backoff_initial=1.0,
                 backoff_max=60.0, stop_event=None, should_stop=None, ssl_options=None,
                 batch_writes=False):
        self.url = url
        self.parsed = parse_url(url)
        self.display = _display(url)
        self.password_lookup = password_lookup
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.log = logger or logging.getLogger('sarra.broker')
        self.reconnect = reconnect
        self.max_inflight = max(1, int(max_inflight))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_event = stop_event
        self.should_stop = should_stop
        self.ssl_options = ssl_options
        # batch_writes: published frames are collected and sent ~8 KiB at a time (and
        # before anything is read); for callers that end with wait_confirms()/close().
        self.batch_writes = batch_writes
        self._wbuf = _WriteBuffer()
        self._conn = None
        self._chan = None
        self._chan_ready = False
        self._generation = 0
        self._last_tick = 0.0
        self._declarations = {}          # key -> declaration tuple, replayed on reconnect
        self._consume_args = None        # (queue, prefetch) once consume() succeeded
        self._consumer_tag = None
        self._inbox = collections.deque()
        self._unacked = set()            # delivery tags of the current channel
        self._confirming = False
        self._seq = 0                    # publish sequence number on the current channel
        self._pending = collections.OrderedDict()   # seq -> (exchange, key, Message)
        self._resend = collections.deque()          # to (re)publish on the next channel
        self._nacked = []
        self._returned = 0
        self._tx_generation = None       # channel incarnation in transaction mode
        self._tx_posts = []              # encoded messages of the open transaction
        self._tx_dropped = False         # posts of a lost channel's transaction dropped
        self.tx_dropped = False          # ... by the last tx_commit() (see there)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f'<Broker {self.display}>'

    @property
    def unconfirmed(self):
        """Number of published messages not yet confirmed by the broker."""
        return len(self._pending) + len(self._resend)

    @property
    def generation(self):
        """Incarnation of the channel: it changes whenever the channel or the connection
        is lost; every delivery tag carries the one it came on."""
        return self._generation

    def is_current(self, delivery_tag):
        """True when a delivery (or its tag) came on the current channel incarnation: only
        then can it still be acknowledged (a tag without one counts as current)."""
        if isinstance(delivery_tag, Delivery):
            delivery_tag = delivery_tag.delivery_tag
        return getattr(delivery_tag, 'generation', self._generation) == self._generation

    def sibling(self, **changes):
        """A new, unconnected Broker to the same broker with the same settings (URL,
        password lookup, timeouts, backoff, stop requests, TLS), but for ``changes``."""
        settings = dict(
            password_lookup=self.password_lookup, heartbeat=self.heartbeat,
            connect_timeout=self.connect_timeout, logger=self.log, reconnect=self.reconnect,
            max_inflight=self.max_inflight, backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max, stop_event=self.stop_event,
            should_stop=self.should_stop, ssl_options=self.ssl_options,
            batch_writes=self.batch_writes)
        settings.update(changes)
        return Broker(self.url, **settings)

    # ------------------------------------------------------------------ declarations

    def declare_exchange(self, name, type='topic', durable=True):
        decl = ('exchange', name, type, durable)
        self._do(lambda: self._apply(decl), f"declare exchange '{name}'")
        self._declarations[('exchange', name)] = decl

    def exchange_exists(self, name):
        """True when exchange *name* exists, False when the broker says it does not (a
        passive declare: nothing is created). Any other refusal raises BrokerError (403:
        BrokerAccessRefused). Like every refusal, a missing exchange costs the channel
        (deliveries not acknowledged yet come back): probe before consuming."""
        try:
            self._do(lambda: self._chan.exchange_declare(name, 'topic', passive=True),
                     f"check exchange '{name}'")
        except BrokerNotFound:
            return False
        return True

    def declare_queue(self, name, durable=True, expire_s=None, message_ttl_s=None,
                      passive=False, arguments=None, queue_type=None):
        """Declare a queue; returns (name, message_count, consumer_count). queue_type
        'quorum' declares a quorum queue (replicated over a cluster's nodes; always
        durable); None or 'classic' declares it as before (no x-queue-type)."""
        args = dict(arguments or {})
        if queue_type == 'quorum' and not passive:
            args['x-queue-type'] = 'quorum'
            durable = True
        if expire_s is not None:
            args['x-expires'] = int(round(float(expire_s) * 1000))
        if message_ttl_s is not None:
            args['x-message-ttl'] = int(round(float(message_ttl_s) * 1000))
        decl = ('queue', name, durable, args, passive)
        ok = self._do(lambda: self._apply(decl), f"declare queue '{name}'")
        if not passive:
            self._declarations[('queue', name)] = decl
        return (ok.queue, ok.message_count, ok.consumer_count)

    def bind(self, queue, exchange, key):
        decl = ('bind', queue, exchange, key)
        self._do(lambda: self._apply(decl),
                 f"bind queue '{queue}' to exchange '{exchange}' with key '{key}'")
        self._declarations[decl] = decl

    def bind_exchange(self, destination, source, key):
        """Bind exchange *destination* to *source* (node_shares' hash exchange)."""
        self._do(lambda: self._chan.exchange_bind(destination, source, key),
                 f"bind exchange '{destination}' to exchange '{source}' with key '{key}'")

    def unbind(self, queue, exchange, key):
        """Remove a binding (a reloaded configuration no longer has it); not replayed."""
        self._do(lambda: self._chan.queue_unbind(queue, exchange, key),
                 f"unbind queue '{queue}' from exchange '{exchange}' with key '{key}'")
        self._declarations.pop(('bind', queue, exchange, key), None)

    def delete_queue(self, name):
        def delete():
            if self._consume_args and self._consume_args[0] == name:
                self._chan.basic_cancel(self._consumer_tag)
                self._consume_args = None
            self._chan.queue_delete(name)
        self._do(delete, f"delete queue '{name}'")
        self._forget(lambda d: d[1] == name and d[0] in ('queue', 'bind'))

    def delete_exchange(self, name):
        self._do(lambda: self._chan.exchange_delete(name), f"delete exchange '{name}'")
        self._forget(lambda d: (d[0] == 'exchange' and d[1] == name)
                     or (d[0] == 'bind' and d[2] == name))

    def _forget(self, match):
        for key in [k for k, d in self._declarations.items() if match(d)]:
            del self._declarations[key]

    def _apply(self, decl):
        ch = self._chan
        if decl[0] == 'exchange':
            _, name, type_, durable = decl
            return ch.exchange_declare(name, type_, durable=durable, auto_delete=False)
        if decl[0] == 'queue':
            _, name, durable, args, passive = decl
            return ch.queue_declare(name, passive=passive, durable=durable, exclusive=False,
                                    auto_delete=False, arguments=args or None)
        _, queue, exchange, key = decl
        return ch.queue_bind(queue, exchange, key)

    # ------------------------------------------------------------------ publishing

    def publish(self, exchange, routing_key, body, headers, persistent=True,
                expiration=None):
        """Send one message without waiting for its confirm (see wait_confirms)."""
        if isinstance(body, str):
            body = body.encode('utf-8')
        content = (_publish_args(exchange, routing_key),
                   _content_header(len(body), headers, persistent, expiration), body)
        self._resend.append((exchange, routing_key, content))
        self._do(self._send_queued, f"publish to exchange '{exchange}'")

    def wait_confirms(self, timeout=30):
        """Block until every published message is confirmed.

        Raises BrokerError when messages were nacked/returned, when they stay unconfirmed
        for *timeout* seconds, or when the connection drops and ``reconnect`` is false.
        """
        deadline = time.monotonic() + timeout

        def wait():
            self._send_queued()
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(f'{self.display}: {self.unconfirmed} published '
                                      f'messages not confirmed after {timeout:g} s')
                self._drain(min(remaining, 1.0), burst=True)

        if self._pending or self._resend:
            try:
                self._do(wait, 'wait for publish confirms')
            except BrokerError:
                self._nacked, self._returned = [], 0    # this error reports them
                raise
        nacked, returned = self._nacked, self._returned
        self._nacked, self._returned = [], 0
        if nacked:
            raise BrokerError(f'{self.display}: broker refused (nack) {len(nacked)} published '
                              f"messages (first: exchange '{nacked[0][0]}' key "
                              f"'{nacked[0][1]}')")
        if returned:
            raise BrokerError(f'{self.display}: broker returned {returned} published messages')

    def _send_queued(self):
        """Send everything in the resend queue; throttle on the in-flight window."""
        ch = self._chan
        resend = self._resend
        if resend and not self._confirming:
            ch.confirm_select()
            self._confirming = True
        if resend:
            conn = self._conn
            if ch.connection is None or conn is None:
                raise amqp_exc.RecoverableConnectionError('connection already closed')
            channel, chunk = ch.channel_id, conn.frame_max - 8
            write, pending = self._wbuf.write, self._pending
            self._wbuf.active = self.batch_writes
            try:
                while resend:
                    item = resend[0]
                    write(_frames(channel, chunk, *item[2]))
                    conn.bytes_sent += 1        # what py-amqp's frame writer counts
                    resend.popleft()
                    self._seq += 1
                    pending[self._seq] = item
                    if len(pending) > self.max_inflight:
                        # window full: wait until half of it is confirmed (reading confirms
                        # in bursts lets the broker coalesce them into fewer frames)
                        while len(pending) > self.max_inflight // 2:
                            self._drain(1.0, burst=True)
            finally:
                self._wbuf.active = False
        if time.monotonic() - self._last_tick >= 1.0:
            self._drain(0)

    def _settle(self, tag, multiple):
        """Remove confirmed tags from the window; return the removed items."""
        pending = self._pending
        if not multiple:
            item = pending.pop(tag, None)
            return [item] if item is not None else []
        done = []
        while pending:
            first = next(iter(pending))
            if tag and first > tag:
                break
            done.append(pending.popitem(last=False)[1])
        return done

    def _on_nack(self, delivery_tag, multiple):
        for exchange, key, _ in self._settle(delivery_tag, multiple):
            self._nacked.append((exchange, key))
        self.log.warning('%s: broker refused (nack) published message(s) up to #%s',
                         self.display, delivery_tag)

    def _on_return(self, exc, exchange, routing_key, message):
        self._returned += 1

    # ------------------------------------------------------------------ transactions
    # For a consumer that posts on the channel it consumes from (winnow): the posts of a
    # batch and the acks of its messages committed together (tx.select, tx.commit). Such
    # a channel is never in confirm mode: publish() and wait_confirms() are not for it.

    def tx_select(self, delivery_tag=None):
        """Put the channel in transaction mode, once per channel incarnation (a new one
        starts with no publication: those of a lost channel were never committed).
        False, doing nothing, when ``delivery_tag`` (of the message being answered) came
        on a channel since lost: that message was never acknowledged and comes back."""
        generation = getattr(delivery_tag, 'generation', None)

        def select():
            if generation is not None and generation != self._generation:
                return False
            if self._tx_generation != self._generation:
                self._chan.tx_select()
                self._tx_generation = self._generation
                if self._tx_posts:      # the lost channel's transaction: never committed
                    self._tx_dropped = True
                self._tx_posts = []
            return True
        return self._do(select, 'select transaction mode')

    def tx_publish(self, exchange, routing_key, body, headers, persistent=True,
                   expiration=None):
        """Add a message to the transaction (after tx_select()); it is encoded now (as
        publish() encodes) and written by tx_commit(), just before the commit."""
        if isinstance(body, str):
            body = body.encode('utf-8')
        self._tx_posts.append((_publish_args(exchange, routing_key),
                               _content_header(len(body), headers, persistent, expiration),
                               body))

    def tx_commit(self, acks=()):
        """Write the transaction's messages and the acks of ``acks`` (deliveries or tags;
        those of a channel since lost are left out: _ack_frames), then commit them together.
        Nothing is committed when the channel was lost since tx_select() (the broker dropped
        it all); without a transaction on this channel the acks alone are sent. Raises
        BrokerError when the broker refuses (nothing committed: the batch comes back).
        Returns True once committed; False when the channel was lost before the commit
        left (nothing committed: the deliveries come back); None when it was lost after
        (the commit may have happened or not). ``tx_dropped`` then says whether posts made
        since the last commit went with a lost channel's transaction (never made: a post
        whose message does not come back from the queue must be made again)."""
        generation = self._tx_generation
        posts, self._tx_posts = self._tx_posts, []
        self.tx_dropped, self._tx_dropped = self._tx_dropped, False
        acks = [t.delivery_tag if isinstance(t, Delivery) else t for t in acks]
        acks = [(getattr(t, 'generation', None), int(t)) for t in acks]
        if generation is None or generation != self._generation:
            # no transaction on this channel: acks alone (the posts of a lost channel's
            # transaction went with it: sent now, outside one, they would be made twice)
            if posts:
                self.tx_dropped = True
            generation, posts = None, []
            if not acks:
                return True
        sent, start = [], self._generation

        def commit():
            if sent or self._generation != start:
                return None if sent else False  # lost meanwhile: the broker dropped it all
            ch, conn, wbuf = self._chan, self._conn, self._wbuf
            channel, chunk = ch.channel_id, conn.frame_max - 8
            tags = [t for g, t in acks if g in (None, self._generation)]
            frames, mine = _ack_frames(channel, self._unacked, tags)
            wbuf.active = True
            try:
                for content in posts:
                    wbuf.write(_frames(channel, chunk, *content))
                    conn.bytes_sent += 1            # what py-amqp's frame writer counts
                if mine:
                    wbuf.write(frames)
                    conn.bytes_sent += 1
                    self._unacked.difference_update(mine)
            finally:
                wbuf.active = False
            if generation is not None:
                sent.append(True)
                ch.tx_commit()
            return True
        try:
            return self._do(commit, 'commit the posts and acks of a batch')
        except BrokerStopped:
            raise
        except BrokerError:
            if sent and not (self._conn is not None and self._conn.connected):
                return None     # lost (reconnect off) after the commit left: in doubt
            raise

    # ------------------------------------------------------------------ consuming

    def consume(self, queue, prefetch=25):
        """Start consuming *queue* (explicit acks); re-established after reconnects."""
        self._do(lambda: self._start_consume(queue, prefetch), f"consume from queue '{queue}'")

    def _start_consume(self, queue, prefetch):
        # per consumer (node_shares' shards: each shard; quorum queues refuse global qos)
        self._chan.basic_qos(0, prefetch, False)
        # A consumer cancelled by the broker (queue deleted) raises ConsumerCancelled,
        # handled like a lost connection: reconnect, re-declare, re-consume.
        self.consumer_tags = {}         # queue -> tag (node_shares: one per shard queue)
        for q in (queue if isinstance(queue, tuple) else (queue,)):
            self._consumer_tag = self.consumer_tags[q] = self._chan.basic_consume(
                q, no_ack=False, callback=self._on_deliver)
        self._consume_args = (queue, prefetch)

    def get(self, timeout=None):
        """Next delivered message, or None after *timeout* seconds (or on stop request)."""
        if self._inbox:
            return self._inbox.popleft()
        if self._consume_args is None:
            raise RuntimeError('Broker.get() called before Broker.consume()')
        if timeout is not None and timeout <= 0:     # what has arrived already, no wait
            return self._do(lambda: self._drain_ready() or
                            (self._inbox.popleft() if self._inbox else None), 'receive')
        deadline = None if timeout is None else time.monotonic() + timeout

        def receive():
            while not self._inbox:
                if self._stopping():
                    return None
                step = 1.0
                if deadline is not None:
                    step = min(step, deadline - time.monotonic())
                    if step <= 0:
                        return None
                self._drain(step)
            return self._inbox.popleft()

        return self._do(receive, 'receive')

    def ack(self, delivery_tag):
        """Acknowledge a delivery (a Delivery or its tag); stale tags are ignored."""
        self._settle_delivery(delivery_tag, 'ack', lambda t: self._chan.basic_ack(t))

    def ack_many(self, delivery_tags):
        """Acknowledge several deliveries with one write: a single ``multiple`` ack when
        they are every unacknowledged delivery up to the highest of them (the usual case:
        a batch handled in order), else one ack frame each. Stale tags are ignored."""
        tags = []
        for t in delivery_tags:
            if isinstance(t, Delivery):
                t = t.delivery_tag
            if getattr(t, 'generation', self._generation) == self._generation:
                tags.append(int(t))
        if not tags:
            return
        if self._conn is None or not self._chan_ready:
            return       # nothing can be outstanding: the broker redelivers them

        def settle():
            frames, mine = _ack_frames(self._chan.channel_id, self._unacked, tags)
            if not mine:
                return
            self._wbuf.flush()
            self._conn.transport.write(frames)
            self._conn.bytes_sent += 1            # what py-amqp's frame writer counts
            self._unacked.difference_update(mine)

        self._do(settle, 'ack')

    def reject(self, delivery_tag, requeue=True):
        self._settle_delivery(delivery_tag, 'reject',
                              lambda t: self._chan.basic_reject(t, requeue))

    def _settle_delivery(self, delivery_tag, what, send):
        if isinstance(delivery_tag, Delivery):
            delivery_tag = delivery_tag.delivery_tag
        generation = getattr(delivery_tag, 'generation', self._generation)
        tag = int(delivery_tag)

        def settle():
            if generation != self._generation or tag not in self._unacked:
                self.log.debug('%s: %s of stale delivery tag %s ignored (the message will '
                               'be redelivered)', self.display, what, tag)
                return
            send(tag)
            self._unacked.discard(tag)

        if self._conn is None or not self._chan_ready:
            settle()       # logs and ignores: nothing can be outstanding
            return
        self._do(settle, what)

    def _on_deliver(self, msg):
        info = msg.delivery_info
        tag = DeliveryTag(info['delivery_tag'], self._generation)
        self._unacked.add(int(tag))
        raw = bytes(msg.body) if not isinstance(msg.body, str) else msg.body.encode('utf-8')
        props = dict(msg.properties)
        # a frame a peer wrote may hold anything: what is not text is marked, not raised
        headers, bad = amqpframes.headers_text(props.pop('application_headers', None) or {})
        bad = msg.__dict__.get('sarra_undecodable') or bad
        try:
            body = raw.decode('utf-8')
        except UnicodeDecodeError as e:
            body = raw.decode('utf-8', 'replace')
            bad = bad or f'body is not valid UTF-8 (byte {e.start})'
        self._inbox.append(Delivery(
            exchange=info.get('exchange', ''), routing_key=info.get('routing_key', ''),
            body=body, raw=raw, headers=headers, delivery_tag=tag,
            redelivered=bool(info.get('redelivered')), properties=props, undecodable=bad,
            consumer_tag=info.get('consumer_tag') or ''))
