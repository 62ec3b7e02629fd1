import logging
import os

import pytest

from sarra import paths
from sarra.config.credentials import Credentials, CredentialsError, parse_url, redact, redact_text

SAMPLE = """\
# comment line
   # indented comment
amqps://alice:S3cr%3At@pump.example.org/
amqp://feeder:pw@localhost:5672/
amqp://feeder:otherpw@localhost:5672/vh1
sftp://bob@data.example.org ssh_keyfile=/home/bob/.ssh/id_ed25519
ftp://ops:ftppw@ftp.example.org:2121 active,ascii
ftps://ops:%2fdot8@ftp.example.org passive,binary,tls,prot_p
https://api.example.org/ bearer_token=0123abcd
amqp://localhost/"""          # last line without newline


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    (h / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(h / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(h / ".cache"))
    return h


def write_creds(text, mode=0o600):
    path = paths.credentials_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_missing_file_is_empty(home):
    creds = Credentials.load()
    assert creds.entries == []
    c = creds.lookup("amqp://bob@host/")
    assert c.user == "bob" and c.password is None and not c.found


def test_lookup_matches_scheme_user_host_port(home):
    write_creds(SAMPLE)
    creds = Credentials.load()
    c = creds.lookup("amqps://alice@pump.example.org/")
    assert c.found and c.password == "S3cr:t"          # URL-decoded
    assert (c.scheme, c.user, c.host, c.port, c.vhost) == (
        "amqps", "alice", "pump.example.org", None, "/")
    # default port written explicitly still matches
    assert creds.lookup("amqps://alice@pump.example.org:5671").password == "S3cr:t"
    # vhost '' == '/', and another vhost is a different entry
    assert creds.lookup("amqp://feeder@localhost").password == "pw"
    assert creds.lookup("amqp://feeder@localhost:5672/vh1").password == "otherpw"
    # wrong user, host or port: no match
    assert not creds.lookup("amqps://bob@pump.example.org/").found
    assert not creds.lookup("amqps://alice@other.example.org/").found
    assert not creds.lookup("amqp://feeder@localhost:5673/").found
    assert not creds.lookup("amqp://alice@pump.example.org/").found   # scheme differs


def test_url_password_takes_precedence(home):
    write_creds(SAMPLE)
    c = Credentials.load().lookup("amqp://feeder:explicit@localhost/")
    assert c.password == "explicit" and c.found


def test_amqp_without_user_is_anonymous(home):
    c = Credentials.load().lookup("amqp://broker.example.org/")
    assert (c.user, c.password) == ("anonymous", "anonymous")
    write_creds("amqp://anonymous:secretanon@broker.example.org/\n")
    c = Credentials.load().lookup("amqp://broker.example.org/")
    assert (c.user, c.password) == ("anonymous", "secretanon")


def test_options(home):
    write_creds(SAMPLE)
    creds = Credentials.load()
    s = creds.lookup("sftp://bob@data.example.org/some/dir")
    assert s.ssh_keyfile == "/home/bob/.ssh/id_ed25519" and s.password is None and s.found
    f = creds.lookup("ftp://ops@ftp.example.org:2121/")
    assert f.password == "ftppw" and f.passive is False and f.binary is False and not f.tls
    fs = creds.lookup("ftps://ops@ftp.example.org/")
    assert fs.password == "/dot8"
    assert fs.passive and fs.binary and fs.tls and fs.prot_p
    h = creds.lookup("https://api.example.org/data/x.txt")
    assert h.bearer_token == "0123abcd" and h.user is None


def test_last_line_without_newline_is_read(home):
    write_creds(SAMPLE)
    urls = [c.url for c in Credentials.load().entries]
    assert urls[-1] == "amqp://anonymous@localhost/"
    assert len(urls) == 8


def test_passwords_never_in_repr_or_str(home):
    write_creds(SAMPLE)
    creds = Credentials.load()
    for c in creds.entries:
        for text in (repr(c), str(c), c.url):
            assert "S3cr" not in text and ":pw@" not in text and "ftppw" not in text
            assert "0123abcd" not in text and "dot8" not in text
    assert "S3cr" not in repr(creds)
    c = creds.lookup("amqps://alice@pump.example.org/")
    assert "***" in repr(c)


def test_malformed_line_warned_without_secret(home, caplog):
    path = write_creds("amqp://user:topsecret@host:notaport/\nnot a url at all\n")
    with caplog.at_level(logging.WARNING):
        creds = Credentials.load()
    assert creds.entries == []
    assert "%s:1" % path in caplog.text and "%s:2" % path in caplog.text
    assert "topsecret" not in caplog.text


def test_bad_lookup_url_error_has_no_password(home):
    with pytest.raises(CredentialsError) as e:
        Credentials.load().lookup("amqp://u:hunter2@host:99999999/")
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize("url,expected", [
    ("amqp://user:secret@host:5672/vh", "amqp://user:***@host:5672/vh"),
    ("amqps://u:p%40ss@h/", "amqps://u:***@h/"),
    ("amqp://user@host/", "amqp://user@host/"),
    ("amqp://host:5672/", "amqp://host:5672/"),
    ("sftp://u:a@b@host/path", "sftp://u:***@host/path"),
    ("not a url", "not a url"),
])
def test_redact(url, expected):
    assert redact(url) == expected


def test_redact_text_inside_message():
    text = "cannot connect to amqp://bob:s3cret@host/ and ftp://x:y@h:21/p"
    out = redact_text(text)
    assert "s3cret" not in out and ":y@" not in out
    assert "amqp://bob:***@host/" in out and "ftp://x:***@h:21/p" in out


def test_parse_url_fields():
    c = parse_url("amqp://u:p@Host.Example:5673/%2Fvh")
    assert (c.user, c.password, c.host, c.port, c.vhost) == ("u", "p", "host.example", 5673, "/vh")
    assert c.effective_port == 5673
    assert parse_url("ftp://h/").effective_port == 21


def test_no_password_text_names_url_file_and_line_to_add(home):
    from sarra.config.credentials import no_password_text
    text = no_password_text("amqp://nobody@127.0.0.1/")
    assert text == ("no password for amqp://nobody@127.0.0.1/ in %s (add a line "
                    "amqp://nobody:PASSWORD@127.0.0.1/)" % paths.credentials_path())
    assert paths.credentials_path().startswith(str(home))
    text = no_password_text("amqps://bob:hidden@pump.example.org:5671/vh", "/etc/c.conf")
    assert text == ("no password for amqps://bob:***@pump.example.org:5671/vh in /etc/c.conf "
                    "(add a line amqps://bob:PASSWORD@pump.example.org:5671/vh)")
    assert "hidden" not in text
