"""sr_post end to end against the real broker (issue 2, items 2, 4 and 6).

Each test posts into its own exchange (declared here, bound to a private tap queue with
'#' before anything is posted) and checks every announcement that arrives: topic, body,
headers, sums recomputed here with hashlib.  sr_post runs as a subprocess (run_cmd) except
where noted.  The poster logs in as a RabbitMQ user created for this module with a
distinctive password (management API), so that "the password never appears in any
output" is a real check: every run goes through ``post()``, which asserts it.
"""

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid

import pytest
import requests

from tests.conftest import command_argv, command_env, parse_broker_url

MIB = 1 << 20


# ------------------------------------------------------------------ poster account

class Account:
    """Who sr_post logs in as; ``secret`` must never appear in its output."""

    def __init__(self, user, password, host, port, vhost, secret):
        self.user, self.password, self.host, self.port = user, password, host, port
        self.vhost, self.secret = vhost, secret
        q = urllib.parse.quote
        self.vpath = "" if vhost == "/" else q(vhost, safe="")
        self.url = "amqp://%s:%s@%s:%d/%s" % (q(user, safe=""), q(password, safe=""), host,
                                              port, self.vpath)
        self.url_no_password = "amqp://%s@%s:%d/%s" % (q(user, safe=""), host, port,
                                                       self.vpath)


@pytest.fixture(scope="module")
def account(broker_url):
    """A broker user with a distinctive password, created through the management API
    (SARRA_TEST_MGMT, default http://<broker host>:15672/) and deleted afterwards.

    Without the management API the test broker's own account is used; its password is
    then only checked for in the output when it differs from the user name."""
    host, port, user, password, vhost = parse_broker_url(broker_url)
    api = os.environ.get("SARRA_TEST_MGMT", "http://%s:15672/" % host).rstrip("/") + "/api"
    name = "sarra_post_test_" + uuid.uuid4().hex[:8]
    secret = "Pw-%s-s3cr3t" % uuid.uuid4().hex[:12]
    auth = (user, password)
    q = urllib.parse.quote
    try:
        r = requests.put("%s/users/%s" % (api, name), auth=auth, timeout=10,
                         json={"password": secret, "tags": ""})
        r.raise_for_status()
        requests.put("%s/permissions/%s/%s" % (api, q(vhost, safe=""), name), auth=auth,
                     timeout=10, json={"configure": ".*", "write": ".*", "read": ".*"}
                     ).raise_for_status()
    except requests.RequestException:
        try:
            requests.delete("%s/users/%s" % (api, name), auth=auth, timeout=10)
        except requests.RequestException:
            pass
        plain = password if password not in (user, host) else None
        yield Account(user, password, host, port, vhost, plain)
        return
    try:
        yield Account(name, secret, host, port, vhost, secret)
    finally:
        requests.delete("%s/users/%s" % (api, name), auth=auth, timeout=10)


@pytest.fixture
def exchange(account, uid, amqp_exchange):
    """A fresh exchange of the poster's (durable topic, as sr_post declares it)."""
    return amqp_exchange("xs_%s_post_%s" % (account.user, uid), durable=True)


# ------------------------------------------------------------------ helpers

def check_no_secret(account, *texts):
    if account.secret:
        for text in texts:
            assert account.secret not in text, "password printed:\n" + text


@pytest.fixture
def post(run_cmd, account):
    """post(*args, input=None) -> CompletedProcess of `sr_post args`; never shows a password."""

    def run(*args, input=None, timeout=60):
        r = run_cmd(["sr_post", *args], input=input, timeout=timeout)
        check_no_secret(account, r.stdout, r.stderr)
        return r

    return run


def lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def collect(tap, count, timeout=30.0, idle=0.3):
    """Messages from a tap queue: wait until `count` more arrived (then `idle` s more, to
    catch extras) or timeout; returns [(routing_key, body, headers)].

    The tap's queue is auto-delete: the consumer started on the first call stays for the
    rest of the test (cancelling it would delete the queue)."""
    ch = tap.channel
    inbox = getattr(tap, "inbox", None)
    if inbox is None:
        inbox = tap.inbox = []

        def on_message(msg):
            body = msg.body.decode("utf-8") if isinstance(msg.body, bytes) else msg.body
            headers = {k: (v.decode("utf-8") if isinstance(v, bytes) else v)
                       for k, v in (msg.properties.get("application_headers") or {}).items()}
            inbox.append((msg.delivery_info["routing_key"], body, headers))

        ch.basic_consume(tap.queue, no_ack=True, callback=on_message)
    deadline = time.monotonic() + timeout
    quiet_until = None
    while True:
        now = time.monotonic()
        if len(inbox) >= count:
            quiet_until = quiet_until or now + idle
            if now >= quiet_until:
                break
        elif now >= deadline:
            break
        try:
            ch.connection.drain_events(timeout=0.05)
        except socket.timeout:
            pass
    got = inbox[:]
    del inbox[:]
    return got


def by_relpath(msgs):
    out = {}
    for key, body, headers in msgs:
        pubtime, baseurl, relpath = body.split(" ")
        assert relpath not in out, "announced twice: " + relpath
        out[relpath] = (key, pubtime, baseurl, headers)
    return out


def md5(data):
    return hashlib.md5(data).hexdigest()


def sha512(data):
    return hashlib.sha512(data).hexdigest()


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def credentials_file(home, text, mode=0o600):
    path = home / ".config" / "sarra" / "credentials.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


BASEURL = "http://files.example.org/"


def base_args(account, exchange, base_dir, url=None):
    return ["-pb", url or account.url, "-pbu", BASEURL, "-pbd", str(base_dir), "-px", exchange]


# ------------------------------------------------------------------ volume

def test_ten_thousand_files_all_announced_with_their_md5(tmp_path, account, exchange,
                                                         amqp_tap, post):
    data = tmp_path / "data"
    expected = {}
    for d in range(100):
        sub = data / ("dir%02d" % d)
        sub.mkdir(parents=True)
        for f in range(100):
            content = os.urandom(1024)
            (sub / ("f%02d.dat" % f)).write_bytes(content)
            expected["/dir%02d/f%02d.dat" % (d, f)] = content
    tap = amqp_tap(exchange)
    t0 = time.monotonic()
    r = post(*base_args(account, exchange, data), "-ll", "warning", str(data))
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert lines(r.stderr) == []
    got = by_relpath(collect(tap, 10_000))
    assert sorted(got) == sorted(expected)
    pubtimes = set()
    for rel, content in expected.items():
        key, pubtime, baseurl, h = got[rel]
        assert key == "v02.post." + rel.split("/")[1]
        assert baseurl == BASEURL
        assert h["sum"] == "d," + md5(content), rel
        assert h["parts"] == "1,1024,1,0,0"
        assert h["to_clusters"] == account.host
        assert h["mode"] == "%o" % (os.stat(data / rel[1:]).st_mode & 0o7777)
        assert len(h["mtime"]) >= 15 and len(h["atime"]) >= 15
        assert "source" not in h and "from_cluster" not in h   # v2 sr_post sends neither
        pubtimes.add(pubtime)
    assert len(pubtimes) > 1          # each file gets its own announcement time
    assert elapsed < 30


# ------------------------------------------------------------------ parts

@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """(path, bytes) of a 100,000,000-byte file of random data (no two blocks alike)."""
    path = tmp_path_factory.mktemp("big") / "data" / "model" / "big.grib2"
    path.parent.mkdir(parents=True)
    data = os.urandom(100_000_000)
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("blocksize, algo", [("10M", "d"), ("10M", "s"), (None, "d")])
def test_hundred_megabyte_file_in_parts(big_file, blocksize, algo, account, exchange,
                                        amqp_tap, post):
    path, data = big_file
    h = {"d": hashlib.md5, "s": hashlib.sha512}[algo]
    tap = amqp_tap(exchange)
    args = base_args(account, exchange, path.parent.parent) + ["--sum", algo]
    if blocksize:
        args += ["--blocksize", blocksize]
    r = post(*args, str(path))
    assert r.returncode == 0, r.stderr
    if blocksize is None:                      # default 200M: posted whole
        (key, body, hd), = collect(tap, 1)
        assert key == "v02.post.model"
        assert body.split(" ")[2] == "/model/big.grib2"
        assert hd["parts"] == "1,100000000,1,0,0"
        assert hd["sum"] == "%s,%s" % (algo, h(data).hexdigest())
        return
    bsz = 10 * MIB
    blktot = -(-len(data) // bsz)
    assert blktot == 10
    brem = len(data) - (blktot - 1) * bsz
    msgs = collect(tap, blktot)
    assert len(msgs) == blktot
    seen = {}
    for key, body, hd in msgs:
        pubtime, baseurl, relpath = body.split(" ")
        assert (key, baseurl, relpath) == ("v02.post.model", BASEURL, "/model/big.grib2")
        method, p_bsz, p_tot, p_rem, bno = hd["parts"].split(",")
        assert (method, int(p_bsz), int(p_tot), int(p_rem)) == ("i", bsz, blktot, brem)
        bno = int(bno)
        assert bno not in seen
        seen[bno] = pubtime
        block = data[bno * bsz:(bno + 1) * bsz]
        assert hd["sum"] == "%s,%s" % (algo, h(block).hexdigest()), "block %d" % bno
    assert sorted(seen) == list(range(blktot))
    assert len(set(seen.values())) == 1          # one pubtime for every part


# ------------------------------------------------------------------ errors

def test_wrong_password_exits_3_with_one_line(tmp_path, account, exchange, post):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    bad = "Wr0ng-%s" % uuid.uuid4().hex[:10]
    url = account.url_no_password.replace("@", ":%s@" % bad, 1)
    r = post(*base_args(account, exchange, f.parent, url=url), str(f))
    assert r.returncode == 3
    assert bad not in r.stdout + r.stderr
    (line,) = lines(r.stderr)
    assert account.url_no_password.rstrip("/") in line
    assert "refused" in line or "password" in line


def test_stopped_broker_exits_3_cannot_connect(tmp_path, account, exchange, post):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    url = "amqp://%s:%s@127.0.0.1:%d/" % (account.user, account.password, free_port())
    r = post(*base_args(account, exchange, f.parent, url=url), str(f))
    assert r.returncode == 3
    (line,) = lines(r.stderr)
    assert "cannot connect" in line and "127.0.0.1" in line


def test_missing_file_among_good_ones(tmp_path, account, exchange, amqp_tap, post):
    data = tmp_path / "data"
    good = [write(data / "a.txt", b"a\n"), write(data / "sub" / "b.txt", b"b\n")]
    missing = data / "nope.txt"
    tap = amqp_tap(exchange)
    r = post(*base_args(account, exchange, data), str(good[0]), str(missing), str(good[1]))
    assert r.returncode == 1
    errs = [ln for ln in lines(r.stderr) if str(missing) in ln]
    assert len(errs) == 1 and errs[0].startswith("sr_post: ")
    got = by_relpath(collect(tap, 2))
    assert sorted(got) == ["/a.txt", "/sub/b.txt"]
    assert got["/sub/b.txt"][3]["sum"] == "d," + md5(b"b\n")


def test_fifo_is_refused_and_the_rest_posted(tmp_path, account, exchange, amqp_tap, post):
    data = tmp_path / "data"
    good = write(data / "a.txt", b"a\n")
    fifo = data / "pipe"
    os.mkfifo(fifo)
    tap = amqp_tap(exchange)
    r = post(*base_args(account, exchange, data), str(fifo), str(good), timeout=20)
    assert r.returncode == 1
    errs = [ln for ln in lines(r.stderr) if str(fifo) in ln]
    assert len(errs) == 1 and "not a regular file" in errs[0]
    assert sorted(by_relpath(collect(tap, 1))) == ["/a.txt"]


def _without_read_override():
    """argv prefix that really stops reads of a mode-000 file, or None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    # root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH is bound by the mode bits
    probe = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search",
                            "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_file_is_an_error_the_rest_posted(tmp_path, home, account, exchange,
                                                     amqp_tap):
    prefix = _without_read_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: mode 000 does not stop reads")
    data = tmp_path / "data"
    good = write(data / "a.txt", b"a\n")
    secret = write(data / "secret.txt", b"s\n")
    os.chmod(secret, 0)
    tap = amqp_tap(exchange)
    argv = prefix + command_argv("sr_post") + base_args(account, exchange, data) + [
        str(secret), str(good)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=str(home),
                       env=command_env(), stdin=subprocess.DEVNULL)
    check_no_secret(account, r.stdout, r.stderr)
    assert r.returncode == 1, r.stderr
    errs = [ln for ln in lines(r.stderr) if str(secret) in ln]
    assert len(errs) == 1 and "permission denied" in errs[0].lower()
    assert sorted(by_relpath(collect(tap, 1))) == ["/a.txt"]


@pytest.mark.parametrize("option, value", [("blocksize", "abc"), ("loglevel", "loud"),
                                           ("post_exchange_split", "many")])
def test_bad_option_value_exits_2_naming_it(tmp_path, account, exchange, post, option,
                                            value):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    r = post(*base_args(account, exchange, f.parent), "--" + option, value, str(f))
    assert r.returncode == 2
    (line,) = lines(r.stderr)
    assert option in line and value in line


def test_missing_post_broker_exits_2(tmp_path, post):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    r = post("-pbu", BASEURL, "-pbd", str(f.parent), str(f))
    assert r.returncode == 2
    (line,) = lines(r.stderr)
    assert "post_broker" in line


def test_unknown_option_is_a_warning_only(tmp_path, account, exchange, amqp_tap, post):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    tap = amqp_tap(exchange)
    r = post(*base_args(account, exchange, f.parent), "--frobnicate", "yes", str(f))
    assert r.returncode == 0, r.stderr
    assert any("frobnicate" in ln and "unknown" in ln for ln in lines(r.stderr))
    assert sorted(by_relpath(collect(tap, 1))) == ["/a.txt"]


# ------------------------------------------------------------------ configs and v2 flags

def test_config_paths_plus_command_line_with_credentials_conf(tmp_path, home, account,
                                                                exchange, amqp_tap, post):
    data = tmp_path / "data"
    a = write(data / "a.txt", b"aaa\n")
    b = write(data / "dir b" / "b.txt", b"bbb\n")
    c = write(data / "c.txt", b"ccc\n")
    write(data / "not-posted.txt", b"x\n")
    conf = home / ".config" / "sarra" / "post" / "mine.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("# a v2 sr_post configuration\n"
                    "post_broker %s\n"            # no password: from credentials.conf
                    "post_base_url %s\n"
                    "post_base_dir %s\n"
                    "post_exchange %s\n"
                    "path %s\n"
                    "path %s\n" % (account.url_no_password, BASEURL, data, exchange, a,
                                   str(b.parent).replace(" ", "\\ ")))   # v2: 'dir\ b'
    # the password is only in credentials.conf, on its last line, without a newline
    credentials_file(home, "# broker credentials\n"
                           "amqp://someone:else@other.example.org/\n"
                           "%s" % account.url)
    tap = amqp_tap(exchange)
    r = post("-c", "mine", str(c))
    assert r.returncode == 0, r.stderr
    got = by_relpath(collect(tap, 3))
    assert sorted(got) == ["/a.txt", "/c.txt", "/dir%20b/b.txt"]
    assert got["/dir%20b/b.txt"][0] == "v02.post.dir%20b"
    assert got["/c.txt"][3]["sum"] == "d," + md5(b"ccc\n")


@pytest.fixture
def restore_sarra_logger():
    """main() installs its own handler on the 'sarra' logger: put things back after."""
    lg = logging.getLogger("sarra")
    saved = (list(lg.handlers), lg.level, lg.propagate)
    yield
    for h in list(lg.handlers):
        if h not in saved[0]:
            lg.removeHandler(h)
            h.close()
    for h in saved[0]:
        if h not in lg.handlers:
            lg.addHandler(h)
    lg.setLevel(saved[1])
    lg.propagate = saved[2]


def test_config_in_process(tmp_path, home, account, exchange, amqp_tap, capsys,
                           restore_sarra_logger):
    """The same through sarra.commands.post.main(argv) in this process."""
    from sarra.commands import post as post_cmd

    data = tmp_path / "data"
    a = write(data / "x" / "a.txt", b"in process\n")
    conf = home / ".config" / "sarra" / "post" / "inproc.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("post_broker %s\npost_base_url %s\npost_base_dir %s\n"
                    "post_exchange %s\nloglevel warning\n"
                    % (account.url_no_password, BASEURL, data, exchange))
    credentials_file(home, account.url + "\n")
    tap = amqp_tap(exchange)
    rc = post_cmd.main(["-c", "inproc", str(a)])
    out, err = capsys.readouterr()
    check_no_secret(account, out, err)
    assert rc == 0, err
    (key, body, h), = collect(tap, 1)
    assert (key, body.split(" ")[2]) == ("v02.post.x", "/x/a.txt")
    assert h["sum"] == "d," + md5(b"in process\n")


def test_v2_flag_spellings(tmp_path, home, account, exchange, amqp_tap, post):
    data = tmp_path / "data"
    f = write(data / "in" / "obs.txt", b"observation\n")
    g = write(data / "in" / "more.txt", b"more\n")
    credentials_file(home, account.url + "\n")
    tap = amqp_tap(exchange)
    r = post("-pb", account.url_no_password, "-pbu", BASEURL, "-pbd", str(data),
             "-px", exchange, "-p", str(f), "--sum", "s", "--blocksize", "1",
             "--to", "clusterA,clusterB", "--rename", "/renamed/obs.txt",
             "--post_topic_prefix", "v02.post.custom")
    assert r.returncode == 0, r.stderr
    (key, body, h), = collect(tap, 1)
    assert key == "v02.post.custom.in"
    assert body.split(" ")[1:] == [BASEURL, "/in/obs.txt"]
    assert h["sum"] == "s," + sha512(b"observation\n")
    assert h["parts"] == "1,12,1,0,0"
    assert h["to_clusters"] == "clusterA,clusterB"
    assert h["rename"] == "/renamed/obs.txt"
    r = post("-pb", account.url_no_password, "-u", BASEURL, "-pbd", str(data),
             "-px", exchange, "--subtopic", "some.where", "--preserve_time", "off",
             "--preserve_mode", "no", str(g))
    assert r.returncode == 0, r.stderr
    (key, body, h), = collect(tap, 1)
    assert key == "v02.post.some.where"
    assert body.split(" ")[2] == "/in/more.txt"
    assert h["sum"] == "d," + md5(b"more\n")
    assert "mtime" not in h and "atime" not in h and "mode" not in h
    assert h["to_clusters"] == account.host


def test_config_found_under_xdg_config_home(tmp_path, home, account, exchange, amqp_tap,
                                            post, run_cmd):
    data = tmp_path / "data"
    f = write(data / "a.txt", b"xdg\n")
    xdg = tmp_path / "elsewhere"
    conf = xdg / "sarra" / "post" / "x.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("post_broker %s\npost_base_url %s\npost_base_dir %s\npost_exchange %s\n"
                    "path %s\n" % (account.url_no_password, BASEURL, data, exchange, f))
    creds = xdg / "sarra" / "credentials.conf"
    creds.write_text(account.url)
    os.chmod(creds, 0o600)
    tap = amqp_tap(exchange)
    r = run_cmd(["sr_post", "-c", "x"], env={"XDG_CONFIG_HOME": str(xdg)})
    check_no_secret(account, r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    assert sorted(by_relpath(collect(tap, 1))) == ["/a.txt"]
    r = post("-c", "x")                  # the default location does not have it
    assert r.returncode == 2 and "x.conf" in r.stderr


def test_accept_reject_filter_on_url(tmp_path, home, account, exchange, amqp_tap, post):
    data = tmp_path / "data"
    for rel in ("keep/a.txt", "keep/b.tmp", "skip/c.txt", "other/d.txt"):
        write(data / rel, rel.encode())
    conf = home / ".config" / "sarra" / "post" / "filtered.conf"
    conf.parent.mkdir(parents=True)
    # the URL is the plain concatenation baseurl + relpath: 'http://files.example.org//keep/a.txt'
    conf.write_text("reject .*\\.tmp$\n"
                    "accept %s/keep/.*\n"
                    "accept .*/other/.*\n"
                    "accept_unmatch off\n" % BASEURL)
    tap = amqp_tap(exchange)
    r = post("-c", "filtered", *base_args(account, exchange, data), str(data))
    assert r.returncode == 0, r.stderr
    assert sorted(by_relpath(collect(tap, 2))) == ["/keep/a.txt", "/other/d.txt"]


def test_credentials_readable_by_others_set_to_0600(tmp_path, home, account, exchange, post):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    creds = credentials_file(home, account.url + "\n", mode=0o644)
    r = post(*base_args(account, exchange, f.parent, url=account.url_no_password), str(f))
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in lines(r.stderr) if "0600" in x]
    assert str(creds) in line and "0644" in line
    assert os.stat(creds).st_mode & 0o777 == 0o600


# ------------------------------------------------------------------ names, links, removals

def test_spaces_hash_and_non_ascii_names(tmp_path, account, exchange, amqp_tap, post):
    top = tmp_path / "top"
    f = write(top / "data" / "obs" / "station #3" / "report 1.txt", b"report\n")
    g = write(top / "dir a#b+c é日本" / "name x#y+z é日本.txt", "日本\n".encode())
    tap = amqp_tap(exchange)
    r = post(*base_args(account, exchange, top), str(f), str(top / "dir a#b+c é日本"))
    assert r.returncode == 0, r.stderr
    got = by_relpath(collect(tap, 2))
    key, _, _, h = got["/data/obs/station%20%233/report%201.txt"]
    assert key == "v02.post.data.obs.station%20%233"
    assert h["sum"] == "d," + md5(b"report\n")
    key, _, _, h = got["/dir%20a%23b+c%20é日本/name%20x%23y+z%20é日本.txt"]
    assert key == "v02.post.dir%20a%23b+c%20é日本"
    assert h["sum"] == "d," + md5(g.read_bytes())


def test_symlink_announced_as_link(tmp_path, account, exchange, amqp_tap, post):
    data = tmp_path / "data"
    write(data / "run12" / "big.grib2", b"grib\n")
    link = data / "latest" / "current.grib2"
    link.parent.mkdir()
    os.symlink("../run12/big.grib2", link)
    tap = amqp_tap(exchange)
    r = post(*base_args(account, exchange, data), str(link))
    assert r.returncode == 0, r.stderr
    (key, body, h), = collect(tap, 1)
    assert key == "v02.post.latest"
    assert body.split(" ")[2] == "/latest/current.grib2"
    assert h["link"] == "../run12/big.grib2"
    assert h["sum"] == "L," + sha512(b"../run12/big.grib2")
    assert "parts" not in h and "mtime" not in h


def test_removal_announced_with_events_delete(tmp_path, account, exchange, amqp_tap, post):
    data = tmp_path / "data"
    data.mkdir()
    gone = data / "old" / "gone file.txt"
    tap = amqp_tap(exchange)
    r = post(*base_args(account, exchange, data), "-e", "delete", str(gone))
    assert r.returncode == 0, r.stderr
    (key, body, h), = collect(tap, 1)
    assert key == "v02.post.old"
    assert body.split(" ")[2] == "/old/gone%20file.txt"
    assert h["sum"] == "R," + sha512("gone file.txt".encode())
    assert "parts" not in h and "mtime" not in h and "mode" not in h


# ------------------------------------------------------------------ v2 parts, bad URLs

@pytest.mark.parametrize("parts, bsz", [("i,1M", MIB), ("1", None)])
def test_v2_parts_option_sets_the_block_size(tmp_path, account, exchange, amqp_tap, post,
                                            parts, bsz):
    """`parts i,<size>` partitions like blocksize <size>; `parts 1` never partitions, even
    after a smaller blocksize (the later option wins)."""
    data = os.urandom(3 * MIB + 12345)
    f = write(tmp_path / "data" / "p.bin", data)
    tap = amqp_tap(exchange)
    r = post(*base_args(account, exchange, f.parent), "--blocksize", "512K", "--parts", parts,
             str(f))
    assert r.returncode == 0, r.stderr
    if bsz is None:
        (key, body, h), = collect(tap, 1)
        assert h["parts"] == "1,%d,1,0,0" % len(data)
        assert h["sum"] == "d," + md5(data)
        return
    blktot = -(-len(data) // bsz)
    msgs = collect(tap, blktot)
    assert len(msgs) == blktot == 4
    got = {}
    for key, body, h in msgs:
        method, p_bsz, p_tot, p_rem, bno = h["parts"].split(",")
        assert (method, int(p_bsz), int(p_tot), int(p_rem)) == \
            ("i", bsz, blktot, len(data) - (blktot - 1) * bsz)
        got[int(bno)] = h["sum"]
    assert got == {n: "d," + md5(data[n * bsz:(n + 1) * bsz]) for n in range(blktot)}


def test_v2_parts_p_is_refused_naming_the_option(tmp_path, account, exchange, post):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    r = post(*base_args(account, exchange, f.parent), "--parts", "p,1M", str(f))
    assert r.returncode == 2
    (line,) = lines(r.stderr)
    assert "command line: option 'parts'" in line and "p,1M" in line


@pytest.mark.parametrize("hostpart, reason", [
    ("127.0.0.1:notaport", "not a number"), ("", "no host"), ("[::1", "IPv6"),
    ("127.0.0.1:99999", "out of range")])
def test_broken_broker_url_exits_2_with_one_line(tmp_path, account, exchange, post,
                                                 hostpart, reason):
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    url = "amqp://%s:Pw-n0t-sh0wn@%s/" % (account.user, hostpart) if hostpart else "amqp://"
    r = post(*base_args(account, exchange, f.parent, url=url), str(f))
    assert r.returncode == 2, r.stderr
    (line,) = lines(r.stderr)
    assert "option 'post_broker'" in line and reason in line
    assert "Traceback" not in r.stderr and "Pw-n0t-sh0wn" not in line


def test_no_password_anywhere_says_which_file_to_fill(tmp_path, home, account, exchange,
                                                      post):
    """No password in the URL and no credentials.conf entry: the message says so, names
    the file and the line to add (not a generic 'login refused')."""
    f = write(tmp_path / "data" / "a.txt", b"a\n")
    creds = credentials_file(home, "amqp://someone-else:x@%s/\n" % account.host)
    r = post(*base_args(account, exchange, f.parent, url=account.url_no_password), str(f))
    assert r.returncode == 3
    (line,) = lines(r.stderr)
    assert "no password for %s in %s" % (account.url_no_password, creds) in line
    assert "add a line %s" % account.url_no_password.replace(
        "@", ":PASSWORD@", 1) in line
