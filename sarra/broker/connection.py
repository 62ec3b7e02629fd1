"""Connection machinery under sarra.broker.client.Broker: one AMQP connection + channel kept working.

:class:`BrokerConnection` connects (with exponential backoff retries interruptible by a stop
event/callable), runs every broker operation through ``_do()`` which recovers from a lost
connection (reconnect, replay the remembered declarations, re-consume, re-publish what was
unconfirmed), turns broker refusals into one-line :class:`BrokerError` texts (password
removed), drains incoming frames and sends heartbeats.  It is not used on its own: the
state it works on (declarations, consumer, confirm window, inbox) and the methods it calls
back (``_apply``, ``_start_consume``, ``_send_queued``, ``_settle``, ``_on_nack``,
``_on_return``) belong to :class:`sarra.broker.client.Broker`, which sets every attribute.
"""

import collections
import re
import select
import socket
import ssl
import time
import urllib.parse

import amqp
from amqp import exceptions as amqp_exc
from amqp import method_framing, spec
from amqp.transport import TCPTransport

from sarra.broker import frames as amqpframes

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


class BrokerNotFound(BrokerError):
    """404 NOT_FOUND: the exchange or queue named does not exist."""


class BrokerStopped(BrokerError):
    """A stop was requested while waiting to (re)connect."""


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


# ---------------------------------------------------------------------------- writes

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


# ---------------------------------------------------------------------------- reads

READ_CHUNK = 4096       # py-amqp slices its buffer per read: keep it small


def _buffer_reads(transport):
    """Let py-amqp's plain TCP transport read up to READ_CHUNK bytes per recv().

    It reads a frame with three recv() calls sized to what it still needs (header,
    payload, end octet); bytes beyond that stay in its own read buffer, so a burst of
    publisher confirms then costs one system call instead of three per frame."""
    sock = getattr(transport, 'sock', None)
    if isinstance(transport, TCPTransport) and sock is not None \
            and hasattr(transport, '_quick_recv') and hasattr(transport, '_read_buffer'):
        recv = sock.recv
        transport._quick_recv = lambda n: recv(n if n > READ_CHUNK else READ_CHUNK)


def _frame_buffered(transport):
    """True when a whole frame already sits in the transport's read buffer (reading it
    needs neither a wait nor a system call)."""
    buf = getattr(transport, '_read_buffer', None)
    return bool(buf) and len(buf) >= 8 and len(buf) >= 8 + int.from_bytes(buf[3:7], 'big')


# ---------------------------------------------------------------------------- connection

class BrokerConnection:
    """Connection lifecycle and failure recovery of a :class:`sarra.broker.client.Broker`."""

    _no_password = False    # True when neither the URL nor password_lookup gave one
    _node_index = 0         # the cluster node (parsed.nodes) connected to or tried next

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self):
        return self._conn is not None and bool(self._conn.connected)

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

    def flush(self):
        """Send frames collected by ``batch_writes`` now."""
        if self._wbuf.buf and self.connected:
            self._do(lambda: None, 'send')      # _do flushes the write buffer first

    def _frame_writer(self, connection, transport):
        self._wbuf.reset(transport)
        return method_framing.frame_writer(connection, self._wbuf)

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

    def _password(self, node=None):
        password = self.parsed.password
        if password is None and self.password_lookup is not None:
            password = self.password_lookup(self.url)
            if password is None and node is not None and self.parsed.others:
                # a cluster URL: credentials.conf may name each node on its own line
                vhost = urllib.parse.quote(node.vhost, safe='')
                password = self.password_lookup(f'{node.scheme}://{node.user}@'
                                                f'{node.hostport}/{vhost}')
        self._no_password = password is None and self.parsed.user != 'anonymous'
        if password is None:
            password = 'anonymous' if self.parsed.user == 'anonymous' else ''
        return password

    def _open(self):
        """Connect to a node of the broker: with several (``amqp://u@h1,h2/``), from the
        current one on, each in turn (failover); the first that answers is kept."""
        nodes = len(self.parsed.nodes)
        for tried in range(nodes):
            index = self._node_index
            try:
                return self._open_node(self.parsed.node(index))
            except _RetryableConnectFailure:
                if tried == nodes - 1:
                    raise
                self._node_index = (index + 1) % nodes
                self.log.warning('%s: node %s unreachable, trying %s', self.display,
                                 self.parsed.node(self._node_index - 1).hostport,
                                 self.parsed.node(self._node_index).hostport)

    def _open_node(self, u):
        ssl_opt = False
        if u.scheme == 'amqps':
            ssl_opt = self.ssl_options or {'context': {'check_hostname': True},
                                           'server_hostname': u.host}
        conn = amqp.Connection(host=u.hostport, userid=u.user, password=self._password(u),
                               virtual_host=u.vhost, login_method='PLAIN', ssl=ssl_opt,
                               connect_timeout=self.connect_timeout,
                               heartbeat=self.heartbeat or 0,
                               frame_writer=self._frame_writer,
                               frame_handler=amqpframes.frame_handler)
        try:
            conn.connect()
        except amqp_exc.AccessRefused:
            self._discard(conn)
            if self._no_password:
                from sarra.config.credentials import no_password_text
                raise BrokerError('login refused: ' + no_password_text(self.display)) from None
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
            if u.hostport != self.parsed.hostport or self.parsed.others:
                text = f'cannot connect to {self.display} (node {u.hostport}): {_reason(e)}'
            if isinstance(e, (ssl.SSLCertVerificationError, ValueError)):
                raise BrokerError(text) from None        # retrying would not help
            raise _RetryableConnectFailure(text) from None
        self._conn = conn
        _buffer_reads(conn.transport)
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
        if self.parsed.others:    # a node of a cluster died: reconnect to the next one
            self._node_index = (self._node_index + 1) % len(self.parsed.nodes)
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
            gone = [i for i in self._resend if bad is None or i[0] == bad]
            self._resend = collections.deque(keep)
            # refused, like a nack: the error is raised to whatever call noticed it, and the
            # next wait_confirms() fails too, so that no publisher takes them for confirmed
            if gone:
                self._nacked.extend((i[0], i[1]) for i in gone)
            dropped = f'; {len(gone)} unconfirmed messages dropped'
            what = 'publish'
        code = exc.reply_code
        if code == 403:
            return BrokerAccessRefused(f'{self.display}: access refused to {obj or what} '
                                       f'({text}){dropped}')
        if code == 404:
            return BrokerNotFound(f'{self.display}: {obj or what} not found ({text}){dropped}')
        return BrokerError(f'{self.display}: {what}: {text}{dropped}')

    def _drain(self, timeout, burst=False):
        """Process incoming frames for up to *timeout* s (one method at most; with
        ``burst``, then every frame already received whole: publishers waiting for
        confirms take a burst of them in one call, consumers still get one delivery)."""
        conn = self._conn
        if conn is None or not conn.connected:
            raise amqp_exc.RecoverableConnectionError('connection already closed')
        self._wbuf.flush()
        try:
            conn.drain_events(timeout=timeout)
            if burst:
                transport = conn.transport
                while self._conn is conn and _frame_buffered(transport):
                    conn.blocking_read(None)     # in memory already: no wait, no syscall
        except socket.timeout:
            pass
        now = time.monotonic()
        if now - self._last_tick >= 1.0:
            self._last_tick = now
            if conn.heartbeat and self._conn is conn:
                conn.heartbeat_tick()

    def _drain_ready(self):
        """Process the frames that are here already, without waiting, until one delivery
        is whole: those in the transport's read buffer, then what the socket holds (one
        recv of up to READ_CHUNK bytes; a frame cut short stays buffered for the next
        read). Lets a consumer take every delivery that arrived as one batch."""
        conn = self._conn
        if conn is None or not conn.connected:
            raise amqp_exc.RecoverableConnectionError('connection already closed')
        transport = conn.transport
        sock = getattr(transport, 'sock', None)
        inbox = self._inbox
        try:
            while not inbox and self._conn is conn:
                if _frame_buffered(transport):
                    conn.blocking_read(None)    # in memory already: no wait, no syscall
                elif sock is not None and select.select([sock], [], [], 0)[0]:
                    conn.blocking_read(0.001)   # readable: a recv that does not wait
                else:
                    return
        except socket.timeout:
            pass

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
