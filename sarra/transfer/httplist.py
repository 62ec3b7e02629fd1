"""What sr_poll asks an HTTP(S) server besides GET: a directory's index page, bounded,
and HEAD for a file's size and date (sarra/poll/lister.py parses the page).

The page comes through the driver's own GET (HttpTransfer.get: its credentials, its
redirect policy, its refusal of encodings) into a temporary file of at most ``limit``
bytes (a longer page is refused, 413: transfer/bounds.py); HEAD goes through the same
requests session and credentials as the driver's other requests.
"""

import os
import tempfile
from email.utils import parsedate_to_datetime

from . import FAILED, NOT_FOUND, TransferError, credential_flag, redact

#: largest index page read, in bytes
MAX_PAGE = 32 << 20


class _Bound:
    """A 'hasher' that only bounds what LocalWriter writes (its ``limit``)."""

    def __init__(self, limit):
        self.limit = limit

    def update(self, data):
        pass


def index_page(drv, url, limit=MAX_PAGE):
    """The text of the page at url (a directory: a '/' is added), decoded as UTF-8
    (undecodable bytes kept as surrogate escapes, never an error)."""
    if not url.endswith('/'):
        url += '/'
    fd, tmp = tempfile.mkstemp(prefix='sarra-index-')
    os.close(fd)
    try:
        drv.get(url, tmp, hasher=_Bound(limit))
        with open(tmp, 'rb') as f:
            return f.read(limit + 1).decode('utf-8', 'surrogateescape')
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def head(drv, url):
    """(size, mtime) from a HEAD of url: Content-Length and Last-Modified, None for what
    the answer lacks. 404: TransferError NOT_FOUND; other failures: FAILED."""
    import requests
    from .http import _no_netrc, _reason
    shown = redact(url)
    qurl, headers, auth = drv._request_args(url)
    if auth is None and not credential_flag(drv._creds(url), 'own_keys', default=True):
        auth = _no_netrc
    try:
        resp = drv._session().head(qurl, headers=headers, auth=auth, timeout=drv.timeout,
                                   allow_redirects=False)
    except requests.exceptions.RequestException as e:
        raise TransferError(FAILED, 'http head failed: %s: %s' % (shown, _reason(e))) from None
    with resp:
        if resp.status_code == 404:
            raise TransferError(NOT_FOUND, 'http head failed: 404 Not Found %s' % shown)
        if resp.status_code != 200:
            raise TransferError(FAILED, 'http head failed: %d %s %s'
                                % (resp.status_code, resp.reason or '', shown))
        size = resp.headers.get('Content-Length', '')
        size = int(size) if size.isdigit() else None
        mtime = None
        try:
            mtime = parsedate_to_datetime(resp.headers.get('Last-Modified', '')).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
        return size, mtime
