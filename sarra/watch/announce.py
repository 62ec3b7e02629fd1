"""What sr_watch posts for a path that is ready: v02 messages built with sarra.flow.poster.

A regular file is posted block by block, every block each time the file changed (a receiver
completes a version only from all of its blocks, and copies those it already holds; a
'.Part' file is posted as the one block it holds, method p); a symbolic
link is an L post; a rename is an R post with newname, then the post of the new name with
oldname; a file a subscriber wrote (user.sr_origin marker, ``ignore_written``) is
recorded, not posted.  Posts go to ``self.batch``, published by the daemon.

:class:`Announcer` is the part of :class:`sarra.watch.daemon.Daemon` that does this; it uses
the daemon's configuration, state, pending paths and event handlers.
"""

import dataclasses
import errno
import os
import stat

from sarra import checksum
from sarra.flow.cache import cache_key
from sarra.flow.poster import PostError, file_posts, link_post, relpath_of, remove_post
from sarra.watch.state import Rec, written_path


class Announcer:
    """Daemon methods turning a ready path into posts (see the module docstring)."""

    def post_path(self, path: str) -> str:
        return os.path.realpath(path) if self.cfg.realpath_post else path

    def rel(self, path: str) -> str:
        return relpath_of(self.post_path(path), self.opts.post_base_dir)

    def post(self, build, path: str) -> bool:
        try:
            self.batch.extend(build())
            return True
        except PostError as e:
            self.report(path, str(e))
        except OSError as e:
            self.report(path, f"{path}: {e.strerror or e}")
        return False

    def announce(self, path: str, e, now: float) -> None:
        try:
            st = os.lstat(path)
        except OSError as err:
            if err.errno != errno.ENOENT:
                return self.report(path, f"{path}: cannot stat: {err.strerror}")
            if e.oldname and "delete" in self.events:       # renamed, then gone at once
                self.post(lambda: [remove_post(self.post_path(e.oldname), self.opts)], path)
            if path in self.state:                          # a removal to post (again)
                self.on_delete(path, now)
            return
        if stat.S_ISDIR(st.st_mode):
            self.scan_dir(path, now)
        elif stat.S_ISLNK(st.st_mode):
            self.announce_link(path, e, st)
        elif stat.S_ISREG(st.st_mode):
            self.announce_file(path, e, st, now)

    def _moved(self, path, e):
        """The R post of a rename (old name, with newname), when events ask for it."""
        if e.oldname and self.events & {"delete", "move"}:
            return [remove_post(self.post_path(e.oldname), self.opts, newname=self.rel(path))]
        return []

    def announce_link(self, path, e, st) -> None:
        target = os.readlink(path)
        rec = self.state.get(path)
        if rec is not None and rec.link == target and not e.oldname:
            return

        def build():
            msgs = self._moved(path, e)
            old = self.rel(e.oldname) if e.oldname else None
            if "link" in self.events:
                msgs.append(link_post(self.post_path(path), self.opts, target, oldname=old))
            if self.follow:
                try:
                    st2 = os.stat(path)
                    if stat.S_ISREG(st2.st_mode):
                        msgs += file_posts(path, self.opts, st=st2)
                except OSError:
                    pass
            return msgs
        if self.post(build, path):
            self.state.set(path, Rec(link=target))
            self.born.discard(path)

    def announce_file(self, path, e, st, now) -> None:
        if self.ignore_written:
            where = written_path(path, st)
            if where is not None and where in (path, os.path.realpath(path)):
                self.state.set(path, Rec(st.st_size, st.st_mtime_ns, foreign=True))
                self.born.discard(path)
                self.log.debug("%s: written by a sarra subscriber, not posted", path)
                return
            if where is not None and not e.oldname and where != path \
                    and not os.path.lexists(where) and self.wanted(where):
                e.oldname = where                 # a local rename of a subscriber's file
        rec = self.state.get(path)
        new = rec is None or rec.link is not None or rec.foreign
        if e.oldname:
            ok = bool(self.events & {"create", "modify", "move"})
        else:
            ok = ("create" if new else "modify") in self.events
            if not new and (rec.size, rec.mtime_ns) == (st.st_size, st.st_mtime_ns):
                return
        if not ok:
            return
        try:
            moved = self._moved(path, e)            # the R post first: its pubtime is earlier
            msgs = self.file_msgs(path, st, self.rel(e.oldname) if e.oldname else None)
            st2 = os.lstat(path)
        except (PostError, OSError) as err:
            try:
                st2 = os.lstat(path)
            except OSError:
                return                                # gone meanwhile: its delete follows
            if (st2.st_size, st2.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                self.pending.change(path, now)        # changed while read: try again later
            else:
                self.report(path, str(err) if isinstance(err, PostError)
                            else f"{path}: {err.strerror or err}")
            return
        if (st2.st_size, st2.st_mtime_ns) != (st.st_size, st.st_mtime_ns) and not e.snap:
            self.pending.change(path, now)
            return
        self.reported.discard(path)
        sums = tuple(m.headers["sum"] for m in msgs)
        parts = checksum.Parts.parse(msgs[0].headers["parts"])
        bsz = 0 if parts.whole else parts.bsz
        # every block of a changed file is posted again, the unchanged ones too: v02 cannot
        # say which blocks make up a version, so a receiver completes the new version from
        # all of them (it copies those it holds from its own copy: only the changed bytes
        # cross the network); a file touched but not changed is not posted
        same = (rec is not None and not new and not e.oldname and rec.bsz == bsz
                and rec.size == st.st_size and rec.sums == sums
                and sums[0].split(",")[0] in checksum.DATA_ALGOS)
        self.state.set(path, Rec(st.st_size, st.st_mtime_ns, bsz, sums))
        self.born.discard(path)
        if not same and rec is not None:
            self.forget_posted(msgs)
        self.batch.extend(moved if same else moved + msgs)

    def forget_posted(self, msgs) -> None:
        """suppress_duplicates: the cache's key of a block leaves out the block count and
        remainder (as v2's does), so it would drop the unchanged blocks of a file that
        grew, and a receiver could not complete the new version: forget them."""
        cache = getattr(getattr(self, "flow", None), "cache", None)
        if cache is not None:
            basis = self.cfg.suppress_duplicates_basis or "path"
            for m in msgs:
                cache.forget(cache_key(m, basis))

    def file_msgs(self, path, st, oldname):
        """Posts of a regular file; a '.Part' file is one block, posted with method p."""
        part = checksum.parse_part_suffix(os.path.basename(path))
        if part is None:
            return file_posts(self.post_path(path), self.opts, oldname=oldname, st=st)
        _target, parts, algo = part
        if st.st_size != parts.length:
            raise PostError(f"{path}: part file holds {st.st_size} bytes, its name says "
                            f"{parts.length}")
        rename = self.opts.rename
        if rename and not rename.endswith("/"):
            rename += parts.suffix(algo)
        o = dataclasses.replace(self.opts, blocksize=1, rename=rename,
                                sum=algo if algo in checksum.DATA_ALGOS else self.opts.sum)
        msgs = file_posts(self.post_path(path), o, oldname=oldname, st=st)
        for m in msgs:
            m.headers["parts"] = str(parts)
        return msgs
