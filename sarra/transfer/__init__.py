"""Transfer drivers: one class per URL scheme behind one small interface.

A driver instance keeps its connection (HTTP session, SSH session, FTP control
connection) open across many calls and reconnects only when it has dropped.
``for_url(url, pool)`` hands out one pooled driver per scheme/host/port/user.

URLs are ``baseurl + relpath`` of a v02 message (message.join_url: no ``//`` at the
boundary of an http(s) base, plain concatenation otherwise).  For
sftp/ftp/file only ``%20`` and ``%23`` are decoded; for sftp/ftp a path that
starts with ``//`` is absolute on the server, a single ``/`` is relative to the
login directory.
"""

import errno
import logging
import os
import re
from collections.abc import Mapping
from functools import partial
from importlib import import_module
from urllib.parse import unquote, urlsplit

from sarra.paths import NOFOLLOW
from sarra.redaction import hide_passwords
from sarra.transfer import throttle

__all__ = [
    'Transfer', 'TransferError', 'LocalWriteError', 'Endpoint', 'for_url', 'driver_class',
    'register', 'SCHEMES', 'redact', 'split_url', 'decode_path', 'credential_value',
    'credential_flag', 'PinnedPath',
]

NOT_FOUND = 404
FAILED = 499


class TransferError(Exception):
    """A transfer failed. ``code`` is 404 (not found) or 499 (anything else)."""

    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return self.message


class LocalWriteError(TransferError):
    """The local file could not be written (disk full, read-only, not permitted): trying
    the transfer again at once cannot help. ``errno`` is the OS error number."""

    def __init__(self, path, e):
        super().__init__(FAILED, 'cannot write %s: %s' % (path, e.strerror or e))
        self.errno = e.errno


class CannotDeliver(TransferError):
    """The destination can never take this (blocks over FTP): no retry will help."""

    def __init__(self, message):
        super().__init__(FAILED, message)


def redact(url):
    """Return url with any password removed (``scheme://user:pw@h`` -> ``scheme://user@h``)."""
    return hide_passwords(str(url), mask=None)


def decode_path(path):
    """Decode only the two escapes v02 uses (%20 and %23); keep every other '%'."""
    return path.replace('%20', ' ').replace('%23', '#')


class Endpoint:
    """The parts of a URL a driver needs: scheme, host, port, user, password, path."""

    __slots__ = ('scheme', 'host', 'port', 'user', 'password', 'path')

    def __init__(self, scheme, host, port, user, password, path):
        self.scheme, self.host, self.port = scheme, host, port
        self.user, self.password, self.path = user, password, path

    @property
    def key(self):
        return (self.scheme, self.host, self.port, self.user)


def split_url(url):
    """Split ``scheme://[user[:pw]@]host[:port]<path>`` without touching the path.

    The path is everything after the network location, undecoded: no query or
    fragment handling (file names may contain '?'; '#' travels as %23).
    ``file:`` URLs give host '' and the local path.
    """
    m = re.match(r'([A-Za-z][A-Za-z0-9+.-]*):(.*)\Z', url, re.S)
    if not m:
        raise TransferError(FAILED, 'not a URL: %s' % redact(url))
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == 'file':
        if rest.startswith('///'):
            rest = rest[2:]
        elif rest.startswith('//localhost/'):
            rest = rest[len('//localhost'):]
        return Endpoint(scheme, '', None, None, None, rest)
    if not rest.startswith('//'):
        raise TransferError(FAILED, 'no host in URL: %s' % redact(url))
    rest = rest[2:]
    slash = rest.find('/')
    netloc, path = (rest, '') if slash < 0 else (rest[:slash], rest[slash:])
    parts = urlsplit('//' + netloc)
    try:
        port = parts.port
    except ValueError:
        raise TransferError(FAILED, 'bad port in URL: %s' % redact(url)) from None
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Endpoint(scheme, parts.hostname or '', port, user, password, path)


def remote_path(path):
    """URL path -> server path for sftp/ftp: '//abs' is absolute, '/rel' is login-relative."""
    path = decode_path(path)
    if path.startswith('/'):
        path = path[1:]
    return path or '.'


# --- credentials --------------------------------------------------------------------------------
# A credential entry may be a mapping or an object; values are looked up as attribute/key
# first, then inside its ``options`` (a mapping, or a list/set of 'flag' / 'key=value' strings).

def _lookup(obj, name):
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    if isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            item = str(item)
            if item == name:
                return True
            if item.startswith(name + '='):
                return item[len(name) + 1:]
        return None
    return getattr(obj, name, None)


def credential_value(creds, *names):
    """First non-None value among ``names`` in a credential entry (or its options)."""
    for name in names:
        value = _lookup(creds, name)
        if value is None:
            value = _lookup(_lookup(creds, 'options'), name)
        if value is not None:
            return value
    return None


def credential_flag(creds, *names, default=False):
    value = credential_value(creds, *names)
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ('', '1', 'true', 'yes', 'on')
    return bool(value)


def credential_user_password(creds):
    """(user, password) from a credential entry: explicit fields, else its ``url``."""
    user = credential_value(creds, 'user', 'username')
    password = credential_value(creds, 'password', 'passwd')
    url = _lookup(creds, 'url')
    if url is not None and (user is None or password is None):
        if isinstance(url, str):
            url = urlsplit(url)
        if user is None and getattr(url, 'username', None):
            user = unquote(url.username)
        if password is None and getattr(url, 'password', None):
            password = unquote(url.password)
    return user, password


# --- local file helpers -------------------------------------------------------------------------

class PinnedPath(str):
    """A local path (a str: drivers use it as any other) pinned to the file open as
    ``fd``: writes in place to it (a block at its offset, open_in_place) go into that
    file, whatever is at the path by then. Given as ``get``'s local_path, download.py's
    block assembly knows so which file the bytes went into, also if another instance
    replaced the temporary file meanwhile (a newer version of the file came in). The
    descriptor stays the caller's: it is duplicated, never closed here."""

    def __new__(cls, path, fd):
        self = super().__new__(cls, path)
        self.fd = fd
        return self


def open_in_place(path, flags=os.O_RDWR | os.O_CREAT | NOFOLLOW):
    """A descriptor to write into ``path`` in place: a duplicate of the one it is pinned
    to (a PinnedPath), else ``path`` opened with ``flags``."""
    fd = path.fd if isinstance(path, PinnedPath) else None
    return os.dup(fd) if fd is not None else os.open(path, flags, 0o666)


class LocalWriter:
    """Write into local_path: truncate from 0 (write_offset None) or in place at write_offset.
    A symbolic link at local_path is refused (LocalWriteError), never written through.
    The hasher's ``limit`` (fetch.py: the announced size), when it has one, is the most
    bytes written: one more is refused (bounds.TransferRefused, 413)."""

    def __init__(self, local_path, write_offset=None, hasher=None):
        self.path, self.hasher, self.count = local_path, hasher, 0
        self.limit = getattr(hasher, 'limit', None)
        self._own = None        # our read buffer (buffer()), when the hasher lends none
        try:
            self.readable = True    # the hash thread can read back what was spliced
            if write_offset is None:
                flags = os.O_CREAT | os.O_TRUNC | NOFOLLOW
                try:
                    fd = os.open(local_path, os.O_RDWR | flags, 0o666)
                except PermissionError:     # a file we may write but not read
                    fd = os.open(local_path, os.O_WRONLY | flags, 0o666)
                    self.readable = False
                self.fh = os.fdopen(fd, 'wb')
            else:
                fd = open_in_place(local_path)
                self.fh = os.fdopen(fd, 'r+b')
                self.fh.seek(write_offset)
        except OSError as e:
            if e.errno == errno.ELOOP:
                e = OSError(e.errno, 'a symbolic link is there (never written through)')
            raise LocalWriteError(local_path, e) from None

    def buffer(self, size):
        """A writable memoryview of ``size`` bytes to read the next piece into, then hand
        to write(): lent by the hasher when it hashes in another thread (it takes the
        buffer back once hashed), else one buffer of our own, reused. Reusing buffers
        spares a fresh allocation (and its page faults) per piece: on a disk file system
        that cost more than the write itself."""
        lend = getattr(self.hasher, 'borrow', None)
        if lend is not None:
            return lend(size)
        own = self._own
        if own is None or len(own) != size:
            own = self._own = memoryview(bytearray(size))
        return own

    def can_splice(self):
        """Whether splice_from() may be used: Linux, and a hasher that hashes file ranges
        (update_range) or none."""
        from sarra.transfer import splice
        return splice.AVAILABLE and throttle.pacer is None and (self.hasher is None or (
            self.readable and hasattr(self.hasher, 'update_range')))

    def splice_from(self, sock, count, timeout, shown=''):
        """Move count bytes from a plain socket straight into the file (transfer/splice.py);
        the hasher is handed each written range to hash from the page cache."""
        from sarra.transfer import splice
        if self.limit is not None and self.count + count > self.limit:
            from sarra.transfer.bounds import too_long
            raise too_long(self.count + count, self.limit, self.path)
        try:
            self.fh.flush()
            pos = self.fh.tell()
        except OSError as e:
            raise LocalWriteError(self.path, e) from None
        fd = self.fh.fileno()
        on_range = None if self.hasher is None else partial(self.hasher.update_range, fd)
        end = splice.splice_into(sock, timeout, fd, pos, count, self.path, on_range, shown,
                                 getattr(self.hasher, 'step', None), already=self.count)
        self.count += end - pos
        self.fh.seek(end)

    def expect(self, total, shown=''):
        """The body will be ``total`` bytes (None: unknown): refused at once when that is
        more than the limit (bounds.TransferRefused, 413), nothing read."""
        if self.limit is not None and total is not None and total > self.limit:
            from sarra.transfer.bounds import refuse_length
            refuse_length(total, self.limit, shown or self.path)

    def write(self, data):
        if self.limit is not None and self.count + len(data) > self.limit:
            from sarra.transfer.bounds import too_long
            raise too_long(self.count + len(data), self.limit, self.path)
        try:
            self.fh.write(data)
        except OSError as e:
            raise LocalWriteError(self.path, e) from None
        if self.hasher is not None:
            self.hasher.update(data)
        self.count += len(data)

    def close(self):
        try:
            self.fh.close()
        except OSError as e:
            raise LocalWriteError(self.path, e) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            try:
                self.fh.close()
            except OSError:
                pass


def short_read(action, got, want, shown):
    """The one TransferError for a transfer that ended before its end: '<action> failed:
    short read, got <got> of <want> bytes <shown>' (shown: the URL without password)."""
    return TransferError(FAILED, '%s failed: short read, got %d of %s bytes %s'
                         % (action, got, want, shown))


def check_source(scheme, local_path):
    """404 before an upload whose local file is not there (or not a file)."""
    if not os.path.isfile(local_path):
        raise TransferError(NOT_FOUND, '%s upload failed: 404 Not Found %s' % (scheme, local_path))


def read_blocks(read, length, bufsize):
    """The one read loop of the drivers: blocks from ``read(n)`` (n at most ``bufsize``)
    until ``length`` bytes in all (None: until a read returns nothing) or a read returns
    nothing first; the caller compares what it got with what it wanted. While this
    process is paced (kbytes_ps: throttle.pacer), the blocks are small and paid for."""
    pace = throttle.pacer
    if pace is not None:
        bufsize = pace.piece(bufsize)
    left = length
    while left is None or left > 0:
        data = read(bufsize if left is None else min(bufsize, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        yield data
        if pace is not None:
            pace.take(len(data))


def read_local(local_path, offset=0, length=None, bufsize=1 << 20):
    """Yield the bytes [offset, offset+length) of a local file in chunks of at most bufsize."""
    try:
        fh = open(local_path, 'rb')
    except FileNotFoundError:
        raise TransferError(NOT_FOUND, 'cannot send %s: 404 Not Found' % local_path) from None
    except OSError as e:
        raise TransferError(FAILED, 'cannot read %s: %s' % (local_path, e.strerror)) from None
    def read(n):
        try:
            return fh.read(n)
        except OSError as e:
            raise TransferError(FAILED, 'cannot read %s: %s' % (local_path, e.strerror)) from None

    with fh:
        if offset:
            fh.seek(offset)
        got = 0
        for data in read_blocks(read, length, bufsize):
            got += len(data)
            yield data
        if length is not None and got < length:
            raise TransferError(FAILED, 'cannot send %s: file shorter than offset %d + length %d'
                                % (local_path, offset, length))


def check_range(offset, length):
    if offset < 0 or (length is not None and length < 0):
        raise TransferError(FAILED, 'invalid byte range offset=%r length=%r' % (offset, length))


# --- base class and registry --------------------------------------------------------------------

class Transfer:
    """Common interface of all drivers. Subclasses set ``schemes`` and override what they support."""

    schemes = ()

    def __init__(self, credentials=None, timeout=300, bufsize=1 << 20, logger=None):
        # credentials: an entry (mapping/object, see credential_value) or a callable url -> entry
        self.credentials = credentials
        self.timeout = timeout
        self.bufsize = bufsize
        self.logger = logger or logging.getLogger('sarra.transfer')

    def _creds(self, url):
        c = self.credentials
        return c(url) if callable(c) else c

    def _scheme(self):
        return self.schemes[0] if self.schemes else 'transfer'

    def _unsupported(self, what):
        raise TransferError(FAILED, '%s does not support %s' % (self._scheme(), what))

    def get(self, url, local_path, offset=0, length=None, hasher=None, write_offset=None):
        """Download bytes [offset, offset+length) of url into local_path; return bytes written.
        In place (write_offset), a PinnedPath local_path is written through its descriptor."""
        self._unsupported('get')

    def put(self, local_path, url, offset=0, length=None, remote_offset=None):
        """Upload local bytes [offset, offset+length) to url (at remote_offset, or truncating)."""
        self._unsupported('put')

    def delete(self, url):
        self._unsupported('delete')

    def symlink(self, target, url):
        """Create (or replace) a symbolic link at url whose content is target."""
        self._unsupported('symlink')

    def rename(self, old_url, new_url):
        self._unsupported('rename')

    def mkdirs(self, url):
        """Create the directory url and its missing parents."""
        self._unsupported('mkdir')

    def truncate(self, url, size):
        """Cut (or extend) the remote file url to size bytes: after the last block of a
        file sent in place, so that an older, longer file there keeps no stale tail."""
        self._unsupported('truncate')

    def set_attributes(self, url, mode=None, mtime=None, atime=None):
        """Set permission bits and/or times (seconds since epoch) of url, where supported."""
        self._unsupported('set_attributes')

    def listdir(self, url, limit=100_000):
        """What directory url holds, as the protocol lists it (sr_poll parses it:
        sarra/poll/lister.py): ftp (name, facts) pairs (MLSD) or ls lines (LIST), sftp
        attributes, http the index page (str); at most limit + 1 entries are kept."""
        self._unsupported('list')

    def stat(self, url):
        """(size, mtime) of the remote file url; None for what the server does not say."""
        self._unsupported('stat')

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: URL scheme -> registered driver class (register(); a plugin may add its own)
SCHEMES = {}

#: The one lazy scheme -> driver table: URL scheme -> module registering its driver,
#: imported on first use of the scheme only (paramiko is big)
DRIVER_MODULES = {'http': 'sarra.transfer.http', 'https': 'sarra.transfer.http',
                  'sftp': 'sarra.transfer.sftp', 'ftp': 'sarra.transfer.ftp',
                  'ftps': 'sarra.transfer.ftp', 'file': 'sarra.transfer.file'}


def register(cls):
    for scheme in cls.schemes:
        SCHEMES[scheme] = cls
    return cls


def driver_class(scheme):
    """The driver class for a URL scheme, its module imported on first use; TransferError
    (499) for a scheme no driver handles."""
    scheme = scheme.lower()
    cls = SCHEMES.get(scheme)
    if cls is None and scheme in DRIVER_MODULES:
        import_module(DRIVER_MODULES[scheme])
        cls = SCHEMES.get(scheme)
    if cls is None:
        raise TransferError(FAILED, 'unsupported URL scheme: %s' % scheme)
    return cls


def for_url(url, pool, **kw):
    """Return the pooled driver for url's scheme/host/port/user, creating it with **kw."""
    ep = split_url(url)
    cls = driver_class(ep.scheme)
    key = ep.key
    drv = pool.get(key)
    if drv is None:
        drv = pool[key] = cls(**kw)
    return drv


def close_pool(pool):
    """Close every driver of a pool (errors are ignored) and empty it."""
    for drv in list(pool.values()):
        try:
            drv.close()
        except Exception:
            pass
    pool.clear()


def os_error(scheme, action, target, e):
    """TransferError for an OSError: 404 for 'no such file', else 499."""
    code = NOT_FOUND if getattr(e, 'errno', None) == errno.ENOENT else FAILED
    reason = '404 Not Found' if code == NOT_FOUND else (getattr(e, 'strerror', None) or str(e))
    return TransferError(code, '%s %s failed: %s %s' % (scheme, action, reason, target))
