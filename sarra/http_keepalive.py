"""HTTP(S) downloads over one http.client connection per server: the consumers' fast path.

transfer/http.py (requests) spends about 0.6 ms of Python per request, more than the rest
of a small file's trip through the flow; http.client on a kept-alive connection needs a
third of that. This driver is HttpTransfer with ``get`` done by http.client for the plain
case and handed back to requests for everything else: a proxy in the environment, a
redirect, a compressed answer. Credentials, the Range rules (transfer/http.py, spec
checksums-and-parts.md §4.4) and the error codes are the same; so is the interface, so
nothing else needs to know. The flow registers it for http/https (flow.DRIVER_MODULES).

(Meant to be folded into transfer/http.py by its owner; kept apart meanwhile.)
"""

import base64
import http.client
import os
import re
import socket
import ssl

from sarra.transfer import (FAILED, NOT_FOUND, LocalWriter, TransferError, check_range,
                            redact, register, split_url)
from sarra.transfer.http import _CONTENT_RANGE, HttpTransfer, quote_url

_STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError,
          BrokenPipeError, http.client.CannotSendRequest, http.client.ResponseNotReady)
_DRAIN_LIMIT = 1 << 16      # error bodies up to this size are read to keep the connection
_PLAIN_PATH = re.compile(r"[A-Za-z0-9!$%&'()*+,\-./:;=?@\[\]_~]*")   # quote_url leaves as is


class _Headers(dict):
    """Response headers by lower-case name: the part of email.message.Message that
    http.client uses, without the email parser (a tenth of the cost per response)."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)

    def get_all(self, name, default=None):
        value = dict.get(self, name.lower())
        return default if value is None else [value]


def _read_headers(fp) -> _Headers:
    headers, last = _Headers(), None
    for _ in range(http.client._MAXHEADERS + 1):
        line = fp.readline(http.client._MAXLINE + 1)
        if len(line) > http.client._MAXLINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1")
        if text[:1] in (" ", "\t") and last is not None:      # obsolete line folding
            headers[last] += " " + text.strip()
            continue
        name, sep, value = text.partition(":")
        if not sep:
            continue
        last, value = name.strip().lower(), value.strip()
        headers[last] = headers[last] + ", " + value if last in headers else value
    raise http.client.HTTPException("got more than %d headers" % http.client._MAXHEADERS)


class _Response(http.client.HTTPResponse):
    """http.client's response with _read_headers in place of email.parser (begin() is the
    standard one otherwise)."""

    def begin(self):
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            _read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _read_headers(self.fp)
        te = self.headers.get("transfer-encoding")
        self.chunked = bool(te) and te.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or \
                100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class _Connection(http.client.HTTPConnection):
    response_class = _Response


class _TLSConnection(http.client.HTTPSConnection):
    response_class = _Response


def _proxied(scheme: str) -> bool:
    """A proxy for this scheme is configured in the environment (requests will use it)."""
    env = {k.lower(): v for k, v in os.environ.items()}
    return bool(env.get(f"{scheme}_proxy") or env.get("all_proxy"))


@register
class KeepAliveHttpTransfer(HttpTransfer):

    schemes = ('http', 'https')

    def __init__(self, credentials=None, timeout=300, bufsize=1 << 20, logger=None):
        super().__init__(credentials, timeout, bufsize, logger)
        self._conns = {}
        self._hosts = {}
        self._ssl = None

    # --- connections --------------------------------------------------------------------

    def _connection(self, ep):
        key = (ep.scheme, ep.host, ep.port)
        conn = self._conns.get(key)
        if conn is None:
            if ep.scheme == 'https':
                if self._ssl is None:
                    bundle = os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('CURL_CA_BUNDLE')
                    self._ssl = ssl.create_default_context(cafile=bundle or None)
                conn = _TLSConnection(ep.host, ep.port or 443, timeout=self.timeout,
                                      context=self._ssl)
            else:
                conn = _Connection(ep.host, ep.port or 80, timeout=self.timeout)
            conn.fresh = True
            self._conns[key] = conn
        return conn

    def _drop(self, ep):
        conn = self._conns.pop((ep.scheme, ep.host, ep.port), None)
        if conn is not None:
            conn.close()

    def _request(self, ep, path, headers, shown):
        """Send the GET; one more try on a new connection when a kept-alive one had gone."""
        for attempt in (0, 1):
            conn = self._connection(ep)
            reused = not conn.fresh
            conn.fresh = False
            try:
                conn.request('GET', path, headers=headers)
                resp = conn.getresponse()
                return conn, resp
            except _STALE as e:
                self._drop(ep)
                if attempt == 0 and reused:
                    self.logger.debug('http: retrying %s after %s', shown, type(e).__name__)
                    continue
                raise TransferError(FAILED, 'http download failed: %s: connection closed by '
                                    'the server (%s)' % (shown, type(e).__name__)) from None
            except (OSError, http.client.HTTPException) as e:
                self._drop(ep)
                what = 'timed out' if isinstance(e, socket.timeout) else (
                    getattr(e, 'strerror', None) or str(e) or type(e).__name__)
                raise TransferError(FAILED, 'http download failed: cannot connect to %s: %s'
                                    % (shown, what)) from None

    # --- get ------------------------------------------------------------------------------

    def _base_headers(self, url, ep):
        """Headers of every GET to this server and user (credentials do not depend on the
        path), or None when requests must do it (proxy configured); computed once."""
        key = ep.key
        if key not in self._hosts:
            headers = None
            if not _proxied(ep.scheme):
                _, headers, auth = self._request_args(url)
                if auth is not None:
                    token = base64.b64encode(('%s:%s' % auth).encode('utf-8')).decode('ascii')
                    headers['Authorization'] = 'Basic ' + token
            self._hosts[key] = headers
        return self._hosts[key]

    def get(self, url, local_path, offset=0, length=None, hasher=None, write_offset=None):
        check_range(offset, length)
        ep = split_url(url)
        base = self._base_headers(url, ep)
        if base is None:
            return super().get(url, local_path, offset, length, hasher, write_offset)
        shown = redact(url)
        headers = dict(base)
        path = ep.path or '/'
        if not _PLAIN_PATH.fullmatch(path):
            path = quote_url(path)
        ranged = length != 0 and (offset > 0 or length is not None)
        if ranged:
            end = '' if length is None else str(offset + length - 1)
            headers['Range'] = 'bytes=%d-%s' % (offset, end)
        conn, resp = self._request(ep, path, headers, shown)
        status = resp.status
        encoding = (resp.getheader('Content-Encoding') or 'identity').strip().lower()
        if (300 <= status < 400 and status != 304) or encoding not in ('identity', ''):
            self._finish(ep, resp)      # redirects and compressed bodies: requests knows
            return super().get(url, local_path, offset, length, hasher, write_offset)
        skip = self._check(ep, resp, shown, ranged, offset)    # errors: answer read or dropped
        try:
            with LocalWriter(local_path, write_offset, hasher) as out:
                if length == 0:
                    self._finish(ep, resp)
                    return 0
                self._copy(ep, resp, out, skip, length, shown)
            return out.count
        except BaseException:
            self._drop(ep)              # a half-read answer: that connection is done
            raise

    def _finish(self, ep, resp):
        """Read what is left of a small answer so the connection can be reused."""
        size = resp.getheader('Content-Length')
        if size is not None and size.isdigit() and int(size) <= _DRAIN_LIMIT:
            try:
                resp.read()
                return
            except (OSError, http.client.HTTPException):
                pass
        self._drop(ep)

    def _check(self, ep, resp, shown, ranged, offset):
        code = resp.status
        if code == 404:
            self._finish(ep, resp)
            raise TransferError(NOT_FOUND, 'http download failed: 404 Not Found %s' % shown)
        if code == 206 and ranged:
            cr = resp.getheader('Content-Range', '')
            m = _CONTENT_RANGE.match(cr)
            if not m or int(m.group(1)) != offset:
                self._finish(ep, resp)
                raise TransferError(FAILED, 'http download failed: bad Content-Range %r for '
                                    'offset %d %s' % (cr, offset, shown))
            return 0
        if code == 200:
            return offset       # no Range sent, or the server ignored it: skip to offset
        self._finish(ep, resp)
        raise TransferError(FAILED, 'http download failed: %d %s %s'
                            % (code, resp.reason or '', shown))

    def _copy(self, ep, resp, out, skip, length, shown):
        left = length
        try:
            while True:
                chunk = resp.read(self.bufsize)
                if not chunk:
                    if resp.length:         # EOF before Content-Length: http.client is silent
                        raise http.client.IncompleteRead(b"", resp.length)
                    break
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                if left is not None:
                    if len(chunk) >= left:
                        out.write(chunk[:left])
                        extra, left = len(chunk) > left, 0
                        if extra or not resp.isclosed():
                            self._drop(ep)      # more body than wanted: cannot reuse
                        break
                    left -= len(chunk)
                out.write(chunk)
        except (OSError, http.client.HTTPException) as e:
            self._drop(ep)
            what = 'timed out' if isinstance(e, socket.timeout) else (
                getattr(e, 'strerror', None) or str(e) or type(e).__name__)
            raise TransferError(FAILED, 'http download failed: %s after %d bytes: %s'
                                % (shown, out.count, what)) from None
        if skip or left:
            self._drop(ep)
            raise TransferError(FAILED, 'http download failed: short read, got %d of %s bytes %s'
                                % (out.count, length, shown))

    def close(self):
        for conn in self._conns.values():
            try:
                conn.close()
            except Exception:
                pass
        self._conns.clear()
        self._hosts.clear()
        super().close()
