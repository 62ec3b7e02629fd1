"""Fixtures shared by every test.

home          tmp HOME with XDG_CONFIG_HOME / XDG_CACHE_HOME under it (Path)
uid           short unique hex string for exchange/queue names
broker_url    session: amqp URL of the test broker (env SARRA_TEST_BROKER);
              fails (never skips) when the broker cannot be reached
amqp_channel  raw amqp channel on its own connection, closed after the test
amqp_exchange factory: declare a topic exchange, deleted after the test
amqp_tap      factory: bind a private queue to an exchange and read messages
run_cmd       run a sarra command (['sr_post', ...]) in a subprocess with
              the test HOME, without needing it installed
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


def setup_commands():
    """{command name: module in sarra/commands/}: the COMMANDS table of setup.py (read,
    not run), the one list of the commands sarra installs."""
    import ast
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "COMMANDS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no COMMANDS table")


COMMANDS = setup_commands()


# ------------------------------------------------------------------ HOME

@pytest.fixture(autouse=True)
def _no_state_host_left_over():
    """A test that loads a config with `statehost on` must not move the next test's files."""
    yield
    from sarra import paths
    paths.set_state_host(None)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private HOME for one test; XDG config/cache trees live under it."""
    h = tmp_path / "home"
    (h / ".config").mkdir(parents=True)
    (h / ".cache").mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(h / ".cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(h / ".local" / "share"))
    return h


@pytest.fixture
def uid():
    """Short unique hex string, e.g. for 'xs_guest_<uid>' or 'q_guest.<uid>'."""
    return uuid.uuid4().hex[:10]


# ------------------------------------------------------------------ broker

def parse_broker_url(url):
    """(host, port, user, password, vhost) of an amqp:// URL."""
    u = urlparse(url)
    if u.scheme not in ("amqp", "amqps"):
        raise ValueError("not an amqp URL: %s" % redact(url))
    vhost = unquote(u.path[1:]) if len(u.path) > 1 else "/"
    return (u.hostname or "127.0.0.1", u.port or 5672,
            unquote(u.username or "guest"), unquote(u.password or "guest"), vhost)


def redact(url):
    """The URL with its password replaced by '***' (sarra's one redaction)."""
    from sarra.redaction import hide_passwords
    return hide_passwords(url)


def amqp_connect(url, timeout=10):
    import amqp

    host, port, user, password, vhost = parse_broker_url(url)
    conn = amqp.Connection(host="%s:%d" % (host, port), userid=user,
                           password=password, virtual_host=vhost,
                           connect_timeout=timeout)
    conn.connect()
    return conn


@pytest.fixture(scope="session")
def broker_url():
    url = os.environ.get("SARRA_TEST_BROKER", DEFAULT_BROKER)
    host, port = parse_broker_url(url)[:2]
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        pytest.fail("broker %s unreachable (%s); start it with scripts/start-broker.sh "
                    "or set SARRA_TEST_BROKER" % (redact(url), e), pytrace=False)
    try:
        amqp_connect(url).close()
    except Exception as e:  # authentication, vhost, protocol
        pytest.fail("broker %s refused the connection: %s" % (redact(url), e),
                    pytrace=False)
    return url


@pytest.fixture
def amqp_channel(broker_url):
    """A raw amqp.Channel on its own connection; both closed afterwards."""
    conn = amqp_connect(broker_url)
    ch = conn.channel()
    try:
        yield ch
    finally:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture
def amqp_exchange(amqp_channel):
    """Factory: amqp_exchange(name) declares a topic exchange, deleted after the test."""
    declared = []

    def declare(name, type="topic", durable=False, auto_delete=False):
        amqp_channel.exchange_declare(name, type, durable=durable,
                                      auto_delete=auto_delete)
        declared.append(name)
        return name

    yield declare
    for name in declared:
        try:
            amqp_channel.exchange_delete(name)
        except Exception:
            pass


class Tap:
    """A private queue bound to an exchange, to read what a command published."""

    def __init__(self, channel, exchange, keys):
        self.channel = channel
        self.exchange = exchange
        self.queue, _, _ = channel.queue_declare(
            "", exclusive=True, auto_delete=True)
        for key in keys:
            channel.queue_bind(self.queue, exchange, key)

    def get(self, count=1, timeout=10.0):
        """Wait for count messages; returns (routing_key, body str, headers dict) tuples.

        Returns early with fewer messages when the timeout expires.
        """
        got = []
        deadline = time.monotonic() + timeout
        delay = 0.005
        while len(got) < count:
            msg = self.channel.basic_get(self.queue, no_ack=True)
            if msg is None:
                if time.monotonic() >= deadline:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            delay = 0.005
            body = msg.body.decode() if isinstance(msg.body, bytes) else msg.body
            headers = dict(msg.properties.get("application_headers") or {})
            got.append((msg.delivery_info["routing_key"], body, headers))
        return got

    def get_raw(self, timeout=10.0):
        """One amqp.Message (or None on timeout), for tests that need properties."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.channel.basic_get(self.queue, no_ack=True)
            if msg is not None or time.monotonic() >= deadline:
                return msg
            time.sleep(0.01)

    def drain(self):
        """Discard and count what is queued now."""
        n = 0
        while self.channel.basic_get(self.queue, no_ack=True) is not None:
            n += 1
        return n


@pytest.fixture
def amqp_tap(amqp_channel):
    """Factory: amqp_tap(exchange, keys=('#',)) -> Tap; queues deleted afterwards."""
    taps = []

    def make(exchange, keys=("#",)):
        if isinstance(keys, str):
            keys = (keys,)
        tap = Tap(amqp_channel, exchange, keys)
        taps.append(tap)
        return tap

    yield make
    for tap in taps:
        try:
            amqp_channel.queue_delete(tap.queue)
        except Exception:
            pass


# ------------------------------------------------------------------ commands

def command_argv(name):
    """argv prefix that runs command `name` like its installed console script."""
    module = COMMANDS.get(name)
    if module is None:
        raise ValueError("unknown sarra command %r (known: %s)"
                         % (name, ", ".join(sorted(COMMANDS))))
    code = ("import sys; sys.argv[0] = %r; "
            "from sarra.commands.%s import main; "
            "sys.exit(main())" % (name, module))
    return [sys.executable, "-c", code]


def command_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


@pytest.fixture
def run_cmd(home):
    """run_cmd(['sr_post', *args], input=None, timeout=60, env=None, cwd=None,
    check=False) -> subprocess.CompletedProcess (text).

    Runs with the test's HOME/XDG environment (the `home` fixture) and the
    repository on PYTHONPATH; env adds/overrides variables; cwd defaults to HOME.
    """

    def run(argv, input=None, timeout=60, env=None, cwd=None, check=False):
        argv = [str(a) for a in argv]
        full = command_argv(argv[0]) + argv[1:]
        result = subprocess.run(
            full, input=input, capture_output=True, text=True, timeout=timeout,
            env=command_env(env), cwd=str(cwd or home),
            stdin=None if input is not None else subprocess.DEVNULL)
        result.args = argv
        if check and result.returncode != 0:
            raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(argv), result.returncode, result.stdout, result.stderr))
        return result

    return run


# ------------------------------------------------------------------ markers, prerequisites

BROKER_FIXTURES = {"broker_url", "amqp_channel", "amqp_exchange", "amqp_tap"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "broker: needs the RabbitMQ test broker (SARRA_TEST_BROKER); set on every "
        "test that uses the broker_url fixture, directly or through another fixture; "
        "-m 'not broker' runs the rest")
    config.addinivalue_line(
        "markers", "serial: stops or restarts the shared broker: run alone, after the tests "
        "that run in parallel (make test: -m 'not serial' with pytest-xdist, then -m serial)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test (or fixture) that raises tests.support.prereq.Missing is skipped with its text:
    the machine lacks a tool, library or privilege (never the broker: that fails)."""
    from tests.support.prereq import Missing

    report = yield
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(Missing):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), (item.location[1] or 0) + 1,
                           "Skipped: missing prerequisite: %s" % call.excinfo.value)
    return report
