"""sr_watch and sr_subscribe on the same tree: no echo (the two-way 'sr_box' sync).

A subscriber marks each file it writes with the user.sr_origin extended attribute (size,
mtime and final path: sarra.watch.events.mark_written); a watch with `ignore_written on` skips
files whose marker still describes them, and posts them again as soon as they are changed or
renamed locally.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

from sarra.watch import events as watcher
from tests.conftest import command_argv, command_env
from tests.integration.watchkit import Msgs, md5, watch_env  # noqa: F401  (fixture)


def _subscriber_write(final: Path, data: bytes, mtime=1_700_000_000):
    """What a marking subscriber does: temp name, data, mtime, marker, rename."""
    tmp = final.parent / ("." + final.name + ".sarra-tmp")
    tmp.write_bytes(data)
    os.utime(tmp, (mtime, mtime))
    assert watcher.mark_written(str(tmp), str(final))
    os.replace(tmp, final)


def test_files_written_by_a_subscriber_are_not_posted_back(watch_env):
    env, root = watch_env, watch_env.root
    env.start(["ignore_written on"])
    _subscriber_write(root / "from_peer", b"peer data")
    (root / "local").write_text("mine")
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/local"
    env.msgs.none(1.0)

    with open(root / "from_peer", "ab") as f:           # changed here: now it is ours
        f.write(b" edited")
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/from_peer" and m.h["sum"] == "d," + md5(b"peer data edited")

    _subscriber_write(root / "moved_by_peer", b"x")
    watcher.mark_written(str(root / "moved_by_peer"), str(root / "moved_by_peer2"))
    os.replace(root / "moved_by_peer", root / "moved_by_peer2")      # a subscriber's move
    _subscriber_write(root / "renamed_here", b"y")
    os.rename(root / "renamed_here", root / "renamed_here2")         # a local rename
    r, p = env.msgs.get(2)
    assert (r.algo, r.relpath, r.h["newname"]) == ("R", "/watched/renamed_here",
                                                  "/watched/renamed_here2")
    assert (p.relpath, p.h["oldname"]) == ("/watched/renamed_here2", "/watched/renamed_here")
    env.msgs.none(1.0)


def test_without_ignore_written_a_subscribers_files_are_posted(watch_env):
    env, root = watch_env, watch_env.root
    env.start()                                           # e.g. re-announcing downloads
    _subscriber_write(root / "from_peer", b"peer data")
    m, = env.msgs.get(1)
    assert m.relpath == "/watched/from_peer"


class Side:
    """One machine of a two-way sync: a tree, its sr_watch and an sr_subscribe into it."""

    def __init__(self, env, name, base: Path, exchange, peer_exchange, amqp_tap):
        self.env, self.name, self.base = env, name, base
        self.tree = base / "tree"
        self.tree.mkdir(parents=True)
        self.exchange = exchange
        self.msgs = Msgs(amqp_tap(exchange))
        self.sub_name = f"s{name}{env.uid}"
        cdir = env.home / ".config" / "sarra" / "subscribe"
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / f"{self.sub_name}.conf").write_text("\n".join([
            f"broker {env.broker}", f"exchange {peer_exchange}", "expire 5m", "report_back off",
            f"directory {base}", "mirror on", "accept .*"]) + "\n")
        self.sub_out = open(env.home / f"{self.sub_name}.out", "wb")
        self.sub = None

    def start(self, http_url):
        self.watch = self.env.start(
            ["ignore_written on", r"reject .*\.tmp$", f"post_base_url {http_url}",
             f"post_exchange {self.exchange}", f"post_base_dir {self.base}"],
            name=f"w{self.name}{self.env.uid}", root=self.tree)
        self.sub = subprocess.Popen(command_argv("sr_subscribe") + ["foreground", self.sub_name],
                                    stdin=subprocess.DEVNULL, stdout=self.sub_out,
                                    stderr=subprocess.STDOUT, env=command_env(),
                                    cwd=str(self.env.home))

    def stop(self):
        if self.sub is not None and self.sub.poll() is None:
            self.sub.send_signal(signal.SIGTERM)
            try:
                self.sub.wait(15)
            except subprocess.TimeoutExpired:
                self.sub.kill()
                self.sub.wait()
        subprocess.run(command_argv("sr_subscribe") + ["cleanup", self.sub_name],
                       env=command_env(), cwd=str(self.env.home), capture_output=True,
                       timeout=60)
        self.sub_out.close()


def _wait_file(path: Path, data: bytes, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes() == data:
            return True
        time.sleep(0.1)
    return False


def test_two_way_sync_does_not_echo(watch_env, amqp_exchange, amqp_tap, http_server):
    env = watch_env
    xa = amqp_exchange(f"xs_guest_a{env.uid}", durable=True)
    xb = amqp_exchange(f"xs_guest_b{env.uid}", durable=True)
    a = Side(env, "a", http_server.root / env.uid / "a", xa, xb, amqp_tap)
    b = Side(env, "b", http_server.root / env.uid / "b", xb, xa, amqp_tap)
    try:
        a.start(f"{http_server.url}{env.uid}/a")
        b.start(f"{http_server.url}{env.uid}/b")
        time.sleep(2)                                      # subscribers bound
        (a.tree / "from_a").write_bytes(b"made on a")
        assert [m.relpath for m in a.msgs.get(1)] == ["/tree/from_a"]
        assert _wait_file(b.tree / "from_a", b"made on a")
        (b.tree / "from_b").write_bytes(b"made on b")
        assert [m.relpath for m in b.msgs.get(1)] == ["/tree/from_b"]
        assert _wait_file(a.tree / "from_b", b"made on b")
        a.msgs.none(2.0)                                  # no echo either way
        b.msgs.none(0.5)
        with open(b.tree / "from_a", "ab") as f:           # an edit on b goes back to a
            f.write(b", edited on b")
        assert [m.relpath for m in b.msgs.get(1)] == ["/tree/from_a"]
        assert _wait_file(a.tree / "from_a", b"made on a, edited on b")
        a.msgs.none(2.0)
        b.msgs.none(0.5)
    finally:
        a.stop()
        b.stop()
