"""credentials.conf: secrets for broker and transfer URLs (config.md §4).

Other files and the command line name URLs without passwords; `Credentials.lookup`
finds the matching entry (scheme, user, host, port; for AMQP also the vhost) and
returns the secret plus per-entry options. Passwords never appear in str/repr/errors:
use `redact(url)` whenever a URL is logged.
"""

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from urllib.parse import unquote, urlsplit

from sarra import paths
from sarra.redaction import hide_passwords

logger = logging.getLogger("sarra.credentials")

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "http": 80, "https": 443, "ftp": 21,
                 "ftps": 21, "sftp": 22}

_URL_SPLIT = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#]*)(.*)$", re.S)


class CredentialsError(Exception):
    """Unusable credentials file; the message never contains a password."""
    exit_code = 2


def redact(url):
    """The URL with its password replaced by ***; anything not a str is returned as it is."""
    return hide_passwords(url) if isinstance(url, str) else url


def redact_text(text: str) -> str:
    """Mask every 'scheme://user:secret@' found inside a longer text."""
    return hide_passwords(text)


@dataclass
class Credential:
    """One parsed URL with its secret. repr/str show no password or token."""
    scheme: str
    user: Optional[str]
    password: Optional[str]
    host: str
    port: Optional[int]
    vhost: str = "/"
    path: str = ""
    options: Dict[str, object] = field(default_factory=dict)
    found: bool = False          # True when the secret came from credentials.conf

    @property
    def effective_port(self) -> Optional[int]:
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme)

    @property
    def url(self) -> str:
        """The URL without any password (safe to log)."""
        netloc = self.host if ":" not in self.host else "[%s]" % self.host
        if self.port is not None:
            netloc += ":%d" % self.port
        if self.user:
            netloc = self.user + "@" + netloc
        return "%s://%s%s" % (self.scheme, netloc, self.path)

    @property
    def bearer_token(self) -> Optional[str]:
        return self.options.get("bearer_token")  # type: ignore[return-value]

    @property
    def ssh_keyfile(self) -> Optional[str]:
        return self.options.get("ssh_keyfile")  # type: ignore[return-value]

    @property
    def passive(self) -> bool:
        return bool(self.options.get("passive", True))

    @property
    def binary(self) -> bool:
        return bool(self.options.get("binary", True))

    @property
    def tls(self) -> bool:
        return bool(self.options.get("tls", False))

    @property
    def prot_p(self) -> bool:
        return bool(self.options.get("prot_p", False))

    def __repr__(self) -> str:
        opts = {k: ("***" if k == "bearer_token" else v) for k, v in self.options.items()}
        return "Credential(%s, password=%s, vhost=%r, options=%r, found=%r)" % (
            self.url, "***" if self.password else None, self.vhost, opts, self.found)

    __str__ = __repr__


def _parse_options(text: str, where: str) -> Dict[str, object]:
    opts: Dict[str, object] = {}
    for word in (w for w in re.split(r"[,\s]+", text.strip()) if w):
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if key in ("ssl", "tls"):
            opts["tls"] = True
        elif key == "prot_p":
            opts["prot_p"] = True
        elif key == "passive":
            opts["passive"] = True
        elif key == "active":
            opts["passive"] = False
        elif key == "binary":
            opts["binary"] = True
        elif key == "ascii":
            opts["binary"] = False
        elif key in ("bearer_token", "bt") and sep:
            opts["bearer_token"] = value
        elif key == "ssh_keyfile" and sep:
            opts["ssh_keyfile"] = os.path.expanduser(value)
        elif key in ("source", "sources") and sep and value.strip():
            # a pump lends this entry only to these sources (fetchpolicy.py); repeatable
            opts.setdefault("sources", []).append(value.strip())  # type: ignore[union-attr]
        else:
            logger.warning("%s: unknown credential option %r ignored", where, key)
    return opts


def parse_url(url: str, where: str = "") -> Credential:
    """Split a URL into a Credential (password URL-decoded). ValueError names no secret."""
    prefix = where + ": " if where else ""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("%sbad URL %s" % (prefix, redact(url))) from None
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc and scheme != "file":
        raise ValueError("%snot a URL: %s" % (prefix, redact(url)))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    host = (parts.hostname or "").lower()
    path = parts.path or ""
    vhost = "/"
    if scheme in ("amqp", "amqps"):
        vhost = unquote(path[1:]) if len(path) > 1 else "/"
        if not user:
            user, password = "anonymous", password or "anonymous"
    return Credential(scheme, user, password, host, port, vhost, path)


def make_private(fd: int, path: str) -> None:
    """credentials.conf is 0600 (the plan: "force permissions to 600"): one that group or
    other may use is set to 0600 with one warning naming the file when it belongs to the
    user running the command; CredentialsError (the file, what to run) when it cannot be.
    Works on the open file (fstat/fchmod): the file checked is the file read."""
    if not hasattr(os, "geteuid"):
        return     # Windows: no owner/group/other bits (the file's ACL protects it)
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return
    if st.st_uid == os.geteuid():
        try:
            os.fchmod(fd, 0o600)
        except OSError as e:
            raise CredentialsError("%s: readable by group/other (mode %04o) and cannot be "
                                   "set to 0600: %s; run: chmod 600 %s"
                                   % (path, mode, e.strerror, path)) from None
        logger.warning("%s: was mode %04o (group/other could read it); set to 0600",
                       path, mode)
        return
    raise CredentialsError("%s: readable by group/other (mode %04o) and owned by uid %d, not "
                           "by this user (uid %d); its owner must run: chmod 600 %s"
                           % (path, mode, st.st_uid, os.geteuid(), path))


class Credentials:
    """The entries of credentials.conf, in file order (first match wins)."""

    def __init__(self, entries: Optional[List[Credential]] = None, path: Optional[str] = None):
        self.entries: List[Credential] = list(entries or [])
        self.path = path

    def __repr__(self) -> str:
        return "Credentials(%s, %d entries)" % (self.path, len(self.entries))

    @classmethod
    def load(cls, path: Optional[str] = None) -> "Credentials":
        path = path or paths.credentials_path()
        try:
            with open(path, encoding="utf-8") as f:
                make_private(f.fileno(), path)
                text = f.read()
        except FileNotFoundError:
            return cls([], path)
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or "not UTF-8 text"
            raise CredentialsError("%s: cannot read: %s" % (path, reason)) from None
        return cls(cls.parse(text, path), path)

    @staticmethod
    def parse(text: str, path: str = "credentials.conf") -> List[Credential]:
        entries = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = "%s:%d" % (path, lineno)
            url, _, rest = line.partition(" ")
            if "\t" in url:
                url, _, more = url.partition("\t")
                rest = more + " " + rest
            try:
                cred = parse_url(url, where)
            except ValueError as e:
                logger.warning("%s; line ignored", e)
                continue
            cred.options = _parse_options(rest, where)
            cred.found = True
            entries.append(cred)
        return entries

    def _match(self, want: Credential) -> Optional[Credential]:
        for c in self.entries:
            if c.scheme != want.scheme or c.host != want.host:
                continue
            if c.effective_port != want.effective_port:
                continue
            if (c.user or None) != (want.user or None):
                continue
            if want.scheme in ("amqp", "amqps") and c.vhost != want.vhost:
                continue
            return c
        return None

    def lookup(self, url: str) -> Credential:
        """Credential for `url`: the URL's own fields, with password and options from the
        first matching entry. A password written in `url` itself takes precedence.
        `found` tells whether an entry matched. CredentialsError if url is not a URL."""
        try:
            want = parse_url(url)
        except ValueError as e:
            raise CredentialsError(str(e)) from None
        explicit_pw = urlsplit(url.strip()).password is not None
        entry = self._match(want)
        if entry is not None:
            want.options = dict(entry.options)
            want.found = True
            if not explicit_pw:
                want.password = entry.password
        return want

    def password_for(self, url: str) -> Optional[str]:
        """The password to log in to `url` with (written in the URL, else from the first
        matching entry), or None: the one password lookup, e.g. a Broker's password_lookup.
        CredentialsError if url is not a URL."""
        return self.lookup(url).password


def no_password_text(url: str, path: Optional[str] = None) -> str:
    """Why a login without a password failed: 'no password for <url> in <credentials.conf>
    (add a line <url with user:PASSWORD>)'. `url` is shown without any password."""
    shown = redact(url)
    m = _URL_SPLIT.match(shown)
    example = shown
    if m and "@" in m.group(2):
        user, host = m.group(2).rsplit("@", 1)
        example = "%s%s:PASSWORD@%s%s" % (m.group(1), user.split(":", 1)[0], host, m.group(3))
    return "no password for %s in %s (add a line %s)" % (
        shown, path or paths.credentials_path(), example)


def lookup(url: str, path: Optional[str] = None) -> Credential:
    """Convenience: Credentials.load(path).lookup(url)."""
    return Credentials.load(path).lookup(url)

