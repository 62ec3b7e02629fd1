"""AMQP 0-9-1 broker access (RabbitMQ) on top of py-amqp; knows nothing of v02 or files.

One Broker = one connection + one channel: declarations remembered and replayed after a
reconnect; publishing with pipelined publisher confirms (at most ``max_inflight``
unconfirmed, re-published after a reconnect: duplicates possible, loss not); consuming with
prefetch and explicit acks (stale delivery tags from an old channel are ignored);
reconnection with exponential backoff interruptible by a stop event/callable.
Not thread-safe. Passwords never appear in messages or logs (see redact()).
"""

import collections
import dataclasses
import logging
import re
import socket
import ssl
import time
import urllib.parse

import amqp
from amqp import exceptions as amqp_exc
from amqp import method_framing, spec

__all__ = ['BrokerError', 'BrokerAccessRefused', 'BrokerStopped', 'BrokerURL', 'Delivery',
           'DeliveryTag', 'Broker', 'parse_url', 'redact']

DEFAULT_PORTS = {'amqp': 5672, 'amqps': 5671}

# Errors meaning "the connection is gone" (socket errors, connection.close from the
# server, heartbeat loss, consumer cancelled by the server, use of a collected connection).
_CONNECTION_ERRORS = (OSError, EOFError, amqp_exc.ConnectionError,
                      amqp_exc.RecoverableConnectionError)
_NAMED_OBJECT = re.compile(r"\b(exchange|queue) '((?:[^'\\]|\\.)*)'")


class BrokerError(Exception):
    """Broker unreachable, authentication failure or broker-side refusal (exit code 3)."""

    exit_code = 3


class BrokerAccessRefused(BrokerError):
    """403 ACCESS_REFUSED on an exchange or queue (broker permissions)."""


class BrokerStopped(BrokerError):
    """A stop was requested while waiting to (re)connect."""


# ---------------------------------------------------------------------------- URLs

@dataclasses.dataclass(frozen=True)
class BrokerURL:
    scheme: str
    user: str
    password: str = dataclasses.field(repr=False)  # None when the URL has none
    host: str
    port: int
    vhost: str

    @property
    def hostport(self):
        """``host:port`` as py-amqp wants it (IPv6 literals in brackets)."""
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{host}:{self.port}'


def redact(url):
    """Return *url* with any password removed (``amqp://u:p@h/`` -> ``amqp://u@h/``)."""
    if not isinstance(url, str):
        url = str(url)
    try:
        parts = urllib.parse.urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return re.sub(r'//([^/@:]*):[^/]*@', r'//\1@', url)
    if not has_password:
        return url
    userinfo, _, hostpart = parts.netloc.rpartition('@')
    user = userinfo.partition(':')[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f'{user}@{hostpart}'))


def _display(url):
    """Password-free form of *url* for messages, with at least a '/' path."""
    text = redact(url)
    return text + '/' if re.fullmatch(r'[a-zA-Z][\w+.-]*://[^/?#]*', text) else text


def parse_url(url):
    """Parse an ``amqp://`` or ``amqps://`` URL into a :class:`BrokerURL`.

    No user means ``anonymous``/``anonymous``; a missing password is ``None`` (to be
    looked up in credentials.conf). Raises ValueError (one line, password removed).
    """
    shown = _display(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f'{shown}: invalid broker URL ({e})') from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f'{shown}: broker URL must start with amqp:// or amqps://')
    if not parts.hostname:
        raise ValueError(f'{shown}: broker URL has no host name')
    unquote = urllib.parse.unquote
    user = unquote(parts.username) if parts.username else ''
    password = unquote(parts.password) if parts.password is not None else None
    if not user:
        user = 'anonymous'
        if password is None:
            password = 'anonymous'
    path = parts.path[1:] if parts.path.startswith('/') else parts.path
    vhost = unquote(path) or '/'
    return BrokerURL(scheme, user, password, parts.hostname, port or DEFAULT_PORTS[scheme],
                     vhost)


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


def _as_text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode('utf-8', 'replace')
    if value is None:
        return ''
    return str(value)


def _reason(exc):
    """Short one-line reason text of an exception."""
    if isinstance(exc, socket.timeout):
        return 'timed out'
    if isinstance(exc, amqp_exc.ConsumerCancelled):
        return 'consumer cancelled by the broker'
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().replace('\n', ' ')
    return text or type(exc).__name__


class _RetryableConnectFailure(Exception):
    """One connection attempt failed in a way worth retrying."""


# ---------------------------------------------------------------------------- broker

class _WriteBuffer:
    """Stands in for the transport in py-amqp's frame writer: passes writes through, or
    (while ``active``) collects them and sends them ``limit`` bytes at a time."""

    def __init__(self, limit=8192):
        self.limit, self.transport, self.active = limit, None, False
        self.buf = bytearray()

    def reset(self, transport=None):
        self.transport, self.active = transport, False
        del self.buf[:]

    def write(self, data):
        if not self.active:
            self.flush()
            self.transport.write(data)
            return
        self.buf += data            # copies: py-amqp reuses the memory it hands us
        if len(self.buf) >= self.limit:
            self.flush()

    def flush(self):
        if self.buf:
            data = bytes(self.buf)
            del self.buf[:]
            self.transport.write(data)


class Broker:
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

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f'<Broker {self.display}>'

    @property
    def connected(self):
        return self._conn is not None and bool(self._conn.connected)

    @property
    def unconfirmed(self):
        """Number of published messages not yet confirmed by the broker."""
        return len(self._pending) + len(self._resend)

    def connect(self):
        """Connect now (with backoff retries when ``reconnect`` is true)."""
        self._ensure()
        return self

    def close(self):
        try:
            self._wbuf.flush()
        except _CONNECTION_ERRORS:
            pass
        conn, self._conn = self._conn, None
        self._chan, self._chan_ready = None, False
        if self.unconfirmed:
            self.log.warning('%s: closing with %d published messages unconfirmed',
                             self.display, self.unconfirmed)
        try:
            if conn is not None:
                if conn.connected:       # do not wait forever for close-ok from a dead peer
                    conn.sock.settimeout(self.connect_timeout)
                conn.close()
        except Exception:                          # noqa: BLE001 - already broken
            self._discard(conn)
        self._reset_channel_state()

    def tick(self):
        """Read pending frames and send heartbeats; call it while busy elsewhere."""
        if self.connected:
            self._do(lambda: self._drain(0), 'heartbeat')

    # ------------------------------------------------------------------ declarations

    def declare_exchange(self, name, type='topic', durable=True):
        decl = ('exchange', name, type, durable)
        self._do(lambda: self._apply(decl), f"declare exchange '{name}'")
        self._declarations[('exchange', name)] = decl

    def declare_queue(self, name, durable=True, expire_s=None, message_ttl_s=None,
                      passive=False, arguments=None):
        """Declare a queue; returns (name, message_count, consumer_count)."""
        args = dict(arguments or {})
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
        props = {'content_type': 'text/plain', 'content_encoding': 'utf-8',
                 'application_headers': {str(k): _as_text(v)
                                         for k, v in (headers or {}).items()}}
        if persistent:
            props['delivery_mode'] = 2
        if expiration is not None:
            props['expiration'] = str(expiration)
        self._resend.append((exchange, routing_key, amqp.Message(body, **props)))
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
                self._drain(min(remaining, 1.0))

        if self._pending or self._resend:
            self._do(wait, 'wait for publish confirms')
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
        if self._resend and not self._confirming:
            ch.confirm_select()
            self._confirming = True
        self._wbuf.active = self.batch_writes
        try:
            while self._resend:
                exchange, key, msg = item = self._resend[0]
                ch.send_method(spec.Basic.Publish, 'Bssbb', (0, exchange, key, False, False),
                               msg)
                self._resend.popleft()
                self._seq += 1
                self._pending[self._seq] = item
                if len(self._pending) > self.max_inflight:
                    # window full: wait until half of it is confirmed (reading confirms in
                    # bursts lets the broker coalesce them into fewer frames)
                    while len(self._pending) > self.max_inflight // 2:
                        self._drain(1.0)
        finally:
            self._wbuf.active = False
        now = time.monotonic()
        if now - self._last_tick >= 1.0:
            self._drain(0)

    def _frame_writer(self, connection, transport):
        self._wbuf.reset(transport)
        return method_framing.frame_writer(connection, self._wbuf)

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

    # ------------------------------------------------------------------ consuming

    def consume(self, queue, prefetch=25):
        """Start consuming *queue* (explicit acks); re-established after reconnects."""
        self._do(lambda: self._start_consume(queue, prefetch), f"consume from queue '{queue}'")

    def _start_consume(self, queue, prefetch):
        self._chan.basic_qos(0, prefetch, False)
        # A consumer cancelled by the broker (queue deleted) raises ConsumerCancelled,
        # handled like a lost connection: reconnect, re-declare, re-consume.
        self._consumer_tag = self._chan.basic_consume(queue, no_ack=False,
                                                      callback=self._on_deliver)
        self._consume_args = (queue, prefetch)

    def get(self, timeout=None):
        """Next delivered message, or None after *timeout* seconds (or on stop request)."""
        if self._inbox:
            return self._inbox.popleft()
        if self._consume_args is None:
            raise RuntimeError('Broker.get() called before Broker.consume()')
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
        headers = props.pop('application_headers', None) or {}
        self._inbox.append(Delivery(
            exchange=info.get('exchange', ''), routing_key=info.get('routing_key', ''),
            body=raw.decode('utf-8', 'replace'), raw=raw,
            headers={str(k): _as_text(v) for k, v in headers.items()},
            delivery_tag=tag, redelivered=bool(info.get('redelivered')), properties=props))

    # ------------------------------------------------------------------ machinery

    def _do(self, operation, what):
        """Run *operation* on a working channel, recovering from broker failures."""
        delay = 0.0
        while True:
            try:
                self._ensure()
                if operation != self._send_queued:
                    self._wbuf.flush()
                return operation()
            except amqp_exc.ChannelError as e:
                if self._conn is not None and self._conn.connected:
                    raise self._channel_failed(e, what) from None
                lost_error = e
            except _CONNECTION_ERRORS as e:
                lost_error = e
            lost = self.unconfirmed
            self._connection_lost(lost_error)
            if not self.reconnect:
                raise self._lost_error(lost_error, lost) from None
            # A connection that dies again right after reconnecting must not spin.
            if delay and self._sleep(delay):
                raise BrokerStopped(f'{self.display}: stopped while waiting to reconnect')
            delay = min(max(delay * 2, self.backoff_initial), self.backoff_max)

    def _lost_error(self, exc, lost=None):
        lost = self.unconfirmed if lost is None else lost
        extra = f'; {lost} published messages unconfirmed' if lost else ''
        return BrokerError(f'{self.display}: connection lost ({_reason(exc)}){extra}')

    def _ensure(self):
        if self._conn is None:
            self._connect_with_backoff()
        elif not self._chan_ready:
            self._setup_channel(replay=False)

    def _connect_with_backoff(self):
        delay, attempt = self.backoff_initial, 0
        while True:
            try:
                self._open()
                if attempt:
                    self.log.info('connected to %s after %d failed attempts',
                                  self.display, attempt)
                return
            except _RetryableConnectFailure as e:
                if not self.reconnect:
                    raise BrokerError(str(e)) from None
                attempt += 1
                self.log.warning('%s; retrying in %g s (attempt %d)', e, delay, attempt)
                if self._sleep(delay):
                    raise BrokerStopped(f'{self.display}: stopped while waiting to '
                                        f'reconnect') from None
                delay = min(delay * 2, self.backoff_max)

    def _password(self):
        password = self.parsed.password
        if password is None and self.password_lookup is not None:
            password = self.password_lookup(self.url)
        if password is None:
            password = 'anonymous' if self.parsed.user == 'anonymous' else ''
        return password

    def _open(self):
        u = self.parsed
        ssl_opt = False
        if u.scheme == 'amqps':
            ssl_opt = self.ssl_options or {'context': {'check_hostname': True},
                                           'server_hostname': u.host}
        conn = amqp.Connection(host=u.hostport, userid=u.user, password=self._password(),
                               virtual_host=u.vhost, login_method='PLAIN', ssl=ssl_opt,
                               connect_timeout=self.connect_timeout,
                               heartbeat=self.heartbeat or 0,
                               frame_writer=self._frame_writer)
        try:
            conn.connect()
        except amqp_exc.AccessRefused:
            self._discard(conn)
            raise BrokerError(f'{self.display}: login refused (check user and password in '
                              f'credentials.conf)') from None
        except (amqp_exc.NotAllowed, amqp_exc.InvalidPath) as e:
            self._discard(conn)
            raise BrokerError(f"{self.display}: access to vhost '{u.vhost}' refused "
                              f"({_reason(e)})") from None
        except (ssl.SSLCertVerificationError, ValueError, *_CONNECTION_ERRORS,
                amqp_exc.AMQPError) as e:
            self._discard(conn)
            text = f'cannot connect to {self.display}: {_reason(e)}'
            if isinstance(e, (ssl.SSLCertVerificationError, ValueError)):
                raise BrokerError(text) from None        # retrying would not help
            raise _RetryableConnectFailure(text) from None
        self._conn = conn
        self._last_tick = time.monotonic()
        try:
            self._setup_channel(replay=True)
        except _CONNECTION_ERRORS as e:
            self._connection_lost(e, quiet=True)
            raise _RetryableConnectFailure(
                f'cannot connect to {self.display}: {_reason(e)}') from None

    def _setup_channel(self, replay):
        ch = self._chan
        if ch is None or not ch.is_open or ch.connection is None:
            ch = self._conn.channel()
            ch.auto_decode = False
            ch.events['basic_ack'].add(self._settle)
            ch.events['basic_nack'].add(self._on_nack)
            ch.events['basic_return'].add(self._on_return)
            self._chan = ch
        if replay:
            for decl in list(self._declarations.values()):
                self._apply(decl)
        if self._consume_args:
            self._start_consume(*self._consume_args)
        self._chan_ready = True
        if self._resend:
            self._send_queued()

    def _reset_channel_state(self):
        """Forget per-channel state; unconfirmed messages go back to the send queue."""
        self._generation += 1
        self._chan_ready = False
        self._confirming = False
        self._seq = 0
        self._inbox.clear()
        self._unacked.clear()
        if self._pending:
            self._resend.extendleft(reversed(list(self._pending.values())))
            self._pending.clear()

    def _connection_lost(self, exc, quiet=False):
        self._wbuf.reset()        # unsent frames: their messages are re-published anyway
        conn, self._conn, self._chan = self._conn, None, None
        self._discard(conn)
        self._reset_channel_state()
        if not quiet:
            self.log.warning('%s: connection lost (%s)%s', self.display, _reason(exc),
                             '; reconnecting' if self.reconnect else '')

    @staticmethod
    def _discard(conn):
        if conn is None:
            return
        try:
            conn.collect()
        except Exception:                          # noqa: BLE001 - best effort
            pass

    def _channel_failed(self, exc, what):
        """The broker closed the channel (py-amqp reopened it): build the error to raise."""
        self._reset_channel_state()
        text = exc.reply_text or str(exc)
        found = _NAMED_OBJECT.search(text)
        obj = f"{found.group(1)} '{found.group(2)}'" if found else None
        dropped = ''
        if exc.method_sig == spec.Basic.Publish:
            # Asynchronous publish failure: drop what went to the bad exchange.
            bad = found.group(2) if found and found.group(1) == 'exchange' else None
            keep = [i for i in self._resend if bad is not None and i[0] != bad]
            n = len(self._resend) - len(keep)
            self._resend = collections.deque(keep)
            dropped = f'; {n} unconfirmed messages dropped'
            what = 'publish'
        code = exc.reply_code
        if code == 403:
            return BrokerAccessRefused(f'{self.display}: access refused to {obj or what} '
                                       f'({text}){dropped}')
        if code == 404:
            return BrokerError(f'{self.display}: {obj or what} not found ({text}){dropped}')
        return BrokerError(f'{self.display}: {what}: {text}{dropped}')

    def _drain(self, timeout):
        """Process incoming frames for up to *timeout* s (one method at most)."""
        conn = self._conn
        if conn is None or not conn.connected:
            raise amqp_exc.RecoverableConnectionError('connection already closed')
        self._wbuf.flush()
        try:
            conn.drain_events(timeout=timeout)
        except socket.timeout:
            pass
        now = time.monotonic()
        if now - self._last_tick >= 1.0:
            self._last_tick = now
            if conn.heartbeat and self._conn is conn:
                conn.heartbeat_tick()

    def _stopping(self):
        if self.stop_event is not None and self.stop_event.is_set():
            return True
        return bool(self.should_stop is not None and self.should_stop())

    def _sleep(self, seconds):
        """Sleep; return True at once if a stop is requested."""
        end = time.monotonic() + seconds
        while not self._stopping():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self.stop_event is not None:
                self.stop_event.wait(min(left, 0.5))
            else:
                time.sleep(min(left, 0.2))
        return True
