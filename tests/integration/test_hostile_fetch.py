"""Issue 16, items 1 and 5, against a whole pump (scripts/pump_demo.Pump): a hostile source
cannot make the pump fetch its own files (file: URLs, whatever the case), nor lend it the
credentials the pump holds for another user. Each attack is a raw v02 post by alice on her
own xs_ exchange; each is refused with a 403 report to alice, nothing lands in the tree or
on xpublic, and a good file from alice still reaches carol afterwards.
"""

import os
import time

import pytest

from tests.integration import pumpkit, servers
from tests.integration.pumpkit import admin_tap, good_file_reaches_carol, today

PRIVATE = b"bob's private data: not for alice\n"


def bobs_private_server(p):
    """bob's private web server: his files need his password, which the pump holds
    (credentials.conf), lent to bob alone."""
    bob = p.users["bob"]
    p.bob_pw = "B0b-http-secret"
    p.private = os.path.join(p.top, "bob_private")
    os.makedirs(os.path.join(p.private, "private"))
    with open(os.path.join(p.private, "private", "p.txt"), "wb") as f:
        f.write(PRIVATE)
    p.http["bob_private"] = servers.start_http(p.private, p.logs, auth=(bob, p.bob_pw))
    s = p.http["bob_private"]
    p.bob_private_url = "http://%s@%s:%d/" % (bob, s.host, s.port)
    p.credentials_path = os.path.join(p.cfgdir, "credentials.conf")
    with open(p.credentials_path, "a") as f:
        f.write("http://%s:%s@%s:%d source=%s\n" % (bob, p.bob_pw, s.host, s.port, bob))


@pytest.fixture(scope="module")
def pump(tmp_path_factory, broker_url):
    with pumpkit.running(tmp_path_factory, broker_url, "hostile_fetch",
                         prepare=bobs_private_server) as p:
        yield p


def publish(pump, role, posts):
    """Raw v02 posts [(baseurl, relpath, data)] by role on its own xs_ exchange."""
    pumpkit.publish_posts(pump, role, [(base, rel, pumpkit.sum_headers(data))
                                       for base, rel, data in posts])


def refusals(reports, marker):
    """The 403 reports whose relpath contains marker: [(body, headers)]."""
    return [(b, h) for b, h in reports if b.split()[3:4] == ["403"] and marker in b.split()[2]]


def test_file_urls_naming_the_pumps_credentials_are_refused(pump):
    """Item 1: file:, FILE:, File: and file://localhost base URLs naming the pump's own
    credentials.conf (every broker password) and /etc/passwd: 403 to alice, nothing
    copied, nothing announced; then a good file of alice's still arrives."""
    alice = pump.users["alice"]
    with open(pump.credentials_path, "rb") as f:
        secret = f.read()
    conn_p, public = admin_tap(pump, "xpublic")
    conn_r, xreport = admin_tap(pump, "xreport")
    try:
        posts = [(base, pump.credentials_path, secret)
                 for base in ("file:", "FILE:", "File:", "file://localhost", "fIlE://")]
        posts.append(("FILE:", "/etc/passwd", b""))
        publish(pump, "alice", posts)
        reports = xreport(timeout=20, want=len(posts))
        time.sleep(1)
        reports += xreport(timeout=0.5)
        refused = refusals(reports, "credentials.conf") + refusals(reports, "/etc/passwd")
        assert len(refused) == len(posts), (reports, pump.log_tail())
        for body, h in refused:
            assert h.get("source") == alice, h
            assert "Forbidden" in h.get("message", "") and "fetch_schemes" in h["message"], h
        published = public(timeout=2)
        assert not [b for b, _ in published if "credentials" in b or "passwd" in b], published
    finally:
        conn_p.close()
        conn_r.close()
    assert not [p for p in pump.pump_files() if "credentials" in p or "passwd" in p]
    for rel in pump.pump_files():
        with open(os.path.join(pump.tree, rel), "rb") as f:
            assert pump.pw[pump.users["feeder"]].encode() not in f.read(), rel
    good_file_reaches_carol(pump, "after_file_urls.bin")


def test_bobs_credentials_are_not_lent_to_alice(pump):
    """Item 5: alice names bob's private server as bob; the pump holds bob's password
    (lent to bob only): refused with 403, bob's file neither copied nor announced. The
    same URL posted by bob is fetched with his password and reaches carol; then a good
    file of alice's still arrives."""
    alice, bob = pump.users["alice"], pump.users["bob"]
    conn_p, public = admin_tap(pump, "xpublic")
    conn_r, xreport = admin_tap(pump, "xreport")
    try:
        publish(pump, "alice", [(pump.bob_private_url, "/private/p.txt", PRIVATE)])
        reports = xreport(timeout=20, want=1)
        refused = refusals(reports, "private/p.txt")
        assert len(refused) == 1, (reports, pump.log_tail())
        body, h = refused[0]
        assert h.get("source") == alice and "not lent to source " + alice in h["message"], h
        assert pump.bob_pw not in body + str(h)
        assert not [b for b, _ in public(timeout=2) if "private" in b]
        assert not [p for p in pump.pump_files() if "private" in p]

        # the binding works: bob's own post of his file is fetched with his password
        publish(pump, "bob", [(pump.bob_private_url, "/private/p.txt", PRIVATE)])
        want = os.path.join(pump.dst, today(), bob, "private", "p.txt")
        deadline = time.monotonic() + 30
        while not os.path.exists(want) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert os.path.exists(want), pump.log_tail()
        time.sleep(0.3)
        with open(want, "rb") as f:
            assert f.read() == PRIVATE
    finally:
        conn_p.close()
        conn_r.close()
    assert not os.path.exists(os.path.join(pump.tree, today(), alice, "private"))
    good_file_reaches_carol(pump, "after_bobs_url.bin")


def test_pumps_own_identity_and_odd_urls_refused(pump):
    """An sftp URL with no credentials lent to alice would log in with the pump account's
    own ssh keys (to the pump's own host, say); a URL with two @ is read differently by
    different parsers: both refused with 403 before any connection; then a good file of
    alice's still arrives."""
    alice = pump.users["alice"]
    port = servers.free_port()
    conn_r, xreport = admin_tap(pump, "xreport")
    try:
        publish(pump, "alice", [
            ("sftp://%s@127.0.0.1:%d/" % (os.environ.get("USER", "root"), port),
             "/own_keys/.config/sarra/credentials.conf", b"x"),
            ("http://%s@evil@127.0.0.1:%d/" % (alice, port), "/two_at/f.txt", b"x")])
        reports = xreport(timeout=20, want=2)
        keys, two_at = refusals(reports, "own_keys"), refusals(reports, "two_at")
        assert len(keys) == 1 and len(two_at) == 1, (reports, pump.log_tail())
        assert "own ssh keys" in keys[0][1]["message"], keys
        assert "more than one @" in two_at[0][1]["message"], two_at
    finally:
        conn_r.close()
    good_file_reaches_carol(pump, "after_own_keys.bin")
