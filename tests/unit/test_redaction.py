"""sarra.redaction: the one URL redaction every shown URL goes through (issue 18, item 4)."""
import pytest

from sarra import redaction
from sarra.config import brokerurl, credentials
from sarra.ops import logs, secretargs
from sarra import transfer

hide = redaction.hide_passwords


@pytest.mark.parametrize("text, masked, dropped", [
    ("amqp://u:p@h/", "amqp://u:***@h/", "amqp://u@h/"),
    ("amqp://u:@h/", "amqp://u:***@h/", "amqp://u@h/"),
    ("amqp://:pw@h/", "amqp://:***@h/", "amqp://@h/"),
    ("amqp://u@h/", "amqp://u@h/", "amqp://u@h/"),
    ("amqp://h:5672/", "amqp://h:5672/", "amqp://h:5672/"),
    ("http://h/a:b@c", "http://h/a:b@c", "http://h/a:b@c"),          # '@' in the path
    ("not a url", "not a url", "not a url"),
    # a password holding '@', '?', '#' or a user holding '@': all of it hidden
    ("sftp://u:p@ss@h:22/x", "sftp://u:***@h:22/x", "sftp://u@h:22/x"),
    ("amqp://u:p#s?x@h/", "amqp://u:***@h/", "amqp://u@h/"),
    ("sftp://a@b:pw@h/", "sftp://a@b:***@h/", "sftp://a@b@h/"),
    ("ftp://u:p%40w@h:21/x:y@z", "ftp://u:***@h:21/x:y@z", "ftp://u@h:21/x:y@z"),
    # every URL in a longer text
    ("a ftp://x:1@h1 b http://y:2@h2/z", "a ftp://x:***@h1 b http://y:***@h2/z",
     "a ftp://x@h1 b http://y@h2/z"),
    ("get http://h/?u=ftp://x:sec@h2/f", "get http://h/?u=ftp://x:***@h2/f",
     "get http://h/?u=ftp://x@h2/f"),
    # a password holding '/' runs to the word's last '@'; a list's URLs one by one
    ("amqps://u:pa/ss@h/vhost x", "amqps://u:***@h/vhost x", "amqps://u@h/vhost x"),
    ("--b=amqp://u:p/w@h/,amqp://v:q@k/", "--b=amqp://u:***@h/,amqp://v:***@k/",
     "--b=amqp://u@h/,amqp://v@k/"),
    ("amqp://h:5672/vh", "amqp://h:5672/vh", "amqp://h:5672/vh"),
])
def test_hide_passwords(text, masked, dropped):
    assert hide(text) == masked
    assert hide(text, mask=None) == dropped


@pytest.mark.parametrize("url", [
    "amqp://u:p@ss@h/", "sftp://u:a@b@host/path", "amqp://u:p#s?x@h/", "sftp://a@b:pw@h/",
    "ftp://u:p%40w@h:21/x", "x amqps://bob:pw@h/ y", "amqps://u:pw/ss@h/vhost",
])
def test_every_old_name_is_the_one_redaction(url):
    """The five redactions of before (with different output on these URLs: some showed
    the password or part of it) now give the one answer in one of its two forms."""
    assert credentials.redact(url) == credentials.redact_text(url) == logs.redact(url) == hide(url)
    assert brokerurl.redact(url) == transfer.redact(url) == hide(url, mask=None)
    assert secretargs.visible(url) == hide(url, mask=None)
    for shown in (hide(url), hide(url, mask=None)):
        assert "pw" not in shown and "p@ss" not in shown and "a@b@host" not in shown
        assert "p#s" not in shown and "p%40w" not in shown


def test_not_a_string_is_shown_as_it_is():
    assert credentials.redact(None) is None and transfer.redact(5) == "5"
