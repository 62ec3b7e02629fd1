"""file: driver — local copies of byte ranges, symlink, delete, rename."""

import errno
import os
import stat

from sarra.oscompat import pread, preadv, pwrite
from sarra.paths import NOFOLLOW, atomic_symlink

from . import (FAILED, Transfer, TransferError, check_range, credential_value, decode_path,
               open_in_place, os_error, register, short_read, split_url)
from . import throttle
from .bounds import refuse_length


def local_path_of(url):
    """'file:/abs/p%20q' -> '/abs/p q' (only %20 and %23 are decoded)."""
    ep = split_url(url)
    if ep.scheme != 'file':
        raise TransferError(FAILED, 'not a file: URL: %s' % url)
    return decode_path(ep.path)


def _confined(fd, src, root, shown):
    """A pump reads a source's file: URL only below root (fetchpolicy.lend), judged on the
    file opened, so that a name swapped for a link after the policy check cannot escape."""
    try:
        real = os.readlink('/proc/self/fd/%d' % fd)
    except OSError:         # no /proc: judged on the name
        real = os.path.realpath(src)
    top = os.path.realpath(root) if root else None
    if top is None or not (real == top or real.startswith(top.rstrip('/') + '/')):
        raise TransferError(FAILED, 'file download refused: %s is outside %s' % (
            shown, top or 'any allowed directory'))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise TransferError(FAILED, 'file download refused: %s is not a regular file' % shown)


def _copy_range(src, dst, offset, length, dst_offset, hasher, bufsize, action, shown,
                confine=None):
    """Copy src[offset:offset+length] into dst (truncate when dst_offset is None); with
    confine (a directory, '' for none), only a src that is really below it."""
    # confined: a FIFO or a terminal must not block or take the open
    flags = os.O_RDONLY if confine is None else os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
    try:
        sfd = os.open(src, flags)
    except OSError as e:
        raise os_error('file', action, shown, e) from None
    try:
        if confine is not None:
            _confined(sfd, src, confine, shown)
        size = os.fstat(sfd).st_size
        want = size - offset if length is None else length
        if want < 0 or offset + want > size:
            raise TransferError(FAILED, 'file %s failed: range %d+%s beyond end of %d-byte file %s'
                                % (action, offset, length, size, shown))
        refuse_length(want, getattr(hasher, 'limit', None), shown)   # longer than announced
        if _same_file(sfd, dst):
            if dst_offset not in (None, offset) or (dst_offset is None and offset):
                raise TransferError(FAILED, 'file %s failed: source and destination are the same '
                                    'file %s' % (action, shown))
            return _hash_only(sfd, offset, want, hasher, bufsize)
        # a download never writes through a symbolic link at its (temporary) name
        nofollow = NOFOLLOW if action == 'download' else 0
        try:
            if dst_offset is None:
                dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | nofollow, 0o666)
            else:
                dfd = open_in_place(dst, os.O_WRONLY | os.O_CREAT | nofollow)
        except OSError as e:
            raise TransferError(FAILED, 'file %s failed: cannot write %s: %s'
                                % (action, dst, e.strerror)) from None
        try:
            done = _pump(sfd, dfd, offset, want, dst_offset or 0, hasher, bufsize)
        except OSError as e:
            raise TransferError(FAILED, 'file %s failed: %s -> %s: %s'
                                % (action, shown, dst, e.strerror)) from None
        finally:
            os.close(dfd)
        if done != want:
            raise short_read('file ' + action, done, want, shown)
        return done
    finally:
        os.close(sfd)


def _same_file(sfd, dst):
    try:
        a, b = os.fstat(sfd), os.stat(dst)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _hash_only(fd, offset, want, hasher, bufsize):
    done = 0
    while done < want:
        data = pread(fd, min(bufsize, want - done), offset + done)
        if not data:
            break
        if hasher is not None:
            hasher.update(data)
        done += len(data)
    return done


def _pump(sfd, dfd, offset, want, dst_offset, hasher, bufsize):
    done = 0
    pace = throttle.pacer       # kbytes_ps: small pieces, each paid for
    if pace is not None:
        bufsize = pace.piece(bufsize)
    if hasher is None and pace is None and hasattr(os, 'copy_file_range'):
        try:
            while done < want:
                n = os.copy_file_range(sfd, dfd, want - done, offset + done, dst_offset + done)
                if n == 0:
                    return done
                done += n
            return done
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                               errno.EPERM):
                raise
    buf = bytearray(min(bufsize, max(want - done, 1)))
    view = memoryview(buf)
    while done < want:
        n = preadv(sfd, [view[:min(len(buf), want - done)]], offset + done)
        if n == 0:
            break
        chunk = view[:n]
        written = 0
        while written < n:
            written += pwrite(dfd, chunk[written:], dst_offset + done + written)
        if hasher is not None:
            hasher.update(chunk)
        done += n
        if pace is not None:
            pace.take(n)
    return done


@register
class FileTransfer(Transfer):

    schemes = ('file',)

    def get(self, url, local_path, offset=0, length=None, hasher=None, write_offset=None):
        check_range(offset, length)
        confine = credential_value(self._creds(url), 'confine')    # a pump: fetchpolicy.lend
        return _copy_range(local_path_of(url), local_path, offset, length, write_offset, hasher,
                           self.bufsize, 'download', url, confine)

    def put(self, local_path, url, offset=0, length=None, remote_offset=None):
        check_range(offset, length)
        dst = local_path_of(url)
        parent = os.path.dirname(dst)
        if parent and not os.path.isdir(parent):
            self._makedirs(parent, url)
        return _copy_range(local_path, dst, offset, length, remote_offset, None, self.bufsize,
                           'upload', local_path)

    def _makedirs(self, path, url):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise TransferError(FAILED, 'file mkdir failed: %s %s' % (e.strerror, url)) from None

    def mkdirs(self, url):
        self._makedirs(local_path_of(url), url)

    def truncate(self, url, size):
        try:
            os.truncate(local_path_of(url), size)
        except OSError as e:
            raise os_error('file', 'truncate', url, e) from None

    def delete(self, url):
        path = local_path_of(url)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)  # only an empty directory, never a tree
            else:
                os.unlink(path)
        except OSError as e:
            raise os_error('file', 'delete', url, e) from None

    def symlink(self, target, url):
        path = local_path_of(url)
        try:
            atomic_symlink(target, path, '%s.tmp-link-%d' % (path, os.getpid()))
        except OSError as e:
            raise os_error('file', 'symlink', url, e) from None

    def rename(self, old_url, new_url):
        try:
            os.replace(local_path_of(old_url), local_path_of(new_url))
        except OSError as e:
            raise os_error('file', 'rename', old_url, e) from None

    def set_attributes(self, url, mode=None, mtime=None, atime=None):
        path = local_path_of(url)
        try:
            if mode is not None:
                os.chmod(path, mode & 0o7777)
            if mtime is not None or atime is not None:
                st = os.stat(path)
                os.utime(path, (st.st_atime if atime is None else atime,
                                st.st_mtime if mtime is None else mtime))
        except OSError as e:
            raise os_error('file', 'set_attributes', url, e) from None
