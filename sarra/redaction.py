"""The one URL redaction: every ``scheme://user:password@host`` shown without its password.

Logs, errors, reports, process titles and ``show`` all go through :func:`hide_passwords`;
the older names (``sarra.ops.logs.redact``, ``sarra.config.credentials.redact``,
``sarra.config.brokerurl.redact``, ``sarra.transfer.redact``) are thin wrappers that only
choose the form: ``user:***@host`` (mask, the default) or ``user@host`` (``mask=None``).

One reading of a URL for all of them (a URL and its password may come from an attacker or
from a careless configuration): the authority runs from ``://`` to the first ``/`` or white
space; its user information runs to the LAST ``@`` (a password may hold ``@``, ``?``, ``#``
or ``%40``); the user name ends at the first ``:``.  Everything after the ``:`` is hidden.
An authority with a ``:`` but no ``@`` followed by an ``@`` further in the word is a
password holding ``/`` (``amqp://u:pa/ss@h/``): hidden to that ``@``.
"""
import re

__all__ = ['hide_passwords']

# scheme://, its authority (to the first '/' or white space; not to '?' or '#': a password
# may hold them, and hiding too much is the safe side), and the rest of the word (to white
# space or ',', which separates the URLs of a list)
_URL = re.compile(r'([A-Za-z][A-Za-z0-9+.-]*://)([^/\s]*)([^\s,]*)')


def _hide(m, mask):
    scheme, authority, rest = m.groups()
    userinfo, at, host = authority.rpartition('@')
    if not at and ':' in authority and '@' in rest:
        # 'amqp://u:pa/ss@h/': a password holding '/' (no port is followed by a path
        # holding an '@' as often as that is written): it runs to the word's last '@'
        at = rest.rindex('@')
        userinfo, host, rest = authority + rest[:at], rest[at + 1:], ''
    elif not at or ':' not in userinfo:
        return scheme + authority + hide_passwords(rest, mask)
    user = userinfo.partition(':')[0]
    return '%s%s%s@%s%s' % (scheme, user, '' if mask is None else ':' + mask, host,
                            hide_passwords(rest, mask))


def hide_passwords(text, mask='***'):
    """*text* with the password of every URL in it replaced by *mask* (``user:***@``), or
    dropped with the ``:`` when *mask* is None (``user@``)."""
    if '://' not in text:
        return text
    return _URL.sub(lambda m: _hide(m, mask), text)
