"""The winnow step without a broker: the claim store (first writer wins across processes,
expiry, persistence, redelivered claims, confirmed marks, links), link announcements, the
flow with the winnow preset and fake queues, and what the subscriber's download step does
with a winnow link (the transaction winnow posts in: test_batchtx.py)."""

import hashlib
import multiprocessing
import os

import pytest

from sarra import checksum, message
from sarra.flow import presets as components, batchtx, download, winnow
from sarra.config import parser as config
from sarra.broker.client import Delivery, DeliveryTag
from sarra.flow.cache import cache_key
from sarra.flow.engine import Flow
from sarra.flow.work import Outcome, Work
from tests.support.flowfakes import FakeConsumer, FakeReporter


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def store_at(tmp_path, lifetime=60.0, clock=None):
    return winnow.ClaimStore(str(tmp_path / "state" / winnow.STORE_NAME), lifetime,
                             clock=clock or Clock())


K1, K2 = winnow.digest("d,1", "/a"), winnow.digest("d,2", "/b")


# ------------------------------------------------------------------ claim store

def test_first_writer_wins_and_later_ones_are_duplicates(tmp_path):
    s = store_at(tmp_path)
    assert s.claim(K1, who=1) == (True, None)
    assert s.claim(K1, who=2) == (False, None)
    assert s.claim(K1, who=1) == (False, None)        # not a redelivery: the same post twice
    assert s.claim(K2, who=2) == (True, None)
    assert s.stats() == {"hits": 2, "misses": 2, "links": 0, "reclaims": 0, "size": 2}
    assert K1 in s and winnow.digest("x") not in s


def test_a_redelivered_announcement_finds_its_own_claim(tmp_path):
    s = store_at(tmp_path)
    assert s.claim(K1, who=7)[0]
    assert s.claim(K1, who=8, again=True)[0] is False     # another copy, even redelivered
    assert s.claim(K1, who=7, again=True)[0] is True      # its own, not confirmed
    assert s.reclaims == 1
    s.check_and_add(K1)                                   # its post was confirmed
    assert s.claim(K1, who=7, again=True)[0] is True      # not flushed yet
    s.flush()
    assert s.claim(K1, who=7, again=True)[0] is False     # confirmed: never again


def test_entries_expire_after_their_lifetime(tmp_path):
    clock = Clock()
    s = store_at(tmp_path, lifetime=10, clock=clock)
    assert s.claim(K1, 1)[0]
    clock.t += 9.9
    assert not s.claim(K1, 2)[0]                          # a hit does not refresh the entry
    clock.t += 0.2
    assert s.claim(K1, 2)[0]
    assert not s.claim(K1, 1, again=True)[0]              # the new claim is who=2's
    clock.t += 10.1
    s.claim(K2, 3)
    assert len(s) == 1 and s.sweep(force=True) == 1 and len(s) == 1
    assert s.sweep() == 0                                 # at most once a minute


def test_claims_survive_reopening(tmp_path):
    clock = Clock()
    s = store_at(tmp_path, clock=clock)
    s.claim(K1, 1)
    s.close()
    s = store_at(tmp_path, clock=clock)
    assert not s.claim(K1, 2)[0]
    assert s.claim(K1, 1, again=True)[0]
    assert oct(os.stat(s.path).st_mode & 0o777) == "0o600"


def test_links_remember_the_first_path_of_a_checksum(tmp_path):
    clock = Clock()
    s = store_at(tmp_path, lifetime=10, clock=clock)
    sk = winnow.digest("d,abc")
    assert s.claim(winnow.digest("d,abc", "/a/x"), 1, sumkey=sk, path="/a/x") == (True, None)
    assert s.claim(winnow.digest("d,abc", "/b/y"), 2, sumkey=sk, path="/b/y") == (True, "/a/x")
    # a re-claim of the first path's own claim does not link to itself
    assert s.claim(winnow.digest("d,abc", "/a/x"), 1, again=True, sumkey=sk,
                   path="/a/x") == (True, None)
    clock.t += 11                                          # the first copy's entry expired
    assert s.claim(winnow.digest("d,abc", "/c/z"), 3, sumkey=sk, path="/c/z") == (True, None)
    assert s.links == 1


def test_batch_mode_claims_are_one_transaction(tmp_path):
    a = store_at(tmp_path)
    a.batch = True
    b = store_at(tmp_path)
    b.timeout = 0.05
    assert a.claim(K1, 1)[0] and a.claim(K2, 1)[0]
    with pytest.raises(Exception, match="locked"):
        b.claim(K1, 2)                      # a holds the write lock until its flush
    a.flush()
    assert b.claim(K1, 2) == (False, None) and b.claim(K2, 2) == (False, None)
    a.claim(winnow.digest("x"), 1)
    a.close()                               # never flushed: rolled back
    assert b.claim(winnow.digest("x"), 2)[0]


def _racer(path, who, keys, go, out):
    import random
    s = winnow.ClaimStore(path, 600)
    keys = list(keys)
    random.Random(who).shuffle(keys)          # each in its own order: they meet everywhere
    go.wait(30)
    out.put([k for k in keys if s.claim(k, who)[0]])


def test_two_processes_never_both_claim_a_key(tmp_path):
    path = str(tmp_path / winnow.STORE_NAME)
    winnow.ClaimStore(path, 600).close()
    keys = [winnow.digest(str(i)) for i in range(3000)]
    ctx = multiprocessing.get_context("fork")
    out, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_racer, args=(path, who, keys, go, out)) for who in (1, 2)]
    for p in procs:
        p.start()
    go.set()
    won = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert len(won[0]) + len(won[1]) == len(keys)
    assert not set(won[0]) & set(won[1])
    assert won[0] and won[1]                              # they did race


# ------------------------------------------------------------------ keys and link posts

def post(relpath, sumstr="d," + "0" * 32, parts="1,10,1,0,0", exchange="xa", **extra):
    h = {"sum": sumstr, "mtime": "20240101000000.5", **extra}
    if parts:
        h["parts"] = parts
    return message.make_post("20240101000000.0", "http://src/", relpath, h, exchange=exchange)


def test_keys_follow_the_duplicate_cache_rules():
    a, b = post("/x/f.dat"), post("/y/f.dat")
    assert cache_key(a, "path") != cache_key(b, "path")
    assert cache_key(a, "name") == cache_key(b, "name")
    assert cache_key(a, "data") == cache_key(post("/z/g", exchange="xb"), "data")
    assert winnow.key_digest(cache_key(a)) == winnow.key_digest(cache_key(post("/x/f.dat")))
    assert winnow.who_of(a) != winnow.who_of(post("/x/f.dat", exchange="xb"))
    assert winnow.who_of(a) == winnow.who_of(post("/x/f.dat"))


@pytest.mark.parametrize("sumstr,parts,ok", [
    ("d," + "0" * 32, "1,10,1,0,0", True),
    ("s," + "0" * 128, "1,10,1,0,0", True),
    ("n," + "0" * 32, "1,10,1,0,0", False),      # a name, not the data
    ("0,1234", "1,10,1,0,0", False),
    ("z,d", "1,10,1,0,0", False),
    ("d," + "0" * 32, "i,4,3,2,1", False),       # one block only
    ("L," + "0" * 128, None, False),
])
def test_only_whole_files_with_data_sums_are_linked(sumstr, parts, ok):
    assert winnow.linkable(post("/a/b", sumstr, parts)) is ok


@pytest.mark.parametrize("earlier,new,link", [
    ("/a/x.dat", "/b/y.dat", "../a/x.dat"),
    ("/a/x.dat", "/a/y.dat", "x.dat"),
    ("/x.dat", "/b/c/y.dat", "../../x.dat"),
    ("/a/b/x.dat", "/y.dat", "a/b/x.dat"),
])
def test_link_post_points_at_the_earlier_path(earlier, new, link):
    m = post(new, mode="644")
    lp = winnow.link_post(m, earlier)
    assert lp.headers["link"] == link
    assert lp.headers["sum"] == "L," + hashlib.sha512(link.encode()).hexdigest()
    assert lp.headers["link_sum"] == m.headers["sum"]
    assert {k: lp.headers[k] for k in ("parts", "mtime", "mode")} == \
        {k: m.headers[k] for k in ("parts", "mtime", "mode")}
    assert (lp.pubtime, lp.baseurl, lp.relpath, lp.topic) == \
        (m.pubtime, m.baseurl, m.relpath, m.topic)
    assert m.headers["sum"].startswith("d,")              # the original is left alone
    message.decode(*lp.encode(), "xo")                    # a valid v02 post


def test_no_link_post_when_the_link_is_too_long():
    assert winnow.link_post(post("/b/y"), "/" + "d" * 300 + "/x") is None


def test_same_broker():
    assert batchtx.same_broker("amqp://u:p@H:5672/", "amqp://u@h/")
    assert not batchtx.same_broker("amqp://u@h/", "amqp://v@h/")
    assert not batchtx.same_broker("amqp://u@h/", "amqp://u@h/other")
    assert not batchtx.same_broker("amqp://u@h/", "amqps://u@h/")
    assert not batchtx.same_broker("amqp://u@h/", None)


# ------------------------------------------------------------------ the flow, confirm mode

class FakePostBroker:
    def __init__(self):
        self.published, self.confirmed, self.fail = [], 0, False

    def publish(self, exchange, topic, body, headers, persistent=True, expiration=None):
        self.published.append((exchange, body.split()[2], headers["sum"]))

    def wait_confirms(self, timeout=30):
        if self.fail:
            from sarra.broker.client import BrokerError
            raise BrokerError("not confirmed")
        self.confirmed = len(self.published)

    def close(self):
        pass


_tag = iter(range(1, 10 ** 6))


def delivery(relpath, data=b"x", exchange="xa", redelivered=False, pubtime="20240101000000.0"):
    h = {"sum": "d," + hashlib.md5(data).hexdigest(), "parts": f"1,{len(data)},1,0,0"}
    topic, body, hdrs = message.make_post(pubtime, "http://h/", relpath, h).encode()
    return Delivery(exchange, topic, body, body.encode(), hdrs, DeliveryTag(next(_tag), 0),
                    redelivered, {})


def winnow_flow(home, extra=()):
    cfg = config.load("winnow", None, [("broker", "amqp://u:p@localhost/"),
                                       ("post_broker", "amqp://u:p@elsewhere/"),
                                       ("exchange", "xa"), ("post_exchange", "xo"), *extra])
    flow = Flow(cfg, components.preset("winnow"))
    flow.consumer, flow.reporter = FakeConsumer(), FakeReporter()
    flow.post_broker = FakePostBroker()
    winnow.connected(flow)
    return flow


def run(flow, *deliveries):
    flow.consumer.inbox.extend(deliveries)
    while flow.consumer.inbox:
        batch = flow.gather()
        if batch:
            flow.handle(batch)


def test_flow_posts_first_copies_and_drops_the_others(home):
    flow = winnow_flow(home)
    assert not flow.winnow.tx and isinstance(flow.cache, winnow.ClaimStore)
    run(flow, delivery("/a", b"1"), delivery("/a", b"1", exchange="xb"), delivery("/b", b"2"),
        delivery("/a", b"other data"))
    pb = flow.post_broker
    assert [p[1] for p in pb.published] == ["/a", "/b", "/a"] and pb.confirmed == 3
    assert flow.consumer.acked == ["/a", "/a", "/b", "/a"]
    assert flow.reporter.sent == [("/a", 201), ("/a", 304), ("/b", 201), ("/a", 201)]
    assert flow.counters["duplicates"] == 1 and flow.counters["posted"] == 3
    # confirmed claims are marked: the same announcement redelivered is not posted again
    run(flow, delivery("/b", b"2", redelivered=True))
    assert len(pb.published) == 3


def test_an_unconfirmed_post_is_posted_again_when_redelivered(home):
    flow = winnow_flow(home)
    flow.post_broker.fail = True
    d = delivery("/a", b"1")
    run(flow, d)
    assert flow.consumer.requeued == ["/a"] and flow.consumer.acked == []
    flow.post_broker.fail = False
    run(flow, delivery("/a", b"1", exchange="xb"))        # the other copy meanwhile
    run(flow, Delivery(d.exchange, d.routing_key, d.body, d.raw, d.headers,
                       DeliveryTag(next(_tag), 0), True, {}))
    assert [p[1] for p in flow.post_broker.published] == ["/a", "/a"]   # sent, then resent
    assert flow.reporter.sent[-2:] == [("/a", 304), ("/a", 201)]
    assert flow.counters["reclaimed"] == 1


def test_flow_link_posts(home):
    flow = winnow_flow(home, [("winnow_link", "on")])
    run(flow, delivery("/a/x", b"same"), delivery("/b/y", b"same", exchange="xb"),
        delivery("/b/y", b"same"))
    pub = flow.post_broker.published
    assert [(p[1], p[2][:2]) for p in pub] == [("/a/x", "d,"), ("/b/y", "L,")]
    assert flow.counters["linked"] == 1


def test_cache_off_still_winnows(home):
    flow = winnow_flow(home, [("suppress_duplicates", "off")])
    assert flow.cache.lifetime == winnow.DEFAULT_LIFETIME


# ------------------------------------------------------------------ subscribers and links

def sub_flow(home, dst, extra=()):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", str(dst)), ("mirror", "on"), *extra])
    flow = Flow(cfg, components.preset("subscribe"))
    flow.reporter = FakeReporter()
    return flow


def link_work(src, data, new="/b/y.dat", link="../a/x.dat", link_sum=None):
    h = {"sum": "L," + checksum.name_sum("L", link), "link": link,
         "link_sum": link_sum or "d," + hashlib.md5(data).hexdigest(),
         "parts": f"1,{len(data)},1,0,0", "mtime": "20240101000000.5"}
    return Work(message.make_post("20240101000000.0", f"file:{src}", new, h))


def test_subscriber_links_to_its_copy_of_the_earlier_path(home, tmp_path):
    dst, data = tmp_path / "dst", b"radar scan"
    (dst / "a").mkdir(parents=True)
    (dst / "a" / "x.dat").write_bytes(data)
    flow = sub_flow(home, dst)
    w = link_work(tmp_path / "nowhere", data)
    download.destination(flow, w)
    download.download(flow, w)
    assert os.readlink(dst / "b" / "y.dat") == "../a/x.dat"
    assert (w.code, w.text) == (201, "Linked")


@pytest.mark.parametrize("case", ["missing", "different", "rejected"])
def test_subscriber_downloads_when_it_has_no_good_copy(home, tmp_path, case):
    src, dst, data = tmp_path / "src", tmp_path / "dst", b"radar scan"
    (src / "b").mkdir(parents=True)
    (src / "b" / "y.dat").write_bytes(data)
    extra = ()
    if case == "different":
        (dst / "a").mkdir(parents=True)
        (dst / "a" / "x.dat").write_bytes(b"older scan")
    elif case == "rejected":
        (dst / "a").mkdir(parents=True)
        (dst / "a" / "x.dat").write_bytes(data)
        extra = (("reject", ".*/a/.*"), ("accept", ".*"))
    flow = sub_flow(home, dst, extra)
    w = link_work(src, data)
    download.destination(flow, w)
    download.download(flow, w)
    y = dst / "b" / "y.dat"
    assert not os.path.islink(y) and y.read_bytes() == data
    assert (w.code, w.text) == (201, "Downloaded")
    assert w.msg.headers["sum"] == "d," + hashlib.md5(data).hexdigest()
    assert "link" not in w.msg.headers and "link_sum" not in w.msg.headers


def test_subscriber_refuses_a_winnow_link_without_parts(home, tmp_path):
    flow = sub_flow(home, tmp_path / "dst")
    w = link_work(tmp_path, b"x")
    del w.msg.headers["parts"]
    download.destination(flow, w)
    with pytest.raises(Outcome) as e:
        download.download(flow, w)
    assert e.value.code == 499


def test_plain_symlink_posts_are_unchanged(home, tmp_path):
    flow = sub_flow(home, tmp_path / "dst")
    w = link_work(tmp_path, b"x", link="../anywhere")     # inside dst: a link out is refused
    del w.msg.headers["link_sum"]
    download.destination(flow, w)
    download.download(flow, w)
    assert os.readlink(tmp_path / "dst" / "b" / "y.dat") == "../anywhere"
