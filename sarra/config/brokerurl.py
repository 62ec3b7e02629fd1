"""Broker URLs: parse ``amqp://`` / ``amqps://`` URLs into a :class:`BrokerURL`, and show
them without their password (redact()).  Re-exported by sarra.broker.client.
"""

import dataclasses
import re
import urllib.parse

from sarra.redaction import hide_passwords

__all__ = ['BrokerURL', 'parse_url', 'redact']

DEFAULT_PORTS = {'amqp': 5672, 'amqps': 5671}


@dataclasses.dataclass(frozen=True)
class BrokerURL:
    scheme: str
    user: str
    password: str = dataclasses.field(repr=False)  # None when the URL has none
    host: str
    port: int
    vhost: str
    # further broker nodes of a cluster, ((host, port), ...): ``amqp://u@h1,h2:5673/``
    others: tuple = ()

    @property
    def hostport(self):
        """``host:port`` as py-amqp wants it (IPv6 literals in brackets)."""
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{host}:{self.port}'

    @property
    def nodes(self):
        """Every node as (host, port), the first one named first."""
        return ((self.host, self.port),) + tuple(self.others)

    def node(self, index):
        """This URL reduced to its node *index* (no others)."""
        host, port = self.nodes[index % len(self.nodes)]
        return dataclasses.replace(self, host=host, port=port, others=())


def redact(url):
    """Return *url* with any password removed (``amqp://u:p@h/`` -> ``amqp://u@h/``)."""
    return hide_passwords(str(url), mask=None)


def _display(url):
    """Password-free form of *url* for messages, with at least a '/' path."""
    text = redact(url)
    return text + '/' if re.fullmatch(r'[a-zA-Z][\w+.-]*://[^/?#]*', text) else text


def _reason(url, exc):
    """Why urlsplit refused *url*, in words, never quoting the password."""
    text = str(exc)
    hostpart = url.partition('://')[2].split('/', 1)[0].rpartition('@')[2]
    if text.startswith('Port could not be cast'):
        return 'port %r is not a number' % hostpart.rpartition(':')[2]
    if text.startswith('Port out of range'):
        return 'port %s is out of range 0-65535' % hostpart.rpartition(':')[2]
    if 'IPv6' in text:
        return 'unbalanced [ ] around an IPv6 address'
    secret = re.search(r'//[^/@]*?:([^/]*)@', url)
    if secret and secret.group(1) and secret.group(1) in text:
        text = text.replace(secret.group(1), '***')
    return text


def parse_url(url):
    """Parse an ``amqp://`` or ``amqps://`` URL into a :class:`BrokerURL`.

    No user means ``anonymous``/``anonymous``; a missing password is ``None`` (to be
    looked up in credentials.conf). Raises ValueError (one line, password removed).
    """
    shown = _display(url)
    if ',' in url.partition('://')[2].split('/', 1)[0].rpartition('@')[2]:
        return _parse_cluster_url(url, shown)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f'{shown}: invalid broker URL ({_reason(url, e)})') from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f'{shown}: broker URL must start with amqp:// or amqps://')
    if not parts.hostname:
        raise ValueError(f'{shown}: broker URL has no host name')
    if re.search(r'\s', parts.hostname):
        raise ValueError(f'{shown}: broker URL has a space in its host name')
    unquote = urllib.parse.unquote
    user = unquote(parts.username) if parts.username else ''
    password = unquote(parts.password) if parts.password is not None else None
    if not user:
        user = 'anonymous'
        if password is None:
            password = 'anonymous'
    path = parts.path[1:] if parts.path.startswith('/') else parts.path
    vhost = unquote(path) or '/'
    return BrokerURL(scheme, user, password, parts.hostname, port or DEFAULT_PORTS[scheme],
                     vhost)


def _parse_cluster_url(url, shown):
    """``scheme://[user[:password]@]h1[:p1],h2[:p2],.../vhost``: several nodes of one
    broker cluster (tried in turn, as RabbitMQ clients do); user, password and vhost are
    the same for all."""
    scheme, _, rest = url.partition('://')
    netloc, slash, path = rest.partition('/')
    cred, at, hosts = netloc.rpartition('@')
    nodes = []
    for item in hosts.split(','):
        if not item.strip():
            raise ValueError(f'{shown}: broker URL has an empty host in its node list')
        try:
            first = parse_url(f'{scheme}://{cred}{at}{item}{slash}{path}')
        except ValueError as e:     # name the whole URL, not the one node
            raise ValueError(f'{shown}: {str(e).split(": ", 1)[-1]}') from None
        nodes.append((first.host, first.port))
    first = parse_url(f'{scheme}://{cred}{at}{hosts.split(",")[0]}{slash}{path}')
    return dataclasses.replace(first, others=tuple(nodes[1:]))
