"""The private internals of py-amqp, http.client and paramiko that sarra relies on are still there.

setup.py pins the major versions of py-amqp and paramiko; this test says which hook is gone
(and which sarra module uses it) when an upgrade of a library, or of Python for http.client,
removes or changes one. Each row: (what, where sarra uses it, check returning None or a
problem)."""

import http.client
import inspect
import io
import re
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _params(func):
    return list(inspect.signature(func).parameters)


# ------------------------------------------------------------------ py-amqp

def _amqp_connection_kwargs():
    import amqp
    params = _params(amqp.Connection.__init__)
    missing = [p for p in ("frame_handler", "frame_writer") if p not in params]
    return missing and "amqp.Connection() takes no %s argument" % ", ".join(missing)


def _amqp_frame_writer():
    from amqp import method_framing
    params = _params(method_framing.frame_writer)
    if params[:2] != ["connection", "transport"]:
        return "method_framing.frame_writer(connection, transport, ...) is now %s" % params


def _amqp_frame_handler():
    import amqp
    from amqp import method_framing
    params = _params(method_framing.frame_handler)
    if params[:2] != ["connection", "callback"]:
        return "method_framing.frame_handler(connection, callback, ...) is now %s" % params
    src = inspect.getsource(amqp.Connection)
    if "frame_handler_cls(" not in src or "self.on_inbound_method" not in src:
        return "amqp.Connection no longer calls frame_handler(self, self.on_inbound_method)"
    for name in ("bytes_recv", "bytes_sent", "blocking_read", "drain_events", "frame_max"):
        if not hasattr(amqp.Connection, name) and name not in src:
            return "amqp.Connection.%s is gone" % name


def _amqp_channel_methods():
    import amqp
    from amqp import spec
    methods = getattr(amqp.Channel, "_METHODS", None)
    if not isinstance(methods, dict):
        return "amqp.Channel._METHODS (method signature -> method) is gone"
    m = methods.get(spec.Basic.ConsumeOk)
    if getattr(m, "args", None) != "s":
        return "amqp.Channel._METHODS[Basic.ConsumeOk].args is no longer 's'"


def _amqp_message():
    import amqp
    props = getattr(amqp.Message, "PROPERTIES", None)
    if not props or props[0] != ("content_type", "s") or ("application_headers", "F") not in props:
        return "amqp.Message.PROPERTIES (name, type) in AMQP flag order is gone or changed"
    msg = amqp.Message(frame_method=(60, 60), frame_args=b"")
    missing = [a for a in ("body_received", "body_size", "ready", "frame_method", "frame_args",
                           "inbound_header", "inbound_body", "properties")
               if not hasattr(msg, a)]
    return missing and "amqp.Message lost %s" % ", ".join(missing)


def _amqp_channel_events():
    import amqp
    src = inspect.getsource(amqp.Channel)
    for event in ("basic_ack", "basic_nack", "basic_return"):
        if "self.events['%s']" % event not in src and "self.events.get('%s')" % event not in src:
            return "amqp.Channel no longer calls its events['%s'] handlers" % event
    if "auto_decode" not in _params(amqp.Channel.__init__):
        return "amqp.Channel(auto_decode=...) is gone"


def _amqp_transport_read_buffer():
    """TCPTransport reads through _quick_recv and keeps unread bytes in _read_buffer
    (sarra.broker.connection._buffer_reads and _frame_buffered)."""
    from amqp.transport import TCPTransport
    from sarra.broker import connection
    a, b = socket.socketpair()
    try:
        t = TCPTransport("127.0.0.1:1")
        t.sock = a
        t._setup_transport()
        for name in ("_quick_recv", "_read_buffer"):
            if not hasattr(t, name):
                return "amqp TCPTransport.%s is gone" % name
        calls = []

        class CountingSock:
            def recv(self, n):
                calls.append(n)
                return a.recv(n)

        t.sock = CountingSock()
        before = t._quick_recv
        connection._buffer_reads(t)
        if t._quick_recv is before:
            return "sarra.broker.connection._buffer_reads no longer takes over _quick_recv"
        heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
        b.sendall(heartbeat * 2)
        first = t.read_frame()
        if not connection._frame_buffered(t):
            return "amqp TCPTransport no longer keeps bytes read ahead in _read_buffer"
        second = t.read_frame()
        if (first[0], second[0]) != (8, 8) or len(calls) != 1:
            return "amqp TCPTransport.read_frame no longer reads through _quick_recv"
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ http.client

def _http_limits():
    for name in ("_MAXHEADERS", "_MAXLINE"):
        if not isinstance(getattr(http.client, name, None), int):
            return "http.client.%s (an int) is gone" % name


def _http_response():
    class Sock:
        def makefile(self, mode):
            return io.BufferedReader(io.BytesIO(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))

    resp = http.client.HTTPResponse(Sock(), method="HEAD")
    if getattr(resp, "_method", None) != "HEAD":
        return "http.client.HTTPResponse._method is gone"
    for name in ("_read_status", "_check_close", "_close_conn"):
        if not callable(getattr(resp, name, None)):
            return "http.client.HTTPResponse.%s() is gone" % name
    status = resp._read_status()
    if not isinstance(status, tuple) or status[:2] != ("HTTP/1.1", 200) \
            or status[2].strip() != "OK":
        return "http.client.HTTPResponse._read_status() no longer returns (version, status, reason)"
    for name in ("fp", "chunked", "chunk_left", "length", "will_close", "headers", "msg"):
        if not hasattr(resp, name):
            return "http.client.HTTPResponse.%s is gone" % name
    if not hasattr(resp.fp, "peek"):
        return "http.client.HTTPResponse.fp has no peek() (sarra.transfer.http._splice)"
    if http.client.HTTPConnection.response_class is not http.client.HTTPResponse:
        return "http.client.HTTPConnection.response_class is gone"


# ------------------------------------------------------------------ paramiko

def _paramiko_ciphers():
    import paramiko
    ciphers = getattr(paramiko.Transport, "_preferred_ciphers", None)
    if not isinstance(ciphers, (tuple, list)) or not any("-ctr" in c for c in ciphers):
        return "paramiko.Transport._preferred_ciphers (a tuple of cipher names) is gone"


def _paramiko_sftp_file():
    import paramiko
    f = paramiko.SFTPFile
    if "max_concurrent_requests" not in _params(f.prefetch):
        return "paramiko SFTPFile.prefetch(max_concurrent_requests=...) is gone"
    if not callable(getattr(f, "set_pipelined", None)):
        return "paramiko SFTPFile.set_pipelined() is gone"
    if "window_size" not in _params(paramiko.SFTPClient.from_transport):
        return "paramiko SFTPClient.from_transport(window_size=...) is gone"


HOOKS = [
    ("amqp.Connection(frame_handler=, frame_writer=)", "sarra/broker/connection.py",
     _amqp_connection_kwargs),
    ("amqp.method_framing.frame_writer", "sarra/broker/connection.py", _amqp_frame_writer),
    ("py-amqp's frame handler contract", "sarra/broker/frames.py", _amqp_frame_handler),
    ("amqp.Channel._METHODS", "sarra/broker/frames.py", _amqp_channel_methods),
    ("amqp.Message internals", "sarra/broker/frames.py", _amqp_message),
    ("amqp.Channel.events", "sarra/broker/connection.py", _amqp_channel_events),
    ("amqp TCPTransport._quick_recv/_read_buffer", "sarra/broker/connection.py",
     _amqp_transport_read_buffer),
    ("http.client._MAXHEADERS/_MAXLINE", "sarra/transfer/http.py", _http_limits),
    ("http.client.HTTPResponse internals", "sarra/transfer/http.py", _http_response),
    ("paramiko.Transport._preferred_ciphers", "sarra/flow/send.py", _paramiko_ciphers),
    ("paramiko SFTPFile prefetch/pipelining", "sarra/transfer/sftp.py", _paramiko_sftp_file),
]


@pytest.mark.parametrize("what,user,check", HOOKS, ids=[h[0] for h in HOOKS])
def test_private_hook_is_still_there(what, user, check):
    try:
        problem = check()
    except Exception as e:          # noqa: BLE001 - a changed internal may fail any way
        problem = "%s: %s" % (type(e).__name__, e)
    if problem:
        pytest.fail("%s, used by %s: %s; check the library version setup.py pins"
                    % (what, user, problem), pytrace=False)


def _installed_major(dist):
    from importlib.metadata import version
    return int(version(dist).split(".")[0])


@pytest.mark.parametrize("dist", ["amqp", "paramiko"])
def test_setup_py_pins_the_installed_major_version(dist):
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    m = re.search(r'"%s>=(\d+)[^,"]*,<(\d+)"' % re.escape(dist), text)
    assert m, "setup.py: %s is not pinned to one major version ('%s>=N,<N+1')" % (dist, dist)
    low, high = int(m.group(1)), int(m.group(2))
    major = _installed_major(dist)
    assert low <= major < high, (
        "%s %d is installed but setup.py pins >=%d,<%d: run tests/unit/test_private_hooks.py "
        "against it before moving the pin" % (dist, major, low, high))
