"""What the whole-pump tests share: one running pump per module, and the helpers of their
attacks and checks (imported by tests/integration/test_pump.py and test_hostile_*.py).

running()          a scripts/pump_demo.Pump set up, configured, started and consuming; closed
                   after (the module fixture `pump` of tests/integration/conftest.py uses it
                   as is, a module needing its own configuration calls it with parameters)
admin_tap()        the pump's admin reading any exchange (xpublic, xreport, xr_<user>)
publish_posts()    raw v02 posts by a user on its own xs_ exchange
post_good_file(), wait_arrived(), good_file_reaches_carol()
                   a good file from alice that still reaches carol after an attack
today(), sum_headers(), in_tree(), pump_log()
"""

import contextlib
import hashlib
import os
import time

import amqp

from sarra.broker.client import Broker


@contextlib.contextmanager
def running(tmp_path_factory, broker_url, name="pump", prepare=None, start=None,
            consumers=(), **configure):
    """A whole pump: sr_police setup in a fresh vhost, its HTTP servers, its configuration
    (``configure``: Pump.configure's keywords: sarra_extra, subscribe_extra, instances),
    its processes, every standard consumer (and each queue prefix of ``consumers``, in
    which {alice}, {feeder}... stand for the pump's user names) consuming. Closed (processes stopped, vhost and users removed) on leaving.

    prepare(p): called before the configuration is written, the HTTP servers running
    (extra servers, credentials); if it returns a callable, that is called on leaving,
    before the pump is closed.
    start(p): starts the processes instead of p.start_pump()."""
    from scripts.pump_demo import Pump
    p = Pump(top=str(tmp_path_factory.mktemp(name)), broker=broker_url)
    cleanup = None
    try:
        p.setup()
        p.start_http()
        if prepare is not None:
            cleanup = prepare(p)
        p.configure(**configure)
        if start is None:
            p.start_pump()
        else:
            start(p)
        p.wait_consumers(p.standard_consumers() + [c.format(**p.users) for c in consumers])
        yield p
    finally:
        try:
            if callable(cleanup):
                cleanup()
        finally:
            p.close()


def admin_tap(pump, exchange):
    """An exclusive queue of the pump's admin bound to exchange (#): (connection, get).

    get(timeout=5.0, until=None, want=None, drain=False) returns the [(body, headers)]
    that came within timeout seconds; it stops early once until(got) holds or ``want``
    came (checked before each read; with drain, only when nothing more is waiting)."""
    conn = amqp.Connection(host=pump.netloc, userid=pump.admin, password=pump.admin_pw,
                           virtual_host=pump.vhost, connect_timeout=10)
    conn.connect()
    ch = conn.channel()
    q, _, _ = ch.queue_declare("", exclusive=True, auto_delete=True)
    ch.queue_bind(q, exchange, "#")

    def get(timeout=5.0, until=None, want=None, drain=False):
        def done():
            return ((until is not None and until(got))
                    or (want is not None and len(got) >= want))
        got, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not drain and done():
                break
            m = ch.basic_get(q, no_ack=True)
            if m is None:
                if drain and done():
                    break
                time.sleep(0.05)
                continue
            body = m.body.decode() if isinstance(m.body, bytes) else m.body
            got.append((body, dict(m.properties.get("application_headers") or {})))
        return got
    return conn, get


def today():
    return time.strftime("%Y%m%d", time.gmtime())


def sum_headers(data):
    """The sum and parts headers of a post announcing data, whole."""
    return {"sum": "d," + hashlib.md5(data).hexdigest(), "parts": "1,%d,1,0,0" % len(data)}


def publish_posts(pump, role, posts, confirm=10, key_with_name=True):
    """Raw v02 posts [(base url, relpath, headers)] by role on its own xs_ exchange, stamped
    now; the routing key is v02.post and the relpath's words (without the file's name
    unless key_with_name). Waits up to ``confirm`` seconds for the broker's confirms."""
    with Broker(pump.url(role), reconnect=False) as b:
        for base, rel, headers in posts:
            words = [w for w in rel.split("/") if w]
            if not key_with_name:
                words = words[:-1]
            b.publish("xs_" + pump.users[role], ".".join(["v02.post"] + words), "%s %s %s" % (
                time.strftime("%Y%m%d%H%M%S", time.gmtime()), base, rel), headers)
        b.wait_confirms(confirm)


def post_good_file(pump, name):
    """alice posts a good file (2 KiB, random) good/<name> with sr_post; returns
    {its relpath at carol's: md5}."""
    path = os.path.join(pump.src["alice"], "good", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = os.urandom(2048)
    with open(path, "wb") as f:
        f.write(data)
    r = pump.post("alice", [path])
    assert r.returncode == 0, r.stdout + r.stderr
    return {os.path.join(today(), pump.users["alice"], "good", name):
            hashlib.md5(data).hexdigest()}


def wait_arrived(pump, want, timeout, step=0.1):
    """Whether every file of want ({rel: md5}) is at carol's, complete, within timeout."""
    deadline = time.monotonic() + timeout
    while pump.arrived(want) != want and time.monotonic() < deadline:
        time.sleep(step)
    return pump.arrived(want) == want


def good_file_reaches_carol(pump, name):
    """alice posts a good file with sr_post: it reaches carol intact."""
    want = post_good_file(pump, name)
    assert pump.wait_files(want, 30) == 1, pump.log_tail()
    assert wait_arrived(pump, want, 10, step=0.2)


def in_tree(pump, marker):
    """The pump's files (relpaths in its tree) whose name contains marker."""
    return [p for p in pump.pump_files() if marker in p]


def pump_log(pump, key="sarra"):
    """The text of the log of the pump's process ``key`` (sarra, subscribe, rr_...)."""
    with open(os.path.join(pump.logs, key + ".log"), encoding="utf-8",
              errors="replace") as f:
        return f.read()


def files_of(pump, role, names, size=2048):
    """Files of random bytes in the role's source tree under q/: {name: md5}."""
    d = os.path.join(pump.src[role], "q")
    os.makedirs(d, exist_ok=True)
    out = {}
    for name in names:
        data = os.urandom(size)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        out[name] = hashlib.md5(data).hexdigest()
    return out


def at_carol(pump, role, files):
    """Where files_of's files land in a subscriber's tree (day/user/q/name): {path: md5}."""
    return {os.path.join(today(), pump.users[role], "q", n): s for n, s in files.items()}
