"""sr_winnow's claims that follow a shard from node to node (``node_shares`` with
``nodes_state_dir``).

With node_shares every copy of a product reaches the consumer holding the product's shard
(nodeshare.py), so one host's claim store (winnow.ClaimStore, SQLite in the host's state
directory) decides alone, as long as the shard stays there. When the shard moves (its node
killed or stopped, or the Balancer handing it to a node that joined), the next node must
know the products already passed, or the copies still to come go out a second time. So
each shard keeps a journal of its claims in a directory the nodes share (``nodes_state_dir``,
e.g. NFS): ``<shard queue>.<epoch>.claims``, one line per product passed
(``<key hex> <claim time> <who>``). No lock spans hosts: the broker delivers a shard to one
consumer at a time, so one writer appends to a shard's journal at a time.

* written after the batch is committed (the posts and acks in the broker: winnow.confirmed
  gets the works committed, winnow.settled writes), the batch's claims of each shard in
  one append;
* read before a message of a shard is judged, at most once per batch and shard: one open
  and fstat (close-to-open consistency on NFS), and the lines another consumer added since
  this process last read or wrote the file, put into the host's claim store (confirmed).
  The first read of a shard reads its current journal whole (about 60 bytes a product).

A journal's epoch is int(claim time / lifetime): the files of the current and the previous
epoch hold every claim still alive, older ones are deleted by the writer. What remains
open: a node killed between the broker's commit of a batch and the append of its claims
(a few milliseconds) leaves those products unknown to the next node: a later copy of one of
them that reaches the next node goes out again (at most one batch, ``prefetch``). The
``winnow_link`` memory of first paths stays per host (a link missed is a whole post, never
a duplicate).
"""

import os
import re
import sqlite3
import time
from collections import defaultdict

from sarra.broker import shares as brokershares
from sarra.flow.work import Result

_IMPORT = ("INSERT INTO claims (k, t, who, done) VALUES (?, ?, ?, 1) ON CONFLICT (k) DO UPDATE"
           " SET t = excluded.t, who = excluded.who, done = 1 WHERE claims.t < excluded.t")
_SAFE = re.compile(r"[^A-Za-z0-9_.@-]")
_LINE = re.compile(rb"\A([0-9a-f]{32}) ([0-9]+(?:\.[0-9]+)?) (-?[0-9]{1,20})\Z")


class NodeClaims:
    """The journals of the shards of one winnow configuration, in ``directory``."""

    def __init__(self, directory: str, store, log, clock=time.time):
        self.dir = directory
        self.store = store
        self.log = log
        self.clock = clock
        self.offsets = {}           # journal path -> bytes of it this process has seen
        self.synced = set()         # shards read in this batch
        self.pending = []           # (shard, key, t, who, work) claimed in this batch
        self.epochs = {}            # shard -> the epoch of its last write
        self.imported = self.written = 0
        os.makedirs(directory, exist_ok=True)

    # ------------------------------------------------------------------ files
    def epoch(self, t: float) -> int:
        return int(t // max(1.0, self.store.lifetime))

    def path(self, shard: str, epoch: int) -> str:
        return os.path.join(self.dir, "%s.%d.claims" % (_SAFE.sub("_", shard), epoch))

    def shard_of(self, broker, work):
        delivery = getattr(work, "delivery", None)
        if delivery is None or broker is None:
            return None                 # from the retry queue: no shard
        return brokershares.queue_of(broker, delivery)

    # ------------------------------------------------------------------ reading
    def sync(self, shard) -> int:
        """Before judging a message of ``shard``: the claims other consumers wrote to its
        journals since we last looked (once per batch). Returns how many were put in."""
        if shard is None or shard in self.synced:
            return 0
        self.synced.add(shard)
        e = self.epoch(self.clock())
        n = 0
        for path in (self.path(shard, e - 1), self.path(shard, e)):
            n += self._read(path)
        return n

    def _read(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return 0
        try:
            size = os.fstat(fd).st_size
            seen = self.offsets.get(path, 0)
            if size < seen:             # rewritten: read it again
                seen = 0
            if size == seen:
                return 0
            os.lseek(fd, seen, os.SEEK_SET)
            raw = b""
            while len(raw) < size - seen:
                chunk = os.read(fd, size - seen - len(raw))
                if not chunk:
                    break
                raw += chunk
        finally:
            os.close(fd)
        whole = raw.rfind(b"\n") + 1     # a torn last line (a writer killed) waits
        n = self._import(raw[:whole].split(b"\n"))
        self.offsets[path] = seen + whole   # lines not put in (sqlite3.Error) read again
        return n

    def _import(self, lines) -> int:
        cutoff = self.clock() - self.store.lifetime
        rows = []
        for line in lines:
            m = _LINE.match(line.strip())
            if m is None:
                continue
            t = float(m.group(2))
            if t > cutoff:
                rows.append((bytes.fromhex(m.group(1).decode()), t, int(m.group(3))))
        if not rows:
            return 0
        db, run = self.store.db, self.store._retry
        own = not db.in_transaction         # in batch mode: part of the batch's transaction
        if own:
            run(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            db.executemany(_IMPORT, rows)
            if own:
                run(lambda: db.execute("COMMIT"))
        except sqlite3.Error:
            if own and db.in_transaction:   # never left open: the next BEGIN would fail
                db.execute("ROLLBACK")
            raise
        self.imported += len(rows)
        return len(rows)

    # ------------------------------------------------------------------ writing
    def claimed(self, shard, work, key: bytes, who: int) -> None:
        if shard is not None:
            self.pending.append((shard, key, self.clock(), who, work))

    def end_batch(self, committed) -> int:
        """After the batch: the claims of the works committed (a list of works; True: all
        of them; None or False: none) that were done appended to their shards' journals;
        returns how many lines were written."""
        pending, self.pending = self.pending, []
        self.synced.clear()
        if not committed:
            return 0
        ids = None if committed is True else set(map(id, committed))
        by_shard = defaultdict(list)
        for shard, key, t, who, work in pending:
            if work.outcome == Result.DONE and (ids is None or id(work) in ids):
                by_shard[shard].append(b"%s %.3f %d\n" % (key.hex().encode(), t, who))
        n = 0
        for shard, lines in by_shard.items():
            try:
                n += self._append(shard, lines)
            except (OSError, sqlite3.Error) as e:   # a locked or full database: the
                # daemon goes on (winnow.settled must not raise)
                self.log.error("winnow: cannot write the claims of shard %s in %s: %s (the "
                               "next node holding it may pass these products again)",
                               shard, self.dir, getattr(e, "strerror", None) or e)
        self.written += n
        return n

    def _append(self, shard: str, lines) -> int:
        e = self.epoch(self.clock())
        path = self.path(shard, e)
        self._read(path)                    # what came meanwhile is known, then ours
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                     | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            size = os.fstat(fd).st_size
            data = b"".join(lines)
            if size and self.offsets.get(path, 0) != size:
                data = b"\n" + data         # after a line torn by a killed writer
            os.write(fd, data)
            if os.fstat(fd).st_size == size + len(data):
                self.offsets[path] = size + len(data)
        finally:
            os.close(fd)
        if self.epochs.get(shard) != e:
            self.epochs[shard] = e
            self._drop_old(shard, e)
        return len(lines)

    def _drop_old(self, shard: str, e: int) -> None:
        prefix = _SAFE.sub("_", shard) + "."
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            if not (name.startswith(prefix) and name.endswith(".claims")):
                continue
            try:
                epoch = int(name[len(prefix):-len(".claims")])
            except ValueError:
                continue
            if epoch < e - 1:
                try:
                    os.unlink(os.path.join(self.dir, name))
                except OSError:
                    pass
                self.offsets.pop(os.path.join(self.dir, name), None)


def make(flow, store):
    """The journals of ``flow`` when node_shares and nodes_state_dir are set, else None."""
    from sarra.flow import nodeshare
    cfg = flow.cfg
    d = cfg.get("nodes_state_dir") if hasattr(cfg, "get") else None
    if not d:
        return None
    if not nodeshare.shares(cfg):
        flow.log.warning("nodes_state_dir %s is ignored without node_shares (one queue: "
                         "the claims stay in this host's state directory)", d)
        return None
    d = os.path.join(os.path.expanduser(str(d)), "winnow", cfg.name or "-")
    nc = NodeClaims(d, store, flow.log)
    flow.log.info("winnow: the claims of each shard also in %s (they follow the shard to "
                  "the next node)", d)
    return nc
