"""Reading AMQP frames written by a peer that may be hostile: no frame can kill a consumer.

py-amqp decodes a delivery strictly: a routing key, exchange, content_type (or any other
short-string property) that is not valid UTF-8, a header table nested deeper than Python's
recursion limit, a timestamp out of range or an unknown table type raise out of
``drain_events`` while the frame is read, before anyone holds the delivery tag.  The
consumer then dies, is restarted, receives the same message and dies again.

:func:`frame_handler` is handed to ``amqp.Connection(frame_handler=...)`` in place of
py-amqp's own (same contract: it is called with each ``(type, channel, payload)`` frame and
returns True once a method was dispatched).  It assembles methods and contents as py-amqp
does, but a method whose strings are not UTF-8 is passed on with those strings escaped
(``\\xff``), a content header that py-amqp cannot decode is decoded leniently here, and a
body larger than ``max_body`` is counted and dropped instead of kept in memory.  The
delivery still reaches the consumer with its delivery tag, marked: ``msg.sarra_undecodable``
is the one-line reason, and the consumer acknowledges and drops it with one log line.

:func:`headers_text` turns a decoded header table into ``{str: str}`` and says what in it
was not text (a value that is not UTF-8, a table nested too deep).
"""

import struct
from collections import defaultdict
from datetime import datetime, timezone
from struct import unpack_from

import amqp
from amqp import spec
from amqp.exceptions import AMQPError, FrameSyntaxError, UnexpectedFrame
from amqp.serialization import dumps, loads

MAX_BODY = 1 << 20          # no v02 post or report comes near: larger bodies are dropped
MAX_DEPTH = 16              # header tables nested deeper than this are refused

_CONTENT_METHODS = frozenset((spec.Basic.Deliver, spec.Basic.Return, spec.Basic.GetOk))
# argument formats of the methods a broker sends on a channel (py-amqp's table; the
# content methods' are fixed by AMQP 0-9-1)
_METHOD_ARGS = {sig: m.args for sig, m in getattr(amqp.Channel, '_METHODS', {}).items()
                if getattr(m, 'args', None)}
_METHOD_ARGS.update({spec.Basic.Deliver: 'sLbss', spec.Basic.Return: 'Bsss',
                     spec.Basic.GetOk: 'Lbssl'})
_NAMES = {spec.Basic.Deliver: ('consumer tag', 'delivery tag', 'redelivered', 'exchange',
                               'routing key'),
          spec.Basic.Return: ('reply code', 'reply text', 'exchange', 'routing key'),
          spec.Basic.GetOk: ('delivery tag', 'redelivered', 'exchange', 'routing key',
                             'message count')}
# what py-amqp's content header decoding raises on hostile input (OSError and
# OverflowError: datetime.fromtimestamp of a timestamp out of range)
_DECODE_ERRORS = (UnicodeDecodeError, AMQPError, struct.error, RecursionError, ValueError,
                  OverflowError, OSError, IndexError, KeyError, TypeError)


class Undecodable(ValueError):
    """Raised by consumers for a delivery marked undecodable (its text is the reason)."""

    def __str__(self):
        return 'undecodable AMQP frame: ' + super().__str__()


class _Bad(Exception):
    """Leniently decoded input that cannot be decoded further."""


def _text(raw, what):
    """(text, problem): *raw* decoded as UTF-8, or with the bad bytes escaped."""
    raw = bytes(raw)
    try:
        return raw.decode('utf-8'), ''
    except UnicodeDecodeError:
        shown = repr(raw[:60])[1:] + ('...' if len(raw) > 60 else '')   # every byte shown
        return raw.decode('utf-8', 'backslashreplace'), f'{what} {shown} is not valid UTF-8'


def _printable(name):
    """A header name as it may appear in a log line (control characters escaped)."""
    return name[:60] if name.isprintable() else repr(name[:60])[1:-1]


def _short(text):
    """*text* cut to at most 255 bytes of UTF-8 (an AMQP short string)."""
    raw = text.encode('utf-8')
    return text if len(raw) <= 255 else raw[:255].decode('utf-8', 'ignore')


# ---------------------------------------------------------------------------- methods

def clean_method(method_sig, payload):
    """(payload, problem): a method frame's payload whose arguments py-amqp can decode.

    Unchanged when it decodes; else its strings are escaped (and cut to 255 bytes) and
    ``problem`` names the first one that was not UTF-8."""
    fmt = _METHOD_ARGS.get(method_sig)
    if not fmt or ('s' not in fmt and 'S' not in fmt):
        return payload, ''
    try:
        loads(fmt, payload, 4)
        return payload, ''
    except UnicodeDecodeError:
        pass
    names = _NAMES.get(method_sig, ())
    values, problem, offset, bits, nbits = [], '', 4, 0, 0
    for i, p in enumerate(fmt):
        what = names[i] if i < len(names) else f'argument {i + 1}'
        if p == 'b':
            if not nbits:
                bits, nbits, offset = payload[offset], 8, offset + 1
            values.append(bool(bits & 1))
            bits, nbits = bits >> 1, nbits - 1
            continue
        nbits = 0
        if p in 'sS':
            size = 1 if p == 's' else 4
            n = int.from_bytes(payload[offset:offset + size], 'big')
            offset += size
            val, bad = _text(payload[offset:offset + n], what)
            offset += n
            problem = problem or bad
            values.append(_short(val) if p == 's' else val)
        else:
            (val,), offset = loads(p, payload, offset)
            values.append(val)
    return bytes(payload[:4]) + dumps(fmt, values), problem


# ---------------------------------------------------------------------------- tables

def _read_value(buf, offset, depth, where):
    t = chr(buf[offset])
    offset += 1
    if t in 'Sx':
        n, = unpack_from('>I', buf, offset)
        offset += 4
        raw = bytes(buf[offset:offset + n])
        if t == 'x':
            return raw, offset + n
        val, bad = _text(raw, f'header {where}')
        if bad:
            raise _Bad(bad)
        return val, offset + n
    if t in 'FA':
        if depth >= MAX_DEPTH:
            raise _Bad(f'header {where} nested more than {MAX_DEPTH} tables deep')
        n, = unpack_from('>I', buf, offset)
        offset += 4
        end = offset + n
        if t == 'F':
            return _read_table(buf, offset, end, depth + 1, where), end
        out = []
        while offset < end:
            val, offset = _read_value(buf, offset, depth + 1, where)
            out.append(val)
        return out, end
    fixed = {'b': '>b', 'B': '>B', 's': '>h', 'U': '>h', 'u': '>H', 'I': '>i', 'i': '>I',
             'L': '>q', 'l': '>q', 'f': '>f', 'd': '>d', 't': '>B', 'T': '>Q'}
    if t in fixed:
        val, = unpack_from(fixed[t], buf, offset)
        offset += struct.calcsize(fixed[t])
        if t == 't':
            val = bool(val)
        elif t == 'T':
            try:
                val = datetime.fromtimestamp(val, tz=timezone.utc).replace(tzinfo=None)
            except (OverflowError, ValueError, OSError):
                raise _Bad(f'header {where}: timestamp {val} out of range') from None
        return val, offset
    if t == 'D':
        scale, n = unpack_from('>Bi', buf, offset)
        return f'{n}e-{scale}', offset + 5
    if t == 'V':
        return None, offset
    raise _Bad(f'header {where}: unknown field type {t!r}')


def _read_table(buf, offset, end, depth, where=''):
    out = {}
    while offset < end:
        n = buf[offset]
        key, bad = _text(buf[offset + 1:offset + 1 + n], 'header name')
        if bad:
            raise _Bad(bad)
        offset += 1 + n
        name = _printable(key)
        out[key], offset = _read_value(buf, offset, depth,
                                       f'{where}.{name}'[:60] if where else name)
    return out


def lenient_properties(buf, offset):
    """(properties, problem): a basic content header's properties decoded as far as they
    can be; ``problem`` says what could not be (empty when nothing)."""
    props, problem = {}, ''
    try:
        flags, = unpack_from('>H', buf, offset)
        offset += 2
        for i, (name, kind) in enumerate(amqp.Message.PROPERTIES):
            if not flags & (0x8000 >> i):
                continue
            if kind == 's':
                n = buf[offset]
                val, bad = _text(buf[offset + 1:offset + 1 + n], name)
                offset += 1 + n
                props[name] = val
                problem = problem or bad
            elif kind == 'F':
                n, = unpack_from('>I', buf, offset)
                props[name] = _read_table(buf, offset + 4, offset + 4 + n, 0)
                offset += 4 + n
            elif kind == 'o':
                props[name] = buf[offset]
                offset += 1
            else:
                props[name], = unpack_from('>Q', buf, offset)
                offset += 8
    except _Bad as e:
        problem = problem or str(e)
    except (struct.error, IndexError):
        problem = problem or 'content header truncated'
    return props, problem


# ---------------------------------------------------------------------------- headers

def _flat(value, depth, where):
    """(text, problem) of a decoded header value that is not a str."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _text(value, f'header {where}')
    if value is None:
        return '', ''
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return str(value), ''
    if depth >= MAX_DEPTH:
        return '...', f'header {where} nested more than {MAX_DEPTH} tables deep'
    parts, problem = [], ''
    for k, v in items:
        text, bad = (repr(v), '') if isinstance(v, str) else _flat(v, depth + 1, where)
        problem = problem or bad
        parts.append(f'{k!r}: {text}' if isinstance(value, dict) else text)
    text = ', '.join(parts)
    return ('{%s}' if isinstance(value, dict) else '[%s]') % text, problem


def headers_text(headers):
    """({name: text}, problem) of a decoded header table: every name and value a str;
    ``problem`` names the first that was not text (not UTF-8, nested too deep)."""
    out, problem = {}, ''
    for k, v in headers.items():
        if type(k) is not str:
            k, bad = _flat(k, 0, 'name')
            problem = problem or bad
        if type(v) is not str:
            v, bad = _flat(v, 0, _printable(k))
            problem = problem or bad
        out[k] = v
    return out, problem


# ---------------------------------------------------------------------------- frames

def _mark(msg, problem):
    if problem and not msg.__dict__.get('sarra_undecodable'):
        msg.sarra_undecodable = problem


def _read_header(msg, buf, max_body):
    try:
        msg.inbound_header(buf)
    except _DECODE_ERRORS as e:     # py-amqp's strict decoding: decoded here instead
        if len(buf) < 14:           # no body size: the broker's framing itself is broken
            raise FrameSyntaxError(f'content header of {len(buf)} bytes') from None
        msg.body_size, = unpack_from('>Q', buf, 4)
        msg.properties, problem = lenient_properties(buf, 12)
        msg.ready = not msg.body_size
        _mark(msg, problem or f'content header: {type(e).__name__}: {e}'[:200])
    if msg.body_size > max_body:
        _mark(msg, f'body of {msg.body_size} bytes, more than {max_body} (dropped unread)')
        msg.sarra_skip = True


def frame_handler(connection, callback, max_body=MAX_BODY):
    """py-amqp's frame handler contract (see the module docstring)."""
    expected = defaultdict(lambda: 1)
    partial = {}
    Message, content_methods = amqp.Message, _CONTENT_METHODS

    def on_frame(frame):
        frame_type, channel, buf = frame
        connection.bytes_recv += 1
        if frame_type not in (expected[channel], 8):
            raise UnexpectedFrame(f'Received frame {frame_type} while expecting type: '
                                  f'{expected[channel]}')
        if frame_type == 1:
            method_sig = unpack_from('>HH', buf, 0)
            problem = ''
            if not buf.isascii():
                buf, problem = clean_method(method_sig, buf)
            if method_sig in content_methods:
                msg = Message(frame_method=method_sig, frame_args=buf)
                if problem:
                    _mark(msg, problem)
                partial[channel] = msg
                expected[channel] = 2
                return False
            callback(channel, method_sig, buf, None)
            return True
        if frame_type == 2:
            msg = partial[channel]
            _read_header(msg, buf, max_body)
        elif frame_type == 3:
            msg = partial[channel]
            if msg.__dict__.get('sarra_skip'):
                msg.body_received += len(buf)
                if msg.body_received >= msg.body_size:
                    msg.body, msg.ready = b'', True
            else:
                msg.inbound_body(buf)
        else:
            return False            # heartbeat
        if not msg.ready:
            expected[channel] = 3
            return False
        expected[channel] = 1
        partial.pop(channel, None)
        callback(channel, msg.frame_method, msg.frame_args, msg)
        return True

    return on_frame
