"""A v2 operator's habits against the real broker (issue 19, items 1 and 2): sr_post with
-pbd and a relative path run from another directory, a config whose path has escaped
spaces, and credentials.conf made with the default umask (0644) or owned by someone else.
sr_post runs as a subprocess (run_cmd) with the test's own HOME."""

import os
import urllib.parse

import pytest

from tests.conftest import parse_broker_url
from tests.integration.watchkit import watch_env  # noqa: F401  (fixture)
from tests.support import prereq

BASEURL = "http://files.example.org/"


def broker_parts(broker_url):
    host, port, user, password, vhost = parse_broker_url(broker_url)
    v = "" if vhost == "/" else urllib.parse.quote(vhost, safe="")
    q = urllib.parse.quote
    with_pw = "amqp://%s:%s@%s:%d/%s" % (q(user, safe=""), q(password, safe=""), host, port, v)
    no_pw = "amqp://%s@%s:%d/%s" % (q(user, safe=""), host, port, v)
    return with_pw, no_pw, password


def credentials(home, text, mode):
    path = home / ".config" / "sarra" / "credentials.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def relpaths(msgs):
    return sorted(urllib.parse.unquote(body.split(" ")[2]) for _, body, _ in msgs)


@pytest.fixture
def setup(tmp_path, uid, amqp_exchange, amqp_tap):
    exchange = amqp_exchange("xs_v2habits_%s" % uid, durable=True)
    tap = amqp_tap(exchange)
    data = tmp_path / "data"
    (data / "obs").mkdir(parents=True)
    (data / "obs" / "file.txt").write_bytes(b"obs\n")
    (data / "sub dir").mkdir()
    (data / "sub dir" / "with space.txt").write_bytes(b"spaced\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return exchange, tap, data, elsewhere


def test_relative_path_under_post_base_dir_from_another_directory(broker_url, run_cmd, setup):
    exchange, tap, data, elsewhere = setup
    url, _, _ = broker_parts(broker_url)
    for flag in ("-p", None):           # a -p option, and a path word
        r = run_cmd(["sr_post", "-pb", url, "-pbu", BASEURL, "-pbd", str(data), "-px",
                     exchange] + ([flag] if flag else []) + ["obs/file.txt"], cwd=elsewhere)
        assert r.returncode == 0, r.stderr
        assert relpaths(tap.get(1, timeout=10)) == ["/obs/file.txt"]
    assert tap.get(1, timeout=0.3) == []


def test_config_path_with_escaped_spaces_is_posted(broker_url, run_cmd, setup, home):
    exchange, tap, data, elsewhere = setup
    url, _, _ = broker_parts(broker_url)
    conf = home / ".config" / "sarra" / "post" / "spaced.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("post_broker %s\npost_exchange %s\npost_base_url %s\n"
                    "post_base_dir %s\n"
                    "# v2 joins a word ending in a backslash to the next one\n"
                    "path sub\\ dir/with\\ space.txt   # the one file\n"
                    % (url, exchange, BASEURL, str(data).replace(" ", "\\ ")))
    r = run_cmd(["sr_post", "-c", "spaced"], cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert relpaths(tap.get(1, timeout=10)) == ["/sub dir/with space.txt"]
    assert tap.get(1, timeout=0.3) == []


def test_0644_credentials_work_with_one_warning_and_end_0600(broker_url, run_cmd, setup, home):
    exchange, tap, data, elsewhere = setup
    with_pw, no_pw, password = broker_parts(broker_url)
    creds = credentials(home, with_pw + "\n", 0o644)       # the default umask's mode
    for _ in range(2):                     # the second run: 0600 already, no warning
        r = run_cmd(["sr_post", "-pb", no_pw, "-pbu", BASEURL, "-pbd", str(data), "-px",
                     exchange, str(data / "obs" / "file.txt")], cwd=elsewhere)
        assert r.returncode == 0, r.stderr
        assert relpaths(tap.get(1, timeout=10)) == ["/obs/file.txt"]
        warned = [ln for ln in r.stderr.splitlines() if "credentials.conf" in ln]
        if _ == 0:
            assert len(warned) == 1 and str(creds) in warned[0] and "0600" in warned[0]
        else:
            assert warned == []
    assert os.stat(creds).st_mode & 0o7777 == 0o600
    if password not in no_pw:
        assert password not in r.stderr + r.stdout


def test_credentials_of_another_user_are_refused(broker_url, run_cmd, setup, home):
    prereq.need_root("giving credentials.conf to another user (chown)")
    exchange, tap, data, elsewhere = setup
    with_pw, no_pw, password = broker_parts(broker_url)
    creds = credentials(home, with_pw + "\n", 0o644)
    os.chown(creds, 65534, 65534)          # nobody's
    r = run_cmd(["sr_post", "-pb", no_pw, "-pbu", BASEURL, "-pbd", str(data), "-px",
                 exchange, str(data / "obs" / "file.txt")], cwd=elsewhere)
    assert r.returncode == 2
    (line,) = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert str(creds) in line and line.endswith("chmod 600 %s" % creds)
    assert os.stat(creds).st_mode & 0o777 == 0o644
    assert tap.get(1, timeout=0.3) == []


def test_watch_path_relative_to_post_base_dir_with_an_escaped_space(watch_env):
    """sr_watch runs in HOME; its `path` line names a directory under post_base_dir, with a
    space in its name written as v2 does."""
    env = watch_env
    spaced = env.base / "in box"
    spaced.mkdir()
    w = env.start(root="in\\ box")
    assert "watching %s" % spaced in w.text()
    (spaced / "a.txt").write_bytes(b"a\n")
    (got,) = env.msgs.get(1)
    assert urllib.parse.unquote(got.relpath) == "/in box/a.txt"
