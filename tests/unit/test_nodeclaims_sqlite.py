"""sr_winnow with nodes_state_dir: a claim store that fails (locked too long, disk full)
while a shard's journal is read before our append is one logged line, never an exception
out of winnow.settled that stops the daemon (sarra/flow/nodeclaims.py end_batch)."""

import logging
import os
import sqlite3
import types

from sarra.flow import nodeclaims, winnow
from sarra.flow.work import Result

SHARD = "q_u.sr_winnow.w.nodes.s01"


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


class FailingDb:
    """The store's connection, whose inserts fail while ``fail`` is set."""

    def __init__(self, db):
        self.db, self.fail = db, True

    def __getattr__(self, name):
        return getattr(self.db, name)

    def executemany(self, *a):
        if self.fail:
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.executemany(*a)


def _host(tmp_path, name, shared, clock):
    store = winnow.ClaimStore(str(tmp_path / name / "c.sqlite"), 1200, clock=clock, batch=True)
    log = logging.getLogger("test.nodeclaims." + name)
    return store, nodeclaims.NodeClaims(str(shared), store, log, clock=clock)


def test_a_failing_claim_store_is_logged_and_the_daemon_goes_on(tmp_path, caplog):
    clock, shared = Clock(), tmp_path / "shared"
    sa, a = _host(tmp_path, "a", shared, clock)
    sb, b = _host(tmp_path, "b", shared, clock)
    theirs = os.urandom(16)
    assert sa.claim(theirs, 1)[0]
    a.claimed(SHARD, types.SimpleNamespace(outcome=Result.DONE), theirs, 1)
    sa.flush()
    assert a.end_batch(committed=True) == 1
    # host b: its append reads a's line first, and its store refuses it
    failing = FailingDb(sb.db)
    sb.db = failing
    b.claimed(SHARD, types.SimpleNamespace(outcome=Result.DONE), os.urandom(16), 2)
    flow = types.SimpleNamespace(winnow=types.SimpleNamespace(confirmed=True, nodes=b))
    with caplog.at_level(logging.ERROR):
        winnow.settled(flow, [])            # raised sqlite3.OperationalError before
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database or disk is full" in errors[0].getMessage()
    assert SHARD in errors[0].getMessage()
    assert not sb.db.in_transaction         # the import's own transaction rolled back
    # once the store works again, a's claim is read (it was not skipped)
    failing.fail = False
    assert b.sync(SHARD) == 1
    assert not sb.claim(theirs, 2)[0]
