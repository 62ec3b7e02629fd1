"""HTTP(S) downloads: the http/https transfer driver.

HttpTransfer does the plain GET over one kept-alive http.client connection per server
(about a third of the Python time per request of requests.Session, which matters for
small files) and hands everything else to RequestsHttpTransfer, its base: a proxy in the
environment, a redirect (followed to the same scheme, host and port only). An answer with a
Content-Encoding (never asked for: Accept-Encoding: identity) is refused, never decoded,
and no body is read past the announced size (transfer/bounds.py). Both apply the same credentials
(credentials.conf: user/password or bearer_token), the same Range rules (spec
checksums-and-parts.md section 4.4: a server that ignores Range is skipped up to the
offset, never written whole) and the same error codes. Certificates: the system store, or
the bundle named by REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.
"""

import base64
import http.client
import os
import re
import socket
import ssl
from urllib.parse import urljoin, urlsplit

from . import (FAILED, NOT_FOUND, LocalWriter, Transfer, TransferError, check_range,
               credential_flag, credential_user_password, credential_value, redact, register,
               short_read, split_url)
from . import throttle
from .bounds import REDIRECT, TransferRefused, refuse_encoding


def _no_netrc(request):
    """requests' auth that adds nothing: with it, requests never takes the login of the
    account's own ~/.netrc (a pump must not lend it to a source's URL)."""
    return request


#: redirects followed per request, each to the same scheme, host and port only: a source's
#: server must not send the pump (and the credentials it holds for that server) elsewhere
MAX_REDIRECTS = 5

_SAFE = frozenset(b"!$%&'()*+,-./0123456789:;=?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_"
                  b"abcdefghijklmnopqrstuvwxyz~")
_CONTENT_RANGE = re.compile(r'bytes\s+(\d+)-(\d+)/(\d+|\*)')


def quote_url(url):
    """Percent-encode non-ASCII bytes, spaces and other unsafe characters of url.

    Existing escapes such as %20/%23 are kept as they are ('%' itself is never encoded)
    and the path is not normalised ('//a.txt' stays '//a.txt').
    """
    out = []
    for byte in url.encode('utf-8'):
        out.append(chr(byte) if byte in _SAFE else '%%%02X' % byte)
    return ''.join(out)


class RequestsHttpTransfer(Transfer):
    """http/https through a keep-alive requests.Session: proxies from the environment,
    same-origin redirects. HttpTransfer (below) hands those cases to it."""

    schemes = ('http', 'https')

    def __init__(self, credentials=None, timeout=300, bufsize=1 << 20, logger=None):
        super().__init__(credentials, timeout, bufsize, logger)
        self.session = None

    def _session(self):
        if self.session is None:
            import requests     # only for what the fast path hands over: ~7 MB of RSS
            s = requests.Session()
            s.verify = True
            # nothing for requests to find in the environment per request (proxies,
            # ~/.netrc) costs a third of a small download: look once instead
            s.trust_env = _environment_matters()
            s.verify = _ca_bundle()
            self.session = s
        return self.session

    def _request_args(self, url):
        ep = split_url(url)
        creds = self._creds(url)
        headers = {'Accept-Encoding': 'identity'}
        token = credential_value(creds, 'bearer_token', 'bt')
        auth = None
        if token:
            headers['Authorization'] = 'Bearer %s' % token
        else:
            user, password = ep.user, ep.password
            if password is None:
                cuser, cpassword = credential_user_password(creds)
                user = user or cuser
                password = cpassword
            if user is not None and password is not None:
                auth = (user, password)
        # Credentials travel in the auth argument, not in the request URL.
        clean = re.sub(r'^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@', r'\1', url, count=1)
        return quote_url(clean), headers, auth

    def _open(self, url, headers, auth):
        """GET with stream=True; one retry when a pooled keep-alive connection has gone away."""
        import requests
        for attempt in (0, 1):
            try:
                return self._session().get(url, headers=headers, auth=auth, stream=True,
                                           timeout=self.timeout, allow_redirects=False)
            except requests.exceptions.ConnectionError as e:
                if attempt == 0 and not isinstance(e, requests.exceptions.ConnectTimeout):
                    self.logger.debug('http: retrying %s after %s', redact(url), e)
                    continue
                raise TransferError(FAILED, 'http download failed: cannot connect to %s: %s'
                                    % (redact(url), _reason(e))) from None
            except requests.exceptions.RequestException as e:
                raise TransferError(FAILED, 'http download failed: %s: %s'
                                    % (redact(url), _reason(e))) from None

    def get(self, url, local_path, offset=0, length=None, hasher=None, write_offset=None):
        check_range(offset, length)
        shown = redact(url)
        qurl, headers, auth = self._request_args(url)
        if auth is None and not credential_flag(self._creds(url), 'own_keys', default=True):
            auth = _no_netrc        # a pump fetching for a source (fetchpolicy.bare)
        ranged = length != 0 and (offset > 0 or length is not None)
        if ranged:
            end = '' if length is None else str(offset + length - 1)
            headers['Range'] = 'bytes=%d-%s' % (offset, end)
        resp = self._follow(qurl, headers, auth, shown)
        try:
            skip = self._check_status(resp, shown, ranged, offset)
            refuse_encoding(resp.headers.get('Content-Encoding'), shown)
            with LocalWriter(local_path, write_offset, hasher) as out:
                if length == 0:
                    return 0
                size = resp.headers.get('Content-Length', '')
                if length is None and size.isdigit():
                    out.expect(int(size) - skip, shown)
                self._copy_body(resp, out, skip, length, shown)
            return out.count
        finally:
            resp.close()

    def _follow(self, qurl, headers, auth, shown):
        """GET qurl, following redirects to the same origin only (MAX_REDIRECTS at most);
        a redirect elsewhere is refused (403, not retried)."""
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._open(qurl, headers, auth)
            if not resp.is_redirect:
                return resp
            target = urljoin(qurl, resp.headers.get('Location', ''))
            resp.close()
            if not same_origin(qurl, target):
                raise TransferRefused(REDIRECT, 'Forbidden: redirect to another server '
                                      'refused: %s -> %r' % (shown, redact(target)[:200]))
            qurl = quote_url(target)
        raise TransferRefused(REDIRECT, 'Forbidden: more than %d redirects %s'
                              % (MAX_REDIRECTS, shown))

    def _check_status(self, resp, shown, ranged, offset):
        """Validate the response; return how many body bytes to skip to reach offset."""
        code = resp.status_code
        if code == 404:
            raise TransferError(NOT_FOUND, 'http download failed: 404 Not Found %s' % shown)
        if code == 206 and ranged:
            m = _CONTENT_RANGE.match(resp.headers.get('Content-Range', ''))
            if not m or int(m.group(1)) != offset:
                raise TransferError(FAILED, 'http download failed: bad Content-Range %r for '
                                    'offset %d %s' % (resp.headers.get('Content-Range'),
                                                      offset, shown))
            return 0
        if code == 200:
            return offset  # server ignored Range (or none sent): skip to offset ourselves
        raise TransferError(FAILED, 'http download failed: %d %s %s'
                            % (code, resp.reason or '', shown))

    def _copy_body(self, resp, out, skip, length, shown):
        import requests
        try:
            chunks = resp.iter_content(chunk_size=throttle.read_size(self.bufsize))
            skip, left, _ = _write_range(throttle.paced(chunks, throttle.pacer), out,
                                         skip, length)
        except requests.exceptions.RequestException as e:
            raise TransferError(FAILED, 'http download failed: %s after %d bytes: %s'
                                % (shown, out.count, _reason(e))) from None
        if skip or left:
            raise short_read('http download', out.count, length, shown)

    def listdir(self, url, limit=None):      # sr_poll: transfer/httplist.py
        from .httplist import index_page
        return index_page(self, url)

    def stat(self, url):
        from .httplist import head
        return head(self, url)

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None


def _origin(url):
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    return scheme, (parts.hostname or '').lower(), port or {'http': 80, 'https': 443}.get(scheme)


def same_origin(url, target):
    """Whether target has url's scheme, host and port."""
    origin = _origin(url)
    return origin is not None and origin == _origin(target)


def _write_range(chunks, out, skip, length):
    """Write bytes [skip, skip+length) of the chunks to out (length None: to the end).

    Returns (skip, left, extra): what was still to skip and to write when the chunks ran
    out (left is 0 only when the range was complete before them), and whether the last
    chunk read went past the end of the range."""
    left = length
    for chunk in chunks:
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        if left is not None:
            if len(chunk) >= left:
                out.write(chunk[:left])
                return 0, 0, len(chunk) > left
            left -= len(chunk)
        out.write(chunk)
    return skip, left, False


def _read_chunks(resp, size, out=None):
    """An http.client body in chunks of at most size; a short body is an error. With
    ``out``, read into the buffers of out.buffer(size) (reused: no allocation per chunk);
    each view is then valid until it is written or the next one is asked for."""
    while True:
        if out is None:
            chunk = resp.read(size)
        else:
            view = out.buffer(size)
            chunk = view[:resp.readinto(view)]
        if not chunk:
            if resp.length:         # EOF before Content-Length: http.client is silent
                raise http.client.IncompleteRead(b"", resp.length)
            return
        yield chunk


def _reason(e):
    """A one-line reason for a requests exception (the innermost cause)."""
    inner = e
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, 'reason', None)
    text = re.sub(r'<[^>]*>:\s*', '', str(reason if reason is not None else inner))
    return ' '.join(text.split())[:300]

_PROXY_ENV = ('http_proxy', 'https_proxy', 'all_proxy', 'no_proxy', 'netrc')


def _ca_bundle():
    """What to trust, the same for both paths: REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else
    the system store as OpenSSL finds it (SSL_CERT_FILE / SSL_CERT_DIR honoured), never
    the copy of Mozilla's list that requests would pick by itself."""
    bundle = os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('CURL_CA_BUNDLE')
    if bundle:
        return bundle
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.capath):
        if candidate and os.path.exists(candidate):
            return candidate
    return True


def _environment_matters() -> bool:
    """A proxy variable or a ~/.netrc exists: requests must look at the environment."""
    if any(k.lower() in _PROXY_ENV for k in os.environ):
        return True
    return any(os.path.exists(os.path.expanduser(f)) for f in ('~/.netrc', '~/_netrc'))


#: bodies from this size on are read BIG_READ bytes at a time into reused buffers (three
#: at most: being read, queued for the hash thread, being hashed). Not a power of two on
#: purpose: writes of exactly 1 or 2 MiB at aligned offsets made ext4 (Linux 6.18, large
#: folios) take 5 times longer per GiB on the test VM than writes that straddle those
#: boundaries (2.7 s against 0.3 s, bench history); tmpfs did not care.
BIG_BODY, BIG_READ = 8 << 20, (2 << 20) - (64 << 10)
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


_OWS = " \t\r\n"     # what HTTP trims around a value (not every Unicode space)


def _read_headers(fp) -> _Headers:
    headers, last = _Headers(), None
    # http.client's limit counts the blank line too: at most _MAXHEADERS - 1 fields
    for _ in range(http.client._MAXHEADERS):
        line = fp.readline(http.client._MAXLINE + 1)
        if len(line) > http.client._MAXLINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return headers
        text = line.decode("iso-8859-1")
        if text[:1] in (" ", "\t") and last is not None:      # obsolete line folding
            headers[last] += " " + text.strip(_OWS)
            continue
        name, sep, value = text.partition(":")
        if not sep:
            continue
        last, value = name.strip().lower(), value.strip(_OWS)
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
class HttpTransfer(RequestsHttpTransfer):
    """The http/https driver: GETs over one http.client connection per server, with
    everything but the plain case handed to RequestsHttpTransfer."""

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
        path), or None when requests must do it (proxy configured); computed once. The URL's
        own password is part of the key: at a pump, a source naming a user with a password it
        does not know must not be sent the one another source gave."""
        key = ep.key, ep.password
        if key not in self._hosts:
            if len(self._hosts) >= 256:     # one per password a URL gave: bounded
                self._hosts.clear()
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
        if 300 <= status < 400 and status != 304:
            self._finish(ep, resp)      # redirects (same origin only): requests follows them
            return super().get(url, local_path, offset, length, hasher, write_offset)
        skip = self._check(ep, resp, shown, ranged, offset)    # errors: answer read or dropped
        try:
            refuse_encoding(resp.getheader('Content-Encoding'), shown)  # never decoded
            with LocalWriter(local_path, write_offset, hasher) as out:
                if length == 0:
                    self._finish(ep, resp)
                    return 0
                if length is None and resp.length is not None:
                    out.expect(resp.length - skip, shown)
                if self._can_splice(conn, resp, out, skip, length):
                    self._splice(ep, conn, resp, out, shown)
                else:
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

    @staticmethod
    def _can_splice(conn, resp, out, skip, length):
        """A big plain-HTTP body of known length, wanted whole from its first byte:
        transfer/splice.py moves it into the file without reading it ourselves. (An answer
        that closes the connection is not spliced: http.client has let go of its socket.)"""
        return (resp.length is not None and resp.length >= BIG_BODY and not resp.chunked
                and not skip and (length is None or length == resp.length)
                and not isinstance(conn.sock, ssl.SSLSocket) and conn.sock is not None
                and out.can_splice())

    def _splice(self, ep, conn, resp, out, shown):
        total = resp.length
        try:
            # what http.client already read past the headers, then the rest from the socket
            head = resp.fp.read(min(len(resp.fp.peek(1)), total))
        except (OSError, http.client.HTTPException) as e:
            self._drop(ep)
            raise TransferError(FAILED, 'http download failed: %s: %s' % (
                shown, getattr(e, 'strerror', None) or e)) from None
        if head:
            out.write(head)
        if total > len(head):
            out.splice_from(conn.sock, total - len(head), conn.sock.gettimeout(), shown)
        resp.length = 0
        resp._close_conn()      # all read: the connection serves the next request

    def _copy(self, ep, resp, out, skip, length, shown):
        # big bodies in bigger reads: fewer system calls and hand-overs to the hash thread
        if (resp.length or 0) < BIG_BODY:
            chunks = _read_chunks(resp, throttle.read_size(self.bufsize))
        else:
            chunks = _read_chunks(resp, throttle.read_size(max(self.bufsize, BIG_READ)), out)
        chunks = throttle.paced(chunks, throttle.pacer)        # kbytes_ps
        try:
            skip, left, extra = _write_range(chunks, out, skip, length)
        except (OSError, http.client.HTTPException) as e:
            self._drop(ep)
            what = 'timed out' if isinstance(e, socket.timeout) else (
                getattr(e, 'strerror', None) or str(e) or type(e).__name__)
            raise TransferError(FAILED, 'http download failed: %s after %d bytes: %s'
                                % (shown, out.count, what)) from None
        if left == 0 and (extra or not resp.isclosed()):
            self._drop(ep)      # more body than wanted: the connection cannot be reused
        elif skip or left:
            self._drop(ep)
            raise short_read('http download', out.count, length, shown)

    def close(self):
        for conn in self._conns.values():
            try:
                conn.close()
            except Exception:
                pass
        self._conns.clear()
        self._hosts.clear()
        super().close()
