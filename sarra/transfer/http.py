"""HTTP(S) downloads over one keep-alive requests.Session per driver."""

import re

import requests

from . import (FAILED, NOT_FOUND, LocalWriter, Transfer, TransferError, check_range,
               credential_user_password, credential_value, redact, register, split_url)

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


@register
class HttpTransfer(Transfer):
    """Download-only driver for http/https. Range requests for partial reads."""

    schemes = ('http', 'https')

    def __init__(self, credentials=None, timeout=300, bufsize=1 << 20, logger=None):
        super().__init__(credentials, timeout, bufsize, logger)
        self.session = None

    def _session(self):
        if self.session is None:
            s = requests.Session()
            s.verify = True
            s.trust_env = True
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
        for attempt in (0, 1):
            try:
                return self._session().get(url, headers=headers, auth=auth, stream=True,
                                           timeout=self.timeout, allow_redirects=True)
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
        ranged = length != 0 and (offset > 0 or length is not None)
        if ranged:
            end = '' if length is None else str(offset + length - 1)
            headers['Range'] = 'bytes=%d-%s' % (offset, end)
        resp = self._open(qurl, headers, auth)
        try:
            skip = self._check_status(resp, shown, ranged, offset)
            with LocalWriter(local_path, write_offset, hasher) as out:
                if length == 0:
                    return 0
                self._copy_body(resp, out, skip, length, shown)
            return out.count
        finally:
            resp.close()

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
        left = length
        try:
            for chunk in resp.iter_content(chunk_size=self.bufsize):
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                if left is not None:
                    if len(chunk) >= left:
                        out.write(chunk[:left])
                        left = 0
                        break
                    left -= len(chunk)
                out.write(chunk)
        except requests.exceptions.RequestException as e:
            raise TransferError(FAILED, 'http download failed: %s after %d bytes: %s'
                                % (shown, out.count, _reason(e))) from None
        if skip or left:
            raise TransferError(FAILED, 'http download failed: short read, got %d of %s bytes %s'
                                % (out.count, length, shown))

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None


def _reason(e):
    """A one-line reason for a requests exception (the innermost cause)."""
    inner = e
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    reason = getattr(inner, 'reason', None)
    text = re.sub(r'<[^>]*>:\s*', '', str(reason if reason is not None else inner))
    return ' '.join(text.split())[:300]
