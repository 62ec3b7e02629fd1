"""What a source may make a pump fetch, and whose credentials the pump lends it.

At a pump (sr_sarra with ``source_from_exchange on``) every URL comes from a source the
pump does not trust. Before any transfer, ``check(flow, work)`` applies one policy to the
message's URL and raises ``Outcome(403, ...)`` (acked, reported to the source, never
retried) when the URL is not allowed:

* the URL is read the way the transfer layer reads it (``sarra.transfer.split_url``:
  scheme compared case-insensitively, ``%20``/``%23`` decoded the same way), and forms the
  layers could read differently are refused: control characters or spaces, more than
  one ``@``, a backslash or ``%`` in the host part, a port that is not a number, an
  empty host, a ``file:`` URL with a host (``file://h/...``) or a relative path;
* its scheme must be in ``fetch_schemes`` (default http, https, sftp, ftp, ftps);
  ``file`` only when listed there, and then only for paths whose real path (symbolic
  links and ``..`` resolved) lies below the real path of ``base_dir``;
* its host must match ``fetch_hosts`` when that is set (``host``, ``host:port``,
  ``*.domain``);
* a credentials.conf entry matching the URL is used only when the admin lent it to the
  posting source (``source=<user>`` on the entry's line, repeatable, ``source=*`` for
  every source); a URL that matches an entry not lent to its source is refused, and an
  ``sftp`` URL with neither a lent entry nor a password of its own is refused too (the
  pump's own ssh keys and agent are never tried for a source).

``lend(flow, url, cred)`` applies the same lending rule where the transfer drivers ask
for credentials (flow._credential_for), so that a driver never sees a secret the check
would have refused; for a ``file:`` URL it tells the file driver to read only below
``base_dir``, judged on the file it opened (a name swapped for a link after the check
cannot escape). Components other than a pump are not affected.
"""

import os
import re
from typing import Iterable, Optional

from sarra.config.credentials import Credential, Credentials, redact
from sarra.flow.work import Outcome

DEFAULT_SCHEMES = ("http", "https", "sftp", "ftp", "ftps")

#: characters refused anywhere in a URL: controls, space, DEL (a v02 relpath escapes
#: spaces as %20; a raw one is a form other layers split differently)
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)\Z", re.S)
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_USERINFO = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:%-]*")


class Refused(ValueError):
    """A URL the policy does not allow; str() is the one-line reason."""


def shown(text, limit=200) -> str:
    """text safe for one log or report line: no password, no control characters, cut."""
    s = redact(str(text))
    s = "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256
                else "\\u%04x" % ord(c) for c in s)
    return s if len(s) <= limit else s[:limit] + "..."


def is_pump(cfg) -> bool:
    return bool(getattr(cfg, "source_from_exchange", False))


# ------------------------------------------------------------------ reading the URL
def split(url: str):
    """url's Endpoint (scheme, host, port, user, password, path) as the transfer layer
    reads it; Refused for a form that some layer could read differently."""
    from sarra.transfer import TransferError, split_url
    if not isinstance(url, str) or not url:
        raise Refused("empty URL")
    if _BAD_CHARS.search(url):
        raise Refused("control character or space in URL %s" % shown(url))
    m = _SCHEME.match(url)
    if not m:
        raise Refused("not a URL: %s" % shown(url))
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == "file":
        # the forms split_url maps to a local path: file:/p, file:///p, file://localhost/p
        if rest.startswith("//") and not (rest.startswith("///")
                                          or rest.startswith("//localhost/")):
            raise Refused("file: URL with a host: %s" % shown(url))
        if not rest.startswith("/"):
            raise Refused("file: URL with a relative path: %s" % shown(url))
    else:
        if not rest.startswith("//"):
            raise Refused("no host in URL %s" % shown(url))
        netloc = rest[2:].split("/", 1)[0]
        userinfo, at, hostport = netloc.rpartition("@")
        if "@" in userinfo:
            raise Refused("more than one @ in the host part of %s" % shown(url))
        if at and not _USERINFO.fullmatch(userinfo):
            raise Refused("odd user part in %s" % shown(url))
        host, port = hostport, ""
        if ":" in hostport and not hostport.endswith("]"):
            host, _, port = hostport.rpartition(":")
        if not _HOST.fullmatch(host or ""):
            raise Refused("bad host in URL %s" % shown(url))
        if port and not (port.isdigit() and port.isascii() and 0 < int(port) < 65536):
            raise Refused("bad port in URL %s" % shown(url))
    try:
        ep = split_url(url)
    except TransferError as e:
        raise Refused(str(e)) from None
    return ep


def _host_allowed(host: str, port: Optional[int], allowed: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        want_host, want_port = entry, None
        m = re.fullmatch(r"(.*):(\d+)", entry)
        if m and not entry.endswith("]"):
            want_host, want_port = m.group(1), int(m.group(2))
        want_host = want_host.rstrip(".")
        if want_port is not None and want_port != port:
            continue
        if want_host == "*" or want_host == host:
            return True
        if want_host.startswith("*.") and host.endswith(want_host[1:]):
            return True
    return False


def local_path(url: str) -> str:
    """The local path a file: URL names, read by the file driver's own function."""
    from sarra.transfer.file import local_path_of
    return local_path_of(url)


def inside(path: str, root: str) -> bool:
    """Whether path's real path (links and .. resolved) is root's real path or below it."""
    real = os.path.realpath(path)
    top = os.path.realpath(root)
    return real == top or real.startswith(top.rstrip("/") + "/")


def check_url(url: str, schemes=DEFAULT_SCHEMES, hosts=(), base_dir=None):
    """Refused with the reason when a source may not make the pump fetch url."""
    ep = split(url)
    allowed = {s.strip().lower() for s in (schemes or ()) if s.strip()}
    if ep.scheme not in allowed:
        raise Refused("scheme %s: not in fetch_schemes (%s)" % (
            shown(ep.scheme, 20), ",".join(sorted(allowed)) or "none"))
    if ep.scheme == "file":
        if not base_dir:
            raise Refused("file: URL and no base_dir to confine it: %s" % shown(url))
        path = local_path(url)
        if not inside(path, base_dir):
            raise Refused("file: URL outside base_dir %s: %s" % (
                os.path.realpath(base_dir), shown(url)))
        return ep
    if hosts and not _host_allowed(ep.host, ep.port, hosts):
        raise Refused("host %s: not in fetch_hosts" % shown(ep.host, 100))
    return ep


# ------------------------------------------------------------------ lending credentials
def lent_to(cred: Credential, source: Optional[str]) -> bool:
    """Whether the admin bound this credentials.conf entry to source (source=<user>)."""
    names = cred.options.get("sources") or ()
    return "*" in names or (bool(source) and source in names)


def bare(url: str) -> Credential:
    """What a driver gets for a URL whose entry is not lent: no secret of the pump's, and
    no use of the pump account's own identity (own_keys off: no ~/.ssh keys or agent for
    sftp, no ~/.netrc login for http)."""
    from sarra.config.credentials import parse_url
    try:
        cred = parse_url(url)
    except ValueError:
        cred = Credential("", None, None, "", None)
    cred.password = None
    cred.options = {"own_keys": False}
    cred.found = False
    return cred


def check_credentials(credentials: Credentials, url: str, ep, source: Optional[str]):
    """Refused when url would use a credentials.conf entry not lent to source, or (sftp)
    the pump's own ssh keys."""
    if ep.scheme == "file":
        return
    try:
        cred = credentials.lookup(url)
    except Exception:
        cred = None
    if cred is not None and cred.found:
        if not lent_to(cred, source):
            raise Refused("credentials for %s are not lent to source %s (credentials.conf "
                          "option source=)" % (shown(cred.url, 120), shown(source or "-", 40)))
        return
    if ep.scheme == "sftp" and ep.password is None:
        raise Refused("sftp URL %s with no credentials lent to source %s: the pump's own "
                      "ssh keys are never used for a source" % (
                          shown(url, 120), shown(source or "-", 40)))


def check(flow, work):
    """sr_sarra's fetch policy for one message (pumps only): Outcome(403) when refused."""
    cfg = flow.cfg
    if not is_pump(cfg):
        return
    msg = work.msg
    url = msg.download_url      # the URL that is fetched (message.join_url)
    source = msg.headers.get("source") if msg.exchange.startswith("xs_") else None
    try:
        ep = check_url(url, getattr(cfg, "fetch_schemes", None) or DEFAULT_SCHEMES,
                       getattr(cfg, "fetch_hosts", None) or (), getattr(cfg, "base_dir", None))
        credentials = getattr(flow, "credentials", None)
        if credentials is not None:
            check_credentials(credentials, url, ep, source)
    except Refused as e:
        raise Outcome(403, "Forbidden: %s (from %s)" % (e, shown(msg.exchange, 80))) from None


def lend(flow, url: str, cred):
    """The credential a transfer driver may use for url: cred itself except at a pump,
    where only an entry lent to the current message's source is handed out."""
    cfg = getattr(flow, "cfg", None)
    if not is_pump(cfg):
        return cred
    if url[:5].lower() == "file:":
        # the file driver reads only below base_dir, judged again on the file it opened
        out = bare(url)
        schemes = {s.strip().lower() for s in (getattr(cfg, "fetch_schemes", None)
                                               or DEFAULT_SCHEMES)}
        base = getattr(cfg, "base_dir", None)
        out.options["confine"] = base if base and "file" in schemes else ""
        return out
    work = getattr(flow, "msg", None)
    msg = getattr(work, "msg", None)
    source = None
    if msg is not None and msg.exchange.startswith("xs_"):
        source = msg.headers.get("source")
    if cred is not None and getattr(cred, "found", False) and lent_to(cred, source):
        return cred
    return bare(url)
