"""sarra/flow/fetchpolicy.py: what a source may make a pump fetch, and whose credentials."""

import os
import types

import pytest

from sarra.flow import fetchpolicy
from sarra.config.credentials import Credentials
from sarra.flow.fetchpolicy import Refused, check_url
from sarra.message import Message
from sarra.flow.work import Outcome, Work

FILE_OK = fetchpolicy.DEFAULT_SCHEMES + ("file",)


# ------------------------------------------------------------------ schemes and forms
@pytest.mark.parametrize("url", [
    "file:/etc/passwd", "FILE:/etc/passwd", "File:/etc/passwd", "fIlE:///etc/passwd",
    "file:///etc/shadow", "file://localhost/etc/passwd",
])
def test_file_urls_refused_by_default_whatever_the_case(url):
    with pytest.raises(Refused, match="fetch_schemes"):
        check_url(url)


@pytest.mark.parametrize("url", [
    "file:/etc/passwd", "FILE:/etc/passwd", "File:///etc/passwd",
])
def test_file_urls_refused_without_base_dir_even_when_allowed(url):
    with pytest.raises(Refused, match="base_dir"):
        check_url(url, FILE_OK)


@pytest.mark.parametrize("url", [
    "HTTP://Example.org/a", "https://example.org:8443/x?y", "sftp://alice@host/p",
    "ftp://anonymous@ftp.example.org:2121/pub/x", "http://[::1]:8080/x", "http://h/a%20b",
])
def test_ordinary_network_urls_pass(url):
    assert check_url(url).scheme == url.split(":", 1)[0].lower()


@pytest.mark.parametrize("url,why", [
    ("gopher://h/x", "fetch_schemes"),
    ("http://a@b@host/x", "more than one @"),
    ("http://evil.example#@good.example/x", "odd user part"),
    ("http://good.example?@evil.example/x", "odd user part"),
    ("http://ho%73t/x", "bad host"),
    ("http://host\\@evil/x", "odd user part"),
    ("http://host\\evil/x", "bad host"),
    ("http://host:99999/x", "bad port"),
    ("http://host:8o/x", "bad port"),
    ("http:///x", "bad host"),
    ("http:host/x", "no host"),
    ("http://host/a\r\nX-Evil: 1", "control character"),
    ("http://host/a b", "control character"),
    ("file://otherhost/etc/passwd", "with a host"),
    ("file://LOCALHOST/etc/passwd", "with a host"),
    ("file:etc/passwd", "relative"),
    ("", "empty"),
])
def test_odd_forms_refused(url, why):
    with pytest.raises(Refused, match=why):
        check_url(url, FILE_OK, base_dir="/")


def test_reason_is_one_printable_line():
    with pytest.raises(Refused) as e:
        check_url("http://host/a\x1b[31m\nforged line")
    assert str(e.value).isprintable()


# ------------------------------------------------------------------ file: confined by real path
@pytest.fixture
def incoming(tmp_path):
    base = tmp_path / "incoming"
    (base / "alice").mkdir(parents=True)
    (base / "alice" / "ok.txt").write_text("ok")
    (base / "alice" / "a b.txt").write_text("ok")
    secret = tmp_path / "credentials.conf"
    secret.write_text("amqp://admin:pw@pump/")
    os.symlink(str(secret), str(base / "alice" / "link.txt"))
    os.symlink(str(tmp_path), str(base / "alice" / "up"))
    os.symlink(str(secret), str(base / "alice" / "x y"))
    return base


def test_file_inside_base_dir_allowed(incoming):
    for url in ("file:%s/alice/ok.txt" % incoming, "FILE://%s/alice/ok.txt" % incoming,
                "file://localhost%s/alice/a%%20b.txt" % incoming):
        check_url(url, FILE_OK, base_dir=str(incoming))


@pytest.mark.parametrize("rel", [
    "/alice/../../credentials.conf",        # ..
    "/alice/link.txt",                      # a symbolic link to a file outside
    "/alice/up/credentials.conf",           # a symbolic link to a directory outside
    "/alice/x%20y",                         # %20 decoded as the driver does: a link outside
])
def test_file_escapes_refused(incoming, rel):
    for scheme in ("file:", "FILE:", "File://"):
        with pytest.raises(Refused, match="outside base_dir"):
            check_url(scheme + str(incoming) + rel, FILE_OK, base_dir=str(incoming))


def test_base_dir_prefix_is_not_enough(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "incoming2").mkdir()
    (tmp_path / "incoming2" / "f").write_text("x")
    with pytest.raises(Refused, match="outside base_dir"):
        check_url("file:%s/incoming2/f" % tmp_path, FILE_OK, base_dir=str(tmp_path / "in"))


def test_percent_escape_is_read_as_the_driver_reads_it(incoming):
    """%2e%2e is no '..' for the file driver (it decodes only %20 and %23): the name the
    check resolves is the name the driver opens."""
    from sarra.transfer.file import local_path_of
    url = "file:%s/alice/%%2e%%2e/%%2e%%2e/credentials.conf" % incoming
    check_url(url, FILE_OK, base_dir=str(incoming))       # a (missing) name inside
    assert fetchpolicy.local_path(url) == local_path_of(url)
    assert fetchpolicy.inside(local_path_of(url), str(incoming))


# ------------------------------------------------------------------ hosts
def test_fetch_hosts():
    hosts = ["data.example.org", "127.0.0.1:8080", "*.alice.example"]
    check_url("http://DATA.example.org./x", hosts=hosts)
    check_url("http://127.0.0.1:8080/x", hosts=hosts)
    check_url("sftp://u@files.alice.example/x", hosts=hosts)
    for url in ("http://127.0.0.1:15672/api/users", "http://evil.example/x",
                "http://alice.example.evil/x", "http://xalice.example/x"):
        with pytest.raises(Refused, match="fetch_hosts"):
            check_url(url, hosts=hosts)


# ------------------------------------------------------------------ credentials
CREDS = """\
amqp://feeder:F33d@pump.example.org/
sftp://bob:B0b-pw@data.example.org
http://bob:B0b-http@www.example.org
https://api.example.org/ bearer_token=tok
ftp://shared:pw@ftp.example.org source=alice,source=carol
sftp://alice@alice.example.org ssh_keyfile=/k source=alice
ftp://anonymous:x@mirror.example.org source=*
"""


def creds():
    return Credentials(Credentials.parse(CREDS))


def test_source_option_parsed():
    c = creds().lookup("ftp://shared@ftp.example.org/")
    assert c.options["sources"] == ["alice", "carol"]
    assert "sources" not in creds().lookup("sftp://bob@data.example.org/").options


@pytest.mark.parametrize("url", [
    "sftp://bob@data.example.org/home/bob/private",
    "SFTP://bob@DATA.example.org:22//etc/x",
    "sftp://b%6fb@data.example.org/private",          # %-encoded user: still bob
    "http://bob@www.example.org/private",
    "http://bob:guess@www.example.org/private",       # own password: entry still matches
    "https://api.example.org/private",                # a bearer token, no user at all
])
def test_entries_not_lent_are_refused(url):
    ep = check_url(url)
    with pytest.raises(Refused, match="not lent to source alice"):
        fetchpolicy.check_credentials(creds(), url, ep, "alice")


@pytest.mark.parametrize("url,source", [
    ("ftp://shared@ftp.example.org/x", "alice"),
    ("ftp://shared@ftp.example.org/x", "carol"),
    ("sftp://alice@alice.example.org/x", "alice"),
    ("ftp://anonymous@mirror.example.org/x", "bob"),
    ("http://alice@other.example.org/x", "alice"),     # no entry: no password sent
    ("sftp://alice:own@other.example.org/x", "alice"),  # the source's own password
])
def test_lent_or_unmatched_entries_pass(url, source):
    fetchpolicy.check_credentials(creds(), url, check_url(url), source)


def test_lent_to_someone_else_is_refused():
    url = "ftp://shared@ftp.example.org/x"
    with pytest.raises(Refused, match="not lent"):
        fetchpolicy.check_credentials(creds(), url, check_url(url), "bob")


def test_sftp_without_credentials_would_use_the_pumps_keys():
    url = "sftp://sarra@localhost/.config/sarra/credentials.conf"
    with pytest.raises(Refused, match="own ssh keys"):
        fetchpolicy.check_credentials(creds(), url, check_url(url), "alice")


# ------------------------------------------------------------------ in the flow
def pump_flow(**cfg):
    base = dict(source_from_exchange=True, exchange_suffix=None, cluster=None,
                broker_netloc=lambda: "pump:5672", fetch_schemes=list(fetchpolicy.DEFAULT_SCHEMES),
                fetch_hosts=[], base_dir=None)
    base.update(cfg)
    return types.SimpleNamespace(cfg=types.SimpleNamespace(**base), credentials=creds(),
                                 msg=None)


def work(baseurl, relpath, exchange="xs_alice"):
    msg = Message("20240315121500.11", baseurl, relpath, {"sum": "d,x"},
                  topic="v02.post", exchange=exchange)
    return Work(msg)


@pytest.mark.parametrize("baseurl,rel", [
    ("file:", "/etc/shadow"), ("FILE:", "/etc/shadow"), ("File:/", "etc/passwd"),
    ("file://localhost", "/etc/passwd"),
    ("sftp://bob@data.example.org/", "private.txt"),
])
def test_sarra_check_refuses_with_403(baseurl, rel):
    from sarra.flow.presets import sarra_check
    w = work(baseurl, rel)
    with pytest.raises(Outcome) as e:
        sarra_check(pump_flow(), w)
    assert e.value.code == 403 and not e.value.retry
    assert e.value.text.startswith("Forbidden: ") and "xs_alice" in e.value.text
    assert w.msg.headers["source"] == "alice"       # the refusal is reported to the poster


def test_sarra_check_file_allowed_below_base_dir(incoming):
    from sarra.flow.presets import sarra_check
    flow = pump_flow(fetch_schemes=list(FILE_OK), base_dir=str(incoming))
    sarra_check(flow, work("file:" + str(incoming), "/alice/ok.txt"))
    with pytest.raises(Outcome) as e:
        sarra_check(flow, work("FILE:" + str(incoming), "/alice/link.txt"))
    assert e.value.code == 403


def test_not_a_pump_is_not_affected():
    flow = pump_flow(source_from_exchange=False)
    fetchpolicy.check(flow, work("file:", "/etc/passwd"))
    cred = creds().lookup("sftp://bob@data.example.org/")
    assert fetchpolicy.lend(flow, "sftp://bob@data.example.org/x", cred) is cred


def test_lend_hands_drivers_only_what_is_lent():
    flow = pump_flow()
    c = creds()
    flow.msg = work("http://h/", "x")
    flow.msg.msg.headers["source"] = "alice"
    bob = c.lookup("sftp://bob@data.example.org/")
    got = fetchpolicy.lend(flow, "sftp://bob@data.example.org/x", bob)
    assert got.password is None and got.options == {"own_keys": False}
    own = c.lookup("sftp://alice@alice.example.org/")
    assert fetchpolicy.lend(flow, "sftp://alice@alice.example.org/x", own) is own
    # nothing found: still no use of the pump's own keys
    none = c.lookup("sftp://x@elsewhere.example/")
    assert fetchpolicy.lend(flow, "sftp://x@elsewhere.example/y", none).options == \
        {"own_keys": False}
    # a message on an exchange that is not a source's: only entries lent to every source
    flow.msg = work("http://h/", "x", exchange="xpublic")
    flow.msg.msg.headers["source"] = "alice"
    assert fetchpolicy.lend(flow, "sftp://alice@alice.example.org/x", own).password is None


def test_sftp_driver_does_not_try_own_keys_when_told(monkeypatch):
    paramiko = pytest.importorskip("paramiko")
    from sarra.transfer.sftp import SftpTransfer
    seen = {}

    def connect(self, host, **kw):
        seen.update(kw)
        raise paramiko.AuthenticationException("no")
    monkeypatch.setattr(paramiko.SSHClient, "connect", connect)
    monkeypatch.setattr(paramiko.SSHClient, "load_system_host_keys", lambda self: None)
    from sarra.transfer import TransferError
    for creds_, own in (({"own_keys": False}, False), (None, True)):
        seen.clear()
        t = SftpTransfer(credentials=creds_)
        with pytest.raises(TransferError):
            t.get("sftp://u@h/x", "/nonexistent/x")
        assert seen["allow_agent"] is own and seen["look_for_keys"] is own


def test_sender_reads_file_urls_whatever_the_case():
    """sr_sender's local file of a FILE: URL is the one of file: (its base_dir check then
    judges the path the URL names, not base_dir + relpath)."""
    from sarra.flow import send
    flow = types.SimpleNamespace(cfg=types.SimpleNamespace(base_dir="/srv/out",
                                                           post_base_dir=None))
    for base in ("file:", "FILE:", "File:", "file://localhost", "FILE://"):
        assert send.local_file(flow, work(base + "/etc", "/shadow").msg) == "/etc/shadow", base


# ------------------------------------------------------------------ file: judged on the file opened
def test_lend_confines_file_urls_to_base_dir(incoming):
    flow = pump_flow(fetch_schemes=list(FILE_OK), base_dir=str(incoming))
    assert fetchpolicy.lend(flow, "FILE:/x", None).options["confine"] == str(incoming)
    flow = pump_flow(base_dir=str(incoming))             # file not in fetch_schemes
    assert fetchpolicy.lend(flow, "file:/x", None).options["confine"] == ""
    assert fetchpolicy.lend(pump_flow(source_from_exchange=False), "file:/x", None) is None


def test_name_swapped_for_a_link_after_the_check_is_not_read(incoming, tmp_path):
    """The policy check passes on a regular file; the source then swaps it for a link to
    the pump's credentials: the file driver, confined by lend(), refuses to read it."""
    from sarra.transfer import TransferError
    from sarra.transfer.file import FileTransfer
    flow = pump_flow(fetch_schemes=list(FILE_OK), base_dir=str(incoming))
    name = incoming / "alice" / "swap.txt"
    name.write_text("harmless")
    url = "file:%s" % name
    check_url(url, FILE_OK, base_dir=str(incoming))
    t = FileTransfer(credentials=lambda u: fetchpolicy.lend(flow, u, None))
    assert t.get(url, str(tmp_path / "copy1")) == len("harmless")
    name.unlink()
    os.symlink(str(tmp_path / "credentials.conf"), str(name))
    with pytest.raises(TransferError, match="outside"):
        t.get(url, str(tmp_path / "copy2"))
    assert not (tmp_path / "copy2").exists() or (tmp_path / "copy2").read_text() == ""
    # a directory of the path swapped for a link to outside: the same
    os.rename(str(incoming / "alice"), str(incoming / "alice.old"))
    os.symlink(str(tmp_path), str(incoming / "alice"))
    with pytest.raises(TransferError, match="outside"):
        t.get("file:%s/alice/credentials.conf" % incoming, str(tmp_path / "copy3"))


def test_confined_read_refuses_fifos_without_blocking(incoming, tmp_path):
    from sarra.transfer import TransferError
    from sarra.transfer.file import FileTransfer
    fifo = incoming / "alice" / "fifo"
    os.mkfifo(str(fifo))
    t = FileTransfer(credentials={"confine": str(incoming)})
    with pytest.raises(TransferError, match="not a regular file"):
        t.get("file:%s" % fifo, str(tmp_path / "out"))
    with pytest.raises(TransferError, match="outside"):
        FileTransfer(credentials={"confine": ""}).get(
            "file:%s/alice/ok.txt" % incoming, str(tmp_path / "out"))
    # not confined (any other component): as before
    assert FileTransfer().get("file:%s/alice/ok.txt" % incoming, str(tmp_path / "out")) == 2


def test_http_does_not_lend_the_accounts_netrc(tmp_path, monkeypatch):
    """requests takes a login from ~/.netrc when no auth is given: not for a source's URL
    at a pump (own_keys off), as before elsewhere."""
    import http.server
    import threading
    from sarra.transfer.http import RequestsHttpTransfer
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        (tmp_path / ".netrc").write_text("machine 127.0.0.1 login pump password PumpSecret\n")
        os.chmod(str(tmp_path / ".netrc"), 0o600)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.delenv("NETRC", raising=False)
        url = "http://127.0.0.1:%d/f" % srv.server_port
        RequestsHttpTransfer(credentials={"own_keys": False}).get(url, str(tmp_path / "a"))
        RequestsHttpTransfer(credentials=None).get(url, str(tmp_path / "b"))
    finally:
        srv.shutdown()
        srv.server_close()
    assert seen[0] is None
    assert seen[1] and seen[1].startswith("Basic ")     # the account's own use: unchanged
