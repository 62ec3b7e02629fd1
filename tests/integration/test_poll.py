"""sr_poll against real servers on loopback (HTTP index pages, FTP, SFTP through a real
sshd) and the real broker: what it announces, that a restart announces nothing twice, that
a file that grows is announced again, that a server failing mid-listing loses nothing and
duplicates nothing, hostile listed names, and vip.

Most tests run the poll's flow in this process one poll at a time (no fixed waits); the
vip tests and one more run the real `sr_poll foreground` command."""

import http.server
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from sarra.config import parser as config
from sarra.message import join_url
from sarra.flow import presets
from sarra.flow.engine import Flow
from tests.conftest import command_argv, command_env
from tests.support import prereq

LOG = logging.getLogger("test_poll")


# ------------------------------------------------------------------ helpers

class Env:
    def __init__(self, home, broker_url, exchange, tap):
        self.home, self.broker_url, self.exchange, self.tap = home, broker_url, exchange, tap
        self.pollers = []

    def conf(self, name, text):
        d = self.home / ".config" / "sarra" / "poll"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.conf").write_text(
            f"post_broker {self.broker_url}\npost_exchange {self.exchange}\n"
            f"loglevel debug\n{text}")
        return name

    def credentials(self, text):
        p = self.home / ".config" / "sarra" / "credentials.conf"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.chmod(p, 0o600)

    def poller(self, name):
        """A flow as a fresh start of sr_poll makes it (its state from disk), connected."""
        flow = Flow(config.load("poll", name), presets.preset("poll"), logger=LOG,
                    stop_event=threading.Event())
        flow.connect()
        self.pollers.append(flow)
        return flow

    def poll(self, name, poller=None, settle=0.3):
        """One poll through the engine; the (routing key, body, headers) it posted."""
        flow = poller or self.poller(name)
        flow.source._next = 0.0             # due now: no waiting for `sleep`
        batch = flow.source.get(0)
        if batch:
            flow.handle(batch)
        return self.tap.get(count=1000, timeout=settle)

    def close(self):
        for p in self.pollers:
            p.source.close()
            p.close()


@pytest.fixture
def env(home, broker_url, amqp_exchange, amqp_tap):
    exchange = amqp_exchange("xs_guest_poll_" + uuid.uuid4().hex[:8], durable=True)
    e = Env(home, broker_url, exchange, amqp_tap(exchange))
    yield e
    e.close()


def urls(msgs):
    return sorted(join_url(b.split()[1], b.split()[2]) for _, b, _ in msgs)


def check_posts(msgs, sizes):
    """Each post: sum z,d, parts 1,<size>,1,0,0 with the file's size, an mtime."""
    for _, body, h in msgs:
        name = body.split()[2].rsplit("/", 1)[-1].replace("%20", " ")
        assert h["sum"] == "z,d"
        assert h["parts"] == "1,%d,1,0,0" % sizes[name], (name, h)
        assert "mtime" in h


def grow_and_restart(env, name, root, sub, base_url):
    """The common story: first poll announces, the second nothing, a grown file once, a
    new file once, a restart nothing."""
    (root / sub).mkdir(parents=True, exist_ok=True)
    (root / sub / "a.txt").write_bytes(b"a" * 10)
    (root / sub / "b c.txt").write_bytes(b"b" * 20)
    (root / sub / "skip.tmp").write_bytes(b"x")
    p = env.poller(name)
    got = env.poll(name, p)
    assert urls(got) == [f"{base_url}a.txt", f"{base_url}b%20c.txt"]
    check_posts(got, {"a.txt": 10, "b c.txt": 20})
    assert env.poll(name, p) == []                                  # unchanged: nothing
    with open(root / sub / "a.txt", "ab") as f:
        f.write(b"more")                                             # grows between polls
    os.utime(root / sub / "a.txt", (time.time() + 120, time.time() + 120))
    got = env.poll(name, p)
    assert urls(got) == [f"{base_url}a.txt"]
    check_posts(got, {"a.txt": 14})
    assert env.poll(name, p) == []                                   # announced once
    p.close()
    (root / sub / "new.txt").write_bytes(b"n" * 3)
    got = env.poll(name)                                             # a restart
    assert urls(got) == [f"{base_url}new.txt"]
    assert env.poll(name) == []                                      # and another


# ------------------------------------------------------------------ the three protocols

def test_http_index_poll(env, http_server):
    sub = "obs-" + uuid.uuid4().hex[:6]
    name = env.conf("h", f"destination {http_server.url}\ndirectory /{sub}\n"
                         "reject .*\\.tmp$\naccept .*\n")
    grow_and_restart(env, name, http_server.root, sub, f"{http_server.url}{sub}/")


def test_ftp_poll(env, ftp_server):
    prereq.need_module("pyftpdlib", "python3-pyftpdlib")
    sub = "obs-" + uuid.uuid4().hex[:6]
    host = f"{ftp_server.host}:{ftp_server.port}"
    env.credentials(f"ftp://{ftp_server.user}:{ftp_server.password}@{host}\n")
    name = env.conf("f", f"destination ftp://{ftp_server.user}@{host}/\ndirectory {sub}\n"
                         "reject .*\\.tmp$\naccept .*\n")
    grow_and_restart(env, name, ftp_server.root, sub, f"ftp://{ftp_server.user}@{host}/{sub}/")


def test_sftp_poll(env, sftp_server):
    sub = "obs-" + uuid.uuid4().hex[:6]
    host = f"{sftp_server.user}@{sftp_server.host}:{sftp_server.port}"
    env.credentials(f"sftp://{host} ssh_keyfile={sftp_server.keyfile}\n")
    name = env.conf("s", f"destination sftp://{host}/\ndirectory {sub}\n"
                         "reject .*\\.tmp$\naccept .*\n")
    grow_and_restart(env, name, sftp_server.root, sub, f"sftp://{host}/{sub}/")


def test_sftp_links_announced_with_their_target_size(env, sftp_server):
    sub = "ln-" + uuid.uuid4().hex[:6]
    d = sftp_server.root / sub
    (d / "dir").mkdir(parents=True)
    (d / "target.bin").write_bytes(b"t" * 33)
    os.symlink("target.bin", d / "link.bin")
    os.symlink("dir", d / "dirlink")
    host = f"{sftp_server.user}@{sftp_server.host}:{sftp_server.port}"
    env.credentials(f"sftp://{host} ssh_keyfile={sftp_server.keyfile}\n")
    name = env.conf("sl", f"destination sftp://{host}/\ndirectory {sub}\naccept .*\n")
    got = env.poll(name)
    base = f"sftp://{host}/{sub}/"
    assert urls(got) == [f"{base}link.bin", f"{base}target.bin"]     # not the dir link
    check_posts(got, {"link.bin": 33, "target.bin": 33})


# ------------------------------------------------------------------ a server that fails

class Flaky(http.server.BaseHTTPRequestHandler):
    """An index page served from a dict; mode 'ok', '500' or 'drop' (the connection closes
    in the middle of the page)."""
    protocol_version = "HTTP/1.1"
    page = {}
    dates = {}
    mode = "ok"
    requests = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        Flaky.requests.append(self.path)
        if Flaky.mode == "500":
            body = b"broken"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        day = time.strftime("%d-%b-%Y %H:%M", time.gmtime(time.time() - 3600))
        rows = "".join(f'<a href="{n}">{n}</a>   {Flaky.dates.get(n, day)}   {s}\n'
                       for n, s in sorted(Flaky.page.items()))
        body = f"<html><body><pre>{rows}</pre></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if Flaky.mode == "drop":
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def flaky():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    Flaky.page, Flaky.dates, Flaky.mode, Flaky.requests = {}, {}, "ok", []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("failure", ["500", "drop"])
def test_server_failing_mid_listing_loses_and_duplicates_nothing(env, flaky, failure):
    name = env.conf("fl", f"destination {flaky}\ndirectory /d\naccept .*\n")
    Flaky.page = {"one.txt": 100, "two.txt": 200}
    p = env.poller(name)
    assert urls(env.poll(name, p)) == [f"{flaky}d/one.txt", f"{flaky}d/two.txt"]
    Flaky.mode = failure
    Flaky.page["three.txt"] = 300               # arrives while the server fails
    assert env.poll(name, p) == []
    assert env.poll(name) == []                 # a restart meanwhile changes nothing
    Flaky.mode = "ok"
    got = env.poll(name)
    assert urls(got) == [f"{flaky}d/three.txt"]
    check_posts(got, {"three.txt": 300})
    assert env.poll(name) == []


def test_hostile_names_refused_and_polling_goes_on(env, flaky, caplog):
    name = env.conf("ho", f"destination {flaky}\ndirectory /d\naccept .*\n")
    Flaky.page = {"good.txt": 5, "..%2F..%2Fetc%2Fpasswd": 6, "a%2Fb": 7, "x%01y": 8,
                  "..": 9, "n" * 300: 10, "q%3Fx": 3, "p%2541": 4}
    with caplog.at_level(logging.WARNING):
        got = env.poll(name)
    assert urls(got) == [f"{flaky}d/good.txt"]
    text = caplog.text
    assert "holds a '/'" in text and "control character" in text and "longer than" in text
    assert "p%41: a '%' or '?' in a name cannot be announced over http" in text
    assert "q?x: a '%' or '?'" in text
    Flaky.page["later.txt"] = 11
    assert urls(env.poll(name)) == [f"{flaky}d/later.txt"]


# ------------------------------------------------------------------ vip

def run_poll(name):
    return subprocess.Popen(command_argv("sr_poll") + ["foreground", name], env=command_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc):
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    return out


def stats(home, name):
    path = home / ".cache" / "sarra" / "poll" / name / f"sr_poll_{name}_01.stats"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_vip_not_here_polls_nothing(env, flaky, home):
    name = env.conf("v", f"destination {flaky}\ndirectory /d\naccept .*\nsleep 0.5\n"
                         "vip 192.0.2.77\n")
    Flaky.page = {"one.txt": 1}
    proc = run_poll(name)
    try:
        deadline = time.monotonic() + 20
        while not stats(home, name).get("standby") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stats(home, name).get("standby")
        assert env.tap.get(count=1, timeout=1.5) == []     # three polls' time: nothing
        assert Flaky.requests == []                        # not even listed
    finally:
        out = stop(proc)
    assert "standby" in out


def test_vip_here_polls(env, flaky):
    prereq.need_root("adds an address to the loopback interface")
    prereq.need_tool("ip", "iproute2")
    addr = "127.77.%d.%d" % (os.getpid() % 250, 1 + os.getpid() // 250 % 250)
    r = subprocess.run(["ip", "addr", "add", addr + "/32", "dev", "lo"], capture_output=True)
    if r.returncode:
        pytest.skip("cannot add an address to lo: " + r.stderr.decode().strip())
    try:
        name = env.conf("vh", f"destination {flaky}\ndirectory /d\naccept .*\nvip {addr}\n")
        Flaky.page = {"one.txt": 1}
        proc = run_poll(name)
        try:
            assert urls(env.tap.get(count=1, timeout=20)) == [f"{flaky}d/one.txt"]
        finally:
            stop(proc)
    finally:
        subprocess.run(["ip", "addr", "del", addr + "/32", "dev", "lo"], capture_output=True)


# ------------------------------------------------------------------ the command

def test_sr_poll_foreground(env, http_server, home):
    sub = "cmd-" + uuid.uuid4().hex[:6]
    (http_server.root / sub).mkdir()
    (http_server.root / sub / "f.txt").write_bytes(b"hello")
    env.conf("c", f"destination {http_server.url}\ndirectory /{sub}\naccept .*\nsleep 1\n")
    proc = run_poll("c")
    try:
        got = env.tap.get(count=1, timeout=20)
        assert urls(got) == [f"{http_server.url}{sub}/f.txt"]
        (http_server.root / sub / "g.txt").write_bytes(b"again")
        got = env.tap.get(count=1, timeout=20)
        assert urls(got) == [f"{http_server.url}{sub}/g.txt"]
    finally:
        out = stop(proc)
    assert env.tap.get(count=1, timeout=0.2) == []
    assert "polling http://" in out


# ------------------------------------------------------------------ FTP without MLSD: LIST

@pytest.fixture
def list_only_ftp(tmp_path):
    """A real FTP server (pyftpdlib) on loopback that has no MLSD/MLST: LIST lines only."""
    prereq.need_module("pyftpdlib", "python3-pyftpdlib")
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer
    root = tmp_path / "ftproot"
    root.mkdir()
    auth = DummyAuthorizer()
    auth.add_user("lister", "listpw", str(root), perm="elr")
    handler = type("ListOnly", (FTPHandler,), {})
    handler.authorizer = auth
    handler.proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items()
                          if k not in ("MLSD", "MLST")}
    server = FTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"handle_exit": False},
                         daemon=True)
    t.start()
    yield root, server.address[1]
    server.close_all()


def test_ftp_list_lines_when_no_mlsd(env, list_only_ftp):
    root, port = list_only_ftp
    env.credentials(f"ftp://lister:listpw@127.0.0.1:{port}\n")
    (root / "in").mkdir()
    (root / "in" / "x y.dat").write_bytes(b"x" * 7)
    (root / "in" / "deep").mkdir()
    (root / "in" / "deep" / "z.dat").write_bytes(b"z" * 9)
    os.chmod(root / "in" / "deep" / "z.dat", 0o200)        # line_mode: owner cannot read
    (root / "in" / "deep" / "r.dat").write_bytes(b"r" * 4)
    name = env.conf("l", f"destination ftp://lister@127.0.0.1:{port}/\ndirectory in\n"
                         "accept .*\n")
    got = env.poll(name)
    base = f"ftp://lister@127.0.0.1:{port}/in/"
    assert urls(got) == [f"{base}deep/r.dat", f"{base}x%20y.dat"]
    check_posts(got, {"x y.dat": 7, "r.dat": 4})
    assert env.poll(name) == []


# ------------------------------------------------------------------ options

def test_file_time_limit(env, flaky):
    old = time.strftime("%d-%b-%Y %H:%M", time.gmtime(time.time() - 100 * 86400))
    Flaky.page, Flaky.dates = {"new.txt": 1, "old.txt": 2}, {"old.txt": old}
    name = env.conf("t", f"destination {flaky}\ndirectory /d\naccept .*\n")
    assert urls(env.poll(name)) == [f"{flaky}d/new.txt"]          # default: 60 days
    name = env.conf("t2", f"destination {flaky}\nfile_time_limit 200d\ndirectory /d\n"
                          "accept .*\n")
    assert urls(env.poll(name)) == [f"{flaky}d/new.txt", f"{flaky}d/old.txt"]


def test_do_poll_plugin_posts_in_place_of_the_listing(env, flaky, home):
    plugins = home / ".config" / "sarra" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "my_poll.py").write_text(
        "def do_poll(parent):\n"
        "    parent.post(parent.post_exchange, 'http://example.com/', '/made/up.txt',\n"
        "                'here', '1,3,1,0,0', 'z,d')\n")
    name = env.conf("dp", f"destination {flaky}\ndo_poll my_poll\n")
    got = env.poll(name)
    assert urls(got) == ["http://example.com/made/up.txt"]
    assert got[0][2]["parts"] == "1,3,1,0,0" and got[0][2]["to_clusters"] == "here"
    assert Flaky.requests == []                 # no listing


def test_reload_applies_between_polls(env, flaky, home):
    Flaky.page = {"a.txt": 1, "b.txt": 2}
    conf = f"destination {flaky}\ndirectory /d\nsleep 0.3\n"
    name = env.conf("r", conf + "accept a.*\n")
    proc = run_poll(name)
    try:
        assert urls(env.tap.get(count=1, timeout=20)) == [f"{flaky}d/a.txt"]
        env.conf("r", conf + "accept .*\n")
        deadline = time.monotonic() + 10
        while not stats(home, name) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGHUP)
        assert urls(env.tap.get(count=1, timeout=20)) == [f"{flaky}d/b.txt"]
        assert env.tap.get(count=1, timeout=1) == []       # a.txt: not again
        assert proc.poll() is None                         # SIGHUP did not end it
    finally:
        out = stop(proc)
    assert "reload requested" in out


def test_sr_starts_shows_and_stops_poll_configs(env, flaky, run_cmd):
    Flaky.page = {"s.txt": 4}
    name = env.conf("srp", f"destination {flaky}\ndirectory /d\naccept .*\nsleep 0.5\n")
    try:
        r = run_cmd(["sr", "start", f"poll/{name}"], check=True)
        assert f"sr_poll {name}: 1/1 instance(s) running" in r.stdout
        assert urls(env.tap.get(count=1, timeout=20)) == [f"{flaky}d/s.txt"]
        r = run_cmd(["sr", "status"])
        assert any(line.split()[:3] == ["poll", name, "running"]
                   for line in r.stdout.splitlines()), r.stdout
    finally:
        r = run_cmd(["sr", "stop"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cmd(["sr", "status"])
    assert any(line.split()[:3] == ["poll", name, "stopped"]
               for line in r.stdout.splitlines()), r.stdout
