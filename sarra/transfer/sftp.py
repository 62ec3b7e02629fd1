"""SFTP driver: one paramiko SSH transport + SFTP channel per driver, reopened when it drops."""

import errno
import itertools
import os
import posixpath
import socket
import stat as statmod

import paramiko

from . import (FAILED, NOT_FOUND, LocalWriter, Transfer, TransferError, check_range,
               check_source, credential_flag, credential_user_password, credential_value,
               read_blocks, read_local, redact, register, remote_path, short_read, split_url)
from . import throttle

_CONNECTION_ERRORS = (EOFError, paramiko.SSHException, socket.error, OSError)


class _AcceptUnknownHost(paramiko.MissingHostKeyPolicy):
    """Accept hosts absent from known_hosts (a changed key still fails)."""

    def __init__(self, logger):
        self.logger = logger

    def missing_host_key(self, client, hostname, key):
        self.logger.debug('sftp: accepting unknown %s host key of %s', key.get_name(), hostname)


def _in_flight(most):
    """Read requests in flight: ``most``, or about a second's worth while this process
    is paced (kbytes_ps): the server sends no more ahead of what is read."""
    pace = throttle.pacer
    return most if pace is None else max(2, min(most, int(pace.rate) // (32 << 10)))


def _prefetch(f, end, in_flight):
    """Pipelined reads up to ``end``, at most ``in_flight`` requests at a time.  paramiko
    before 3 (Debian 12's python3-paramiko 2.12) cannot bound them: its prefetch would ask
    for the whole file at once and hold what arrives, so there the reads stay sequential."""
    try:
        f.prefetch(end, max_concurrent_requests=in_flight)
    except TypeError:
        pass


@register
class SftpTransfer(Transfer):

    schemes = ('sftp',)
    max_requests = 128  # outstanding 32 KiB read requests per download (4 MiB in flight)

    def __init__(self, credentials=None, timeout=300, bufsize=1 << 20, logger=None):
        super().__init__(credentials, timeout, bufsize, logger)
        self.client = None
        self.sftp = None
        self._key = None
        self._dirs = set()

    # --- connection ---------------------------------------------------------------------------

    @property
    def transport(self):
        return self.client.get_transport() if self.client is not None else None

    def _alive(self):
        t = self.transport
        return self.sftp is not None and t is not None and t.is_active()

    def _connect(self, url):
        ep = split_url(url)
        self.close()
        creds = self._creds(url)
        user, password = ep.user, ep.password
        cuser, cpassword = credential_user_password(creds)
        user = user or cuser
        if password is None:
            password = cpassword
        keyfile = credential_value(creds, 'ssh_keyfile')
        if keyfile:
            keyfile = os.path.expanduser(str(keyfile))
        # own_keys off (a pump fetching for a source, fetchpolicy.bare): never the
        # account's own ~/.ssh keys or agent
        own_keys = not keyfile and credential_flag(creds, 'own_keys', default=True)
        where = '%s@%s:%d' % (user or '', ep.host, ep.port or 22)
        client = paramiko.SSHClient()
        try:
            client.load_system_host_keys()
        except (OSError, paramiko.SSHException) as e:
            self.logger.warning('sftp: ignoring unreadable known_hosts: %s', e)
        client.set_missing_host_key_policy(_AcceptUnknownHost(self.logger))
        try:
            client.connect(ep.host, port=ep.port or 22, username=user, password=password,
                           key_filename=keyfile or None, allow_agent=own_keys,
                           look_for_keys=own_keys, timeout=self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout)
            transport = client.get_transport()
            transport.set_keepalive(60)
            sftp = paramiko.SFTPClient.from_transport(
                transport, window_size=max(1 << 21, 4 * self.bufsize))
            sftp.get_channel().settimeout(self.timeout)
        except paramiko.AuthenticationException:
            client.close()
            raise TransferError(FAILED, 'sftp authentication failed for %s (tried: %s)'
                                % (where, _auth_tried(password, keyfile))) from None
        except paramiko.BadHostKeyException:
            client.close()
            raise TransferError(FAILED, 'sftp host key of %s does not match known_hosts'
                                % where) from None
        except (_CONNECTION_ERRORS + (ValueError,)) as e:
            client.close()
            raise TransferError(FAILED, 'sftp cannot connect to %s: %s'
                                % (where, _reason(e))) from None
        self.client, self.sftp, self._key = client, sftp, (ep.key, ep.password)
        self.logger.debug('sftp: connected to %s', where)

    def _session(self, url):
        """The open SFTP client for url's endpoint and the server path of url."""
        ep = split_url(url)
        # a URL's own password is part of what the session was opened for: at a pump, a
        # source naming the same user with a password it does not know must not get a
        # session another source opened with the right one
        if self._key != (ep.key, ep.password) or not self._alive():
            self._connect(url)
        return self.sftp, remote_path(ep.path)

    def _run(self, url, action, op, retry_ok=lambda: True):
        """Run op(sftp, path); reconnect and retry once if the session dropped meanwhile."""
        for attempt in (0, 1):
            sftp, path = self._session(url)
            try:
                return op(sftp, path)
            except TransferError:
                raise
            except IOError as e:
                if self._alive() or attempt or not retry_ok():
                    raise _error(action, url, e) from None
            except _CONNECTION_ERRORS as e:
                if attempt or not retry_ok():
                    raise _error(action, url, e) from None
            self.logger.info('sftp: session to %s dropped, reconnecting', redact(url))
            self.close()

    # --- operations ---------------------------------------------------------------------------

    def get(self, url, local_path, offset=0, length=None, hasher=None, write_offset=None):
        check_range(offset, length)
        state = {'written': 0}

        def op(sftp, path):
            with sftp.open(path, 'rb') as f:
                size = f.stat().st_size
                want = size - offset if length is None else length
                if want < 0 or offset + want > size:
                    raise TransferError(FAILED, 'sftp download failed: range %d+%s beyond end of '
                                        '%d-byte file %s' % (offset, length, size, redact(url)))
                with LocalWriter(local_path, write_offset, hasher) as out:
                    out.expect(want, redact(url))   # longer than announced: nothing read
                    if want:
                        # pipelined reads of exactly [offset, offset+want)
                        f.seek(offset)
                        _prefetch(f, offset + want, _in_flight(self.max_requests))
                    for data in read_blocks(f.read, want, self.bufsize):
                        out.write(data)
                        state['written'] = out.count
                if out.count != want:
                    raise short_read('sftp download', out.count, want, redact(url))
                return out.count

        return self._run(url, 'download', op, lambda: state['written'] == 0)

    def put(self, local_path, url, offset=0, length=None, remote_offset=None):
        check_range(offset, length)
        check_source('sftp', local_path)

        def op(sftp, path):
            f = self._open_for_write(sftp, path, remote_offset)
            count = 0
            with f:
                f.set_pipelined(True)
                if remote_offset:
                    f.seek(remote_offset)
                for data in read_local(local_path, offset, length, self.bufsize):
                    f.write(data)
                    count += len(data)
            return count

        return self._run(url, 'upload', op)

    def _open_for_write(self, sftp, path, remote_offset):
        if remote_offset is not None:
            try:
                return sftp.open(path, 'r+', self.bufsize)
            except FileNotFoundError:
                pass
        try:
            return sftp.open(path, 'w', self.bufsize)
        except FileNotFoundError:
            parent = posixpath.dirname(path)
            if not parent:
                raise
            self._mkdirs(sftp, parent)
            return sftp.open(path, 'w', self.bufsize)

    def _mkdirs(self, sftp, path):
        if not path or path in ('/', '.') or path in self._dirs:
            return
        try:
            st = sftp.stat(path)
        except FileNotFoundError:
            self._mkdirs(sftp, posixpath.dirname(path.rstrip('/')))
            try:
                sftp.mkdir(path)
            except IOError:
                if not statmod.S_ISDIR(sftp.stat(path).st_mode):  # lost a race: fine if dir
                    raise
        else:
            if not statmod.S_ISDIR(st.st_mode):
                raise IOError(errno.ENOTDIR, 'not a directory: %s' % path)
        self._dirs.add(path)

    def mkdirs(self, url):
        self._run(url, 'mkdir', lambda sftp, path: self._mkdirs(sftp, path.rstrip('/') or '/'))

    def truncate(self, url, size):
        self._run(url, 'truncate', lambda sftp, path: sftp.truncate(path, size))

    def delete(self, url):
        def op(sftp, path):
            try:
                sftp.remove(path)
            except IOError:
                st = sftp.lstat(path)  # FileNotFoundError -> 404
                if not statmod.S_ISDIR(st.st_mode):
                    raise
                sftp.rmdir(path)
                self._dirs.discard(path)

        self._run(url, 'delete', op)

    def symlink(self, target, url):
        def op(sftp, path):
            try:
                sftp.lstat(path)
            except FileNotFoundError:
                pass
            else:
                sftp.remove(path)
            sftp.symlink(target, path)

        self._run(url, 'symlink', op)

    def rename(self, old_url, new_url):
        new_path = remote_path(split_url(new_url).path)

        def op(sftp, path):
            try:
                sftp.posix_rename(path, new_path)
            except FileNotFoundError:
                raise
            except IOError:  # server without posix-rename: replace by hand
                try:
                    sftp.remove(new_path)
                except FileNotFoundError:
                    pass
                sftp.rename(path, new_path)

        self._run(old_url, 'rename', op)

    def set_attributes(self, url, mode=None, mtime=None, atime=None):
        def op(sftp, path):
            if mode is not None:
                sftp.chmod(path, mode & 0o7777)
            if mtime is not None or atime is not None:
                st = sftp.stat(path)
                sftp.utime(path, (st.st_atime if atime is None else atime,
                                  st.st_mtime if mtime is None else mtime))

        self._run(url, 'set_attributes', op)

    def listdir(self, url, limit=100_000):
        """The SFTPAttributes of what directory url holds (at most limit + 1)."""
        def op(sftp, path):
            return list(itertools.islice(sftp.listdir_iter(path), limit + 1))

        return self._run(url, 'list', op)

    def stat(self, url):
        def op(sftp, path):
            st = sftp.stat(path)        # a directory (a link to one) has no size to fetch
            return (st.st_size if statmod.S_ISREG(st.st_mode or 0) else None), st.st_mtime

        return self._run(url, 'stat', op)

    def close(self):
        client, self.client, self.sftp, self._key = self.client, None, None, None
        self._dirs.clear()
        if client is not None:
            try:
                client.close()
            except Exception:
                pass


def _auth_tried(password, keyfile):
    """What the login offered, for the error message (never the secret itself)."""
    ways = ['key file %s' % keyfile] if keyfile else ['ssh-agent/~/.ssh keys']
    if password:
        ways.append('password')
    return ', '.join(ways)


def _reason(e):
    text = getattr(e, 'strerror', None) or str(e) or type(e).__name__
    return ' '.join(str(text).split())[:300]


def _error(action, url, e):
    if isinstance(e, FileNotFoundError) or getattr(e, 'errno', None) == errno.ENOENT:
        return TransferError(NOT_FOUND, 'sftp %s failed: 404 Not Found %s' % (action, redact(url)))
    return TransferError(FAILED, 'sftp %s failed: %s %s' % (action, _reason(e), redact(url)))
