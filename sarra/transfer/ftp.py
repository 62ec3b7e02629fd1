"""FTP/FTPS driver: one persistent control connection per driver (NOOP-checked when idle)."""

import calendar
import ftplib
import posixpath
import ssl
import time

from . import (FAILED, NOT_FOUND, CannotDeliver, LocalWriter, Transfer, TransferError, check_range,
               check_source, credential_flag, credential_user_password, read_blocks,
               read_local, redact, register, remote_path, short_read, split_url)

_DROPPED = (OSError, EOFError)   # ssl.SSLError is an OSError


def _is_closing(e):
    return isinstance(e, ftplib.error_temp) and str(e)[:3] == '421'


class _FtpTls(ftplib.FTP_TLS):
    """FTP_TLS whose protected data connections resume the control connection's TLS
    session: servers such as vsftpd (require_ssl_reuse, its default) refuse others."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            session = getattr(self.sock, 'session', None)
            try:
                conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                                session=session)
            except BaseException:
                conn.close()
                raise
        return conn, size


@register
class FtpTransfer(Transfer):

    schemes = ('ftp', 'ftps')
    idle_check = 30  # seconds without traffic after which the connection is checked with NOOP

    def __init__(self, credentials=None, timeout=300, bufsize=1 << 20, logger=None):
        super().__init__(credentials, timeout, bufsize, logger)
        self.ftp = None
        self._key = None
        self._last = 0.0
        self._ascii = False
        self._dirs = set()

    # --- connection ---------------------------------------------------------------------------

    def _connect(self, url):
        ep = split_url(url)
        self.close()
        creds = self._creds(url)
        user, password = ep.user, ep.password
        cuser, cpassword = credential_user_password(creds)
        user = user or cuser or 'anonymous'
        if password is None:
            password = cpassword if cpassword is not None else ('anonymous@' if user == 'anonymous'
                                                                 else '')
        tls, prot_p, passive, ascii_mode = ftp_modes(creds, ep.scheme)
        where = '%s@%s:%d' % (user, ep.host, ep.port or 21)
        if tls:
            ctx = ssl.create_default_context()
            ftp = _FtpTls(context=ctx, timeout=self.timeout)
        else:
            ftp = ftplib.FTP(timeout=self.timeout)
        try:
            ftp.connect(ep.host, ep.port or 21)
            ftp.login(user, password)
            if tls and prot_p:
                ftp.prot_p()
            ftp.set_pasv(passive)
            self._ascii = ascii_mode
            ftp.voidcmd('TYPE A' if ascii_mode else 'TYPE I')
        except ftplib.error_perm as e:
            _quiet_close(ftp)
            raise TransferError(FAILED, 'ftp login failed for %s: %s' % (where, _line(e))) from None
        except (ftplib.Error, OSError, EOFError) as e:
            _quiet_close(ftp)
            raise TransferError(FAILED, 'ftp cannot connect to %s: %s' % (where, _line(e))) from None
        self.ftp, self._key, self._last = ftp, _ident(ep), time.monotonic()
        self.logger.debug('ftp: connected to %s', where)

    def _session(self, url):
        ep = split_url(url)
        if self.ftp is not None and self._key == _ident(ep) and \
                time.monotonic() - self._last > self.idle_check:
            try:
                self.ftp.voidcmd('NOOP')
            except (ftplib.Error, OSError, EOFError):
                self.logger.info('ftp: connection to %s dropped, reconnecting', redact(url))
                self.close()
        if self.ftp is None or self._key != _ident(ep):
            self._connect(url)
        return self.ftp, remote_path(ep.path)

    def _run(self, url, action, op, retry_ok=lambda: True, missing=NOT_FOUND):
        for attempt in (0, 1):
            ftp, path = self._session(url)
            try:
                return op(ftp, path)
            except TransferError:
                raise
            except ftplib.Error as e:
                if not _is_closing(e) or attempt or not retry_ok():
                    code = missing if str(e)[:3] == '550' else FAILED
                    raise TransferError(code, 'ftp %s failed: %s %s'
                                        % (action, _line(e), redact(url))) from None
            except _DROPPED as e:
                if attempt or not retry_ok():
                    self.close()
                    raise TransferError(FAILED, 'ftp %s failed: %s %s'
                                        % (action, _line(e), redact(url))) from None
            finally:
                self._last = time.monotonic()
            self.logger.info('ftp: connection to %s dropped, reconnecting', redact(url))
            self.close()

    def _end_transfer(self, ftp, early):
        """Read the transfer's final reply; after an early stop, resync the control connection."""
        try:
            ftp.getresp()
        except (ftplib.error_temp, ftplib.error_perm):
            if not early:
                raise
        if early:
            ftp.putcmd('NOOP')
            for _ in range(5):
                if ftp.getmultiline()[:3] == '200':
                    return
            raise ftplib.error_proto('lost track of the control connection')

    # --- operations ---------------------------------------------------------------------------

    def get(self, url, local_path, offset=0, length=None, hasher=None, write_offset=None):
        check_range(offset, length)
        state = {'written': 0}

        def op(ftp, path):
            if self._ascii and (offset or length is not None):
                raise TransferError(FAILED, 'ftp ascii mode does not support partitioned file '
                                    'transfers %s' % redact(url))
            conn = ftp.transfercmd('RETR ' + path, rest=offset or None)
            early = False
            with conn, LocalWriter(local_path, write_offset, hasher) as out:
                got = 0
                pending_cr = b''
                for data in read_blocks(conn.recv, length, self.bufsize):
                    got += len(data)
                    if self._ascii:
                        data, pending_cr = _from_crlf(pending_cr + data)
                    out.write(data)
                    state['written'] = out.count
                left = None if length is None else length - got
                early = left == 0           # the range is complete: stop the server's send
                out.write(pending_cr)
                if not early and isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()
            self._end_transfer(ftp, early)
            if left:
                raise short_read('ftp download', out.count, length, redact(url))
            return out.count

        return self._run(url, 'download', op, lambda: state['written'] == 0)

    def put(self, local_path, url, offset=0, length=None, remote_offset=None):
        check_range(offset, length)
        if remote_offset is not None:       # (block 0 too: it is not the whole file)
            raise CannotDeliver('ftp cannot deliver partitioned files %s' % redact(url))
        check_source('ftp', local_path)

        def op(ftp, path):
            try:
                conn = ftp.transfercmd('STOR ' + path)
            except ftplib.error_perm:
                parent = posixpath.dirname(path)
                if not parent:
                    raise
                self._mkdirs(ftp, parent)
                conn = ftp.transfercmd('STOR ' + path)
            count = 0
            with conn:
                for data in read_local(local_path, offset, length, self.bufsize):
                    count += len(data)
                    conn.sendall(data.replace(b'\n', b'\r\n') if self._ascii else data)
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()
            ftp.voidresp()
            return count

        return self._run(url, 'upload', op, missing=FAILED)

    def _mkdirs(self, ftp, path):
        prefix = '/' if path.startswith('/') else ''
        for part in [p for p in path.split('/') if p]:
            prefix = posixpath.join(prefix, part) if prefix else part
            if prefix in self._dirs:
                continue
            try:
                ftp.mkd(prefix)
            except ftplib.error_perm:
                pass  # usually "exists"; a real failure shows up in the next command
            self._dirs.add(prefix)

    def mkdirs(self, url):
        self._run(url, 'mkdir', lambda ftp, path: self._mkdirs(ftp, path), missing=FAILED)

    def delete(self, url):
        def op(ftp, path):
            try:
                ftp.delete(path)
            except ftplib.error_perm as e:
                try:
                    ftp.rmd(path)
                except ftplib.error_perm:
                    # 550 is also "permission denied": only a name that is not there is
                    # a 404 (already deleted); one still listed was refused
                    if _listed(ftp, path):
                        raise TransferError(FAILED, 'ftp delete failed: %s %s'
                                            % (_line(e), redact(url))) from None
                    raise e from None
                self._dirs.discard(path)

        self._run(url, 'delete', op)

    def rename(self, old_url, new_url):
        new_path = remote_path(split_url(new_url).path)

        def op(ftp, path):
            try:
                ftp.rename(path, new_path)
            except ftplib.error_perm:
                try:
                    ftp.delete(new_path)
                except ftplib.error_perm:
                    pass
                ftp.rename(path, new_path)

        self._run(old_url, 'rename', op)

    def set_attributes(self, url, mode=None, mtime=None, atime=None):
        def op(ftp, path):
            if mode is not None:
                ftp.voidcmd('SITE CHMOD %o %s' % (mode & 0o7777, path))
            if mtime is not None:
                ftp.voidcmd('MFMT %s %s' % (time.strftime('%Y%m%d%H%M%S', time.gmtime(mtime)),
                                            path))

        self._run(url, 'set_attributes', op, missing=FAILED)

    def listdir(self, url, limit=100_000):
        """MLSD (name, facts) pairs when the server has it, else the lines of LIST; at
        most limit + 1 kept (what comes after is read and dropped)."""
        def op(ftp, path):
            got = []
            keep = lambda item: len(got) <= limit and got.append(item)   # noqa: E731
            try:
                ftp.sendcmd('OPTS MLST type;size;modify;unix.mode;')
            except (ftplib.error_perm, ftplib.error_reply):
                pass        # the server's default facts then
            try:
                ftp.retrlines('MLSD ' + path, keep)
                return [_mlsd_pair(line) for line in got]
            except ftplib.error_perm as e:
                if str(e)[:3] not in ('500', '501', '502', '504'):
                    raise
            got.clear()
            ftp.retrlines('LIST ' + path, keep)
            return got

        return self._run(url, 'list', op)

    def stat(self, url):
        def op(ftp, path):
            size = mtime = None
            try:
                size = ftp.size(path)
            except ftplib.error_perm:
                pass
            try:
                when = ftp.voidcmd('MDTM ' + path)[4:].strip()
                mtime = calendar.timegm(time.strptime(when[:14], '%Y%m%d%H%M%S'))
            except (ftplib.error_perm, ValueError):
                pass
            return size, mtime

        return self._run(url, 'stat', op)

    def close(self):
        ftp, self.ftp, self._key = self.ftp, None, None
        self._dirs.clear()
        if ftp is not None:
            try:
                ftp.quit()
            except Exception:
                _quiet_close(ftp)


def ftp_modes(creds, scheme='ftp'):
    """(tls, prot_p, passive, ascii) from credential options; defaults: plain, passive, binary.

    Accepts both flag spellings: 'active'/'ascii' set, or 'passive'/'binary' false.
    """
    tls = scheme == 'ftps' or credential_flag(creds, 'tls', 'ssl')
    prot_p = credential_flag(creds, 'prot_p')
    passive = credential_flag(creds, 'passive', default=True) and \
        not credential_flag(creds, 'active')
    ascii_mode = credential_flag(creds, 'ascii') or not credential_flag(creds, 'binary',
                                                                        default=True)
    return tls, prot_p, passive, ascii_mode


def _mlsd_pair(line):
    """'type=file;size=3; name' -> ('name', {'type': 'file', 'size': '3'})."""
    facts, _, name = line.partition(' ')
    pairs = (f.partition('=') for f in facts.rstrip(';').split(';') if f)
    return name, {k.lower(): v for k, _, v in pairs}


def _from_crlf(data):
    """CRLF -> LF; returns (converted, trailing CR kept for the next chunk)."""
    keep = b''
    if data.endswith(b'\r'):
        data, keep = data[:-1], b'\r'
    return data.replace(b'\r\n', b'\n'), keep


def _ident(ep):
    """What a session is reused for: the endpoint and the password the URL gives (at a
    pump, a source naming the same user with a password it does not know must not get the
    session another source opened with the right one)."""
    return ep.key, ep.password


def _quiet_close(ftp):
    try:
        ftp.close()
    except Exception:
        pass


def _line(e):
    text = getattr(e, 'strerror', None) or str(e) or type(e).__name__
    return ' '.join(str(text).split())[:300]


def _listed(ftp, path):
    """Whether path's name is in the listing of its directory (False when not listable)."""
    parent, name = posixpath.split(path)
    try:
        names = ftp.nlst(parent or '.')
    except ftplib.Error:
        return False
    return any(posixpath.basename(n.rstrip('/')) == name for n in names)
