"""The one URL redaction: every ``scheme://user:password@host`` shown without its password.

Logs, errors, reports, process titles and ``show`` all go through :func:`hide_passwords`;
the older names (``sarra.ops.logs.redact``, ``sarra.config.credentials.redact``,
``sarra.config.brokerurl.redact``, ``sarra.transfer.redact``) are thin wrappers that only
choose the form: ``user:***@host`` (mask, the default) or ``user@host`` (``mask=None``).

One reading of a URL for all of them (a URL and its password may come from an attacker or
from a careless configuration): the authority runs from ``://`` to the first ``/`` or white
space; its user information runs to the LAST ``@`` (a password may hold ``@``, ``?``, ``#``
or ``%40``); the user name ends at the first ``:``.  Everything after the ``:`` is hidden.
"""
import re

__all__ = ['hide_passwords']

# scheme://authority: the authority stops at '/' or white space (not at '?' or '#': a
# password may hold them, and hiding too much is the safe side).
_AUTHORITY = re.compile(r'([A-Za-z][A-Za-z0-9+.-]*://)([^/\s]*)')


def _hide(m, mask):
    scheme, authority = m.group(1), m.group(2)
    userinfo, at, host = authority.rpartition('@')
    if not at or ':' not in userinfo:
        return m.group(0)
    user = userinfo.partition(':')[0]
    return '%s%s%s@%s' % (scheme, user, '' if mask is None else ':' + mask, host)


def hide_passwords(text, mask='***'):
    """*text* with the password of every URL in it replaced by *mask* (``user:***@``), or
    dropped with the ``:`` when *mask* is None (``user@``)."""
    if '://' not in text:
        return text
    return _AUTHORITY.sub(lambda m: _hide(m, mask), text)
