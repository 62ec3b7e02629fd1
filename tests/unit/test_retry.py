import json
import logging
import os

import pytest

from sarra.flow.retry import RetryQueue


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def body(rel):
    return f"20240101000000.5 http://h/ {rel}"


HDRS = {"sum": "d," + "a" * 32, "parts": "1,10,1,0,0"}


@pytest.fixture
def qpath(tmp_path):
    return str(tmp_path / "state" / "retry_001.jsonl")


def new_q(path, clock, **kw):
    kw.setdefault("jitter", 0.0)
    return RetryQueue(path, ttl=kw.pop("ttl", 3600), clock=clock, **kw)


def test_add_is_on_disk_before_return(qpath):
    clock = Clock()
    q = new_q(qpath, clock)
    e = q.add("v02.post.a", body("a/x.txt"), HDRS, "xpublic")
    # read the file with a separate handle: the record is already there
    recs = [json.loads(line) for line in open(qpath)]
    assert recs[0]["op"] == "add" and recs[0]["id"] == e.id
    assert recs[0]["rk"] == "v02.post.a" and recs[0]["headers"] == HDRS
    assert oct(os.stat(qpath).st_mode & 0o777) == "0o600"
    assert len(q) == 1


def test_crash_and_reopen_keeps_state(qpath):
    clock = Clock()
    q = new_q(qpath, clock)
    a = q.add("v02.post.a", body("a"), HDRS, "xs_u")
    b = q.add("v02.post.b", body("b"), {"sum": "d," + "b" * 32}, "xs_u", attempts_so_far=2)
    c = q.add("v02.post.c", body("c"), HDRS, "xs_u")
    clock.t += 1
    q.done(a)
    clock.t += 10
    assert q.failed(c)
    # no close(): simulate a crash by opening the file again
    q2 = new_q(qpath, clock)
    assert len(q2) == 2
    assert q2.next_due_in() == 0          # b was due at +4 s
    clock.t += 2                          # c is due 2 s after its failure
    got = {e.routing_key: e for e in q2.due(limit=10)}
    assert set(got) == {"v02.post.b", "v02.post.c"}
    assert got["v02.post.b"].attempts == 2 and got["v02.post.b"].exchange == "xs_u"
    assert got["v02.post.b"].headers == {"sum": "d," + "b" * 32}
    assert got["v02.post.c"].attempts == 1
    assert got["v02.post.c"].next_try == pytest.approx(c.next_try)
    # new ids do not collide with the old ones
    d = q2.add("v02.post.d", body("d"), HDRS, "x")
    assert d.id > max(b.id, c.id)


def test_torn_last_line_is_ignored_and_cut(qpath, caplog):
    clock = Clock()
    q = new_q(qpath, clock)
    q.add("v02.post.a", body("a"), HDRS, "x")
    q.close()
    with open(qpath, "ab") as f:
        f.write(b'{"op":"add","id":2,"rk":"v02.po')        # crash in the middle of a write
    caplog.set_level(logging.WARNING)
    q2 = new_q(qpath, clock)
    assert len(q2) == 1
    q2.add("v02.post.b", body("b"), HDRS, "x")
    q3 = new_q(qpath, clock)
    assert len(q3) == 2
    for line in open(qpath):
        json.loads(line)      # every line is whole again


def test_corrupt_middle_line_warns_once(qpath, caplog):
    os.makedirs(os.path.dirname(qpath))
    with open(qpath, "w") as f:
        f.write('{"op":"add","id":1,"rk":"k","body":"t u r","headers":{},"exchange":"x",'
                '"attempts":0,"first":1000000,"next":1000001}\n')
        f.write("not json\n")
        f.write('{"op":"frob","id":3}\n')
        f.write('{"op":"add","id":4,"rk":"k2","body":"t u r2","headers":{},"exchange":"x",'
                '"attempts":0,"first":1000000,"next":1000001}\n')
    caplog.set_level(logging.WARNING, logger="sarra.retry")
    q = new_q(qpath, Clock())
    assert len(q) == 2
    w = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(w) == 1 and f"{qpath}:2:" in w[0] and "2 in all" in w[0]


def test_backoff_growth_and_cap():
    q = RetryQueue("/nonexistent/never/written", ttl=0, base_delay=1.0, max_delay=300.0,
                   jitter=0.0)
    assert [q.backoff(n) for n in range(5)] == [1, 2, 4, 8, 16]
    assert q.backoff(8) == 256
    assert q.backoff(9) == 300 and q.backoff(1000) == 300
    qj = RetryQueue("/nonexistent/never/written", ttl=0, jitter=0.1)
    samples = [qj.backoff(3) for _ in range(200)]
    assert all(8 <= s <= 8.8 for s in samples)
    assert len(set(samples)) > 1


def test_due_ordering_and_failed_reschedules(qpath):
    clock = Clock()
    q = new_q(qpath, clock)
    a = q.add("a", body("a"), HDRS, "x", attempts_so_far=3)   # due in 8 s
    b = q.add("b", body("b"), HDRS, "x")                      # due in 1 s
    c = q.add("c", body("c"), HDRS, "x", attempts_so_far=1)   # due in 2 s
    assert q.due() == []
    assert q.next_due_in() == pytest.approx(1.0)
    clock.t += 2
    assert [e.routing_key for e in q.due(limit=5)] == ["b", "c"]
    assert [e.routing_key for e in q.due(limit=1)] == ["b"]     # not removed by due()
    assert q.failed(b)                                         # attempts 1 -> next in 2 s
    assert b.attempts == 1
    assert [e.routing_key for e in q.due(limit=5)] == ["c"]
    q.done(c)
    assert q.next_due_in() == pytest.approx(2.0)
    clock.t += 6
    assert [e.routing_key for e in q.due(limit=5)] == ["b", "a"]
    q.done(a)
    q.done(b)
    q.done(b)        # twice is harmless
    assert len(q) == 0 and q.next_due_in() is None and q.due() == []


def test_ttl_expiry(qpath, caplog):
    clock = Clock()
    q = new_q(qpath, clock, ttl=60)
    e = q.add("v02.post.a", body("dir/file.txt"), HDRS, "x")
    clock.t += 30
    assert q.due() == [e]
    assert q.failed(e)
    caplog.set_level(logging.WARNING, logger="sarra.retry")
    clock.t += 31
    assert q.due(limit=5) == []
    assert len(q) == 0
    assert any("retry expired for dir/file.txt" in r.getMessage() for r in caplog.records)
    assert len(new_q(qpath, clock, ttl=60)) == 0     # the drop was persisted
    f = q.add("k", body("other"), HDRS, "x")
    clock.t += 61
    assert q.failed(f) is False and len(q) == 0


def test_compaction(qpath, monkeypatch):
    import sarra.flow.retry as mod
    monkeypatch.setattr(mod, "MIN_COMPACT", 4)
    clock = Clock()
    q = new_q(qpath, clock)
    keep = q.add("keep", body("keep"), HDRS, "x")
    for i in range(20):
        e = q.add(f"k{i}", body(f"k{i}"), HDRS, "x")
        q.done(e)
    n = len(open(qpath).read().splitlines())
    assert n < 41                       # 20 adds + 20 dels + 1 would be 41 without compaction
    assert not [f for f in os.listdir(os.path.dirname(qpath)) if f.endswith(".tmp")]
    q2 = new_q(qpath, clock)
    assert len(q2) == 1
    clock.t += 5
    assert q2.due()[0].routing_key == "keep" and q2.due()[0].id == keep.id
