"""Unit tests of sarra.broker.client URL handling (no broker needed)."""

import pytest

from sarra.broker.client import BrokerError, Broker, BrokerURL, parse_url, redact


@pytest.mark.parametrize('url, expected', [
    ('amqp://alice:secret@pump.example.org/',
     ('amqp', 'alice', 'secret', 'pump.example.org', 5672, '/')),
    ('amqps://alice:secret@pump.example.org/',
     ('amqps', 'alice', 'secret', 'pump.example.org', 5671, '/')),
    ('amqp://bob@127.0.0.1:5673',
     ('amqp', 'bob', None, '127.0.0.1', 5673, '/')),
    ('amqp://127.0.0.1/', ('amqp', 'anonymous', 'anonymous', '127.0.0.1', 5672, '/')),
    ('amqps://host', ('amqps', 'anonymous', 'anonymous', 'host', 5671, '/')),
    ('AMQP://u:p@Host:1234/dd', ('amqp', 'u', 'p', 'host', 1234, 'dd')),
    ('amqp://u:p@h/%2Fweird', ('amqp', 'u', 'p', 'h', 5672, '/weird')),
    ('amqp://u%40x:p%3Aq%2Fr@h//', ('amqp', 'u@x', 'p:q/r', 'h', 5672, '/')),
    ('amqp://u:@h/', ('amqp', 'u', '', 'h', 5672, '/')),
    ('amqp://u:p@[::1]:5672/', ('amqp', 'u', 'p', '::1', 5672, '/')),
])
def test_parse_url(url, expected):
    got = parse_url(url)
    assert isinstance(got, BrokerURL)
    assert (got.scheme, got.user, got.password, got.host, got.port, got.vhost) == expected


def test_hostport_brackets_ipv6():
    assert parse_url('amqp://h:1/').hostport == 'h:1'
    assert parse_url('amqp://[::1]/').hostport == '[::1]:5672'


def test_repr_hides_password():
    assert 'sekrit' not in repr(parse_url('amqp://u:sekrit@h/'))


@pytest.mark.parametrize('url', [
    'http://u:sekrit@h/', 'ftp://h/', 'amqp:///novhost', 'amqp://u:sekrit@h:notaport/',
    'localhost',
])
def test_parse_url_rejects(url):
    with pytest.raises(ValueError) as info:
        parse_url(url)
    text = str(info.value)
    assert 'sekrit' not in text and '\n' not in text


@pytest.mark.parametrize('url, expected', [
    ('amqp://alice:secret@127.0.0.1:5673/', 'amqp://alice@127.0.0.1:5673/'),
    ('amqps://alice:se%40cr:et@host/vh', 'amqps://alice@host/vh'),
    ('amqp://alice@host/', 'amqp://alice@host/'),
    ('amqp://host', 'amqp://host'),
    ('sftp://u:p@h:22/dir?x=1', 'sftp://u@h:22/dir?x=1'),
    ('amqp://u:@h/', 'amqp://u@h/'),
    ('not a url', 'not a url'),
])
def test_redact(url, expected):
    assert redact(url) == expected


def test_redact_password_with_at_sign():
    out = redact('amqp://u:p@ss@h/')
    assert 'p@ss' not in out and out.endswith('@h/') and out.startswith('amqp://u@')


def test_broker_display_masks_password():
    b = Broker('amqp://alice:topsecret@127.0.0.1', reconnect=False)
    assert b.display == 'amqp://alice@127.0.0.1/'
    assert 'topsecret' not in repr(b)


def test_password_lookup_used_only_without_password():
    asked = []

    def lookup(url):
        asked.append(url)
        return 'fromfile'

    b = Broker('amqp://alice@h/', password_lookup=lookup)
    assert b._password() == 'fromfile' and asked == ['amqp://alice@h/']
    b = Broker('amqp://alice:inurl@h/', password_lookup=lookup)
    assert b._password() == 'inurl' and len(asked) == 1


def test_broker_error_exit_code():
    assert BrokerError('x').exit_code == 3


@pytest.mark.parametrize('url, message', [
    ('amqp://u:sekrit@127.0.0.1:notaport/',
     "amqp://u@127.0.0.1:notaport/: invalid broker URL (port 'notaport' is not a number)"),
    ('amqp://u:sekrit@h:65536/vh',
     'amqp://u@h:65536/vh: invalid broker URL (port 65536 is out of range 0-65535)'),
    ('amqp://u:sekrit@[::1/',
     'amqp://u@[::1/: invalid broker URL (unbalanced [ ] around an IPv6 address)'),
    ('amqp://u:sek:rit@[::1]:x/', "amqp://u@[::1]:x/: invalid broker URL (port 'x' is not "
                                  "a number)"),
    ('amqp://', 'amqp:///: broker URL has no host name'),
    ('amqp://u:sekrit@/vh', 'amqp://u@/vh: broker URL has no host name'),
    ('amqp://u:sekrit@my host/', 'amqp://u@my host/: broker URL has a space in its host name'),
])
def test_parse_url_reasons_in_words(url, message):
    with pytest.raises(ValueError) as info:
        parse_url(url)
    assert str(info.value) == message


def test_parse_url_error_quoting_the_netloc_hides_the_password():
    # urlsplit's own text for this error quotes the whole netloc, password included
    with pytest.raises(ValueError) as info:
        parse_url('amqp://u:s\u00e9krit@h\u2100x/')
    text = str(info.value)
    assert 'krit' not in text and 'invalid broker URL' in text and '***' in text


@pytest.mark.parametrize('url, lookup, expected', [
    ('amqp://alice@h/', None, True),             # nothing anywhere
    ('amqp://alice@h/', 'fromfile', False),
    ('amqp://alice:@h/', None, False),           # an empty password written in the URL
    ('amqp://anonymous@h/', None, False),        # anonymous/anonymous by default
    ('amqp://h/', None, False),
])
def test_broker_knows_when_no_password_was_found(url, lookup, expected):
    b = Broker(url, password_lookup=lambda u: lookup)
    b._password()
    assert b._no_password is expected
