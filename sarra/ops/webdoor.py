"""The web door of private data (issue 22): the pump's Apache set up once by its admin,
and the .htaccess files sr_sarra writes checked against the declarations it received.

``sr_police web`` (commands/audit.py) writes, in ``web_dir`` (default
``~/.config/sarra/web/``; a directory Apache's user can reach, e.g. /etc/apache2/sarra):

* ``htpasswd``: the pump's users (sources, subscribers, the accounts of linked pumps) with
  the passwords of credentials.conf, bcrypt-hashed (``$2y$``, Apache 2.4), 0640 (group
  www-data when written by root, as is its directory);
* ``sarra-site.conf``: an Apache site serving the pump's tree over HTTPS, ``AllowOverride
  AuthConfig`` (so that the ``.htaccess`` files sr_sarra writes take effect at once, with
  no restart), Basic authentication against that htpasswd, ``Require all granted`` for
  the rest of the tree, ``.ht*`` never served.

:func:`survey` compares every recorded declaration (readers.json of each sr_sarra
configuration) with the ``.htaccess`` files on disk: one missing or changed by hand, a
directory of a restricted prefix that has none (made before its rule); each finding
carries the fix that ``sr_police check --fix`` applies.
"""

import glob
import json
import os
from typing import Dict, List, Optional

from sarra import paths
from sarra.ops.audit import Finding

HTACCESS = ".htaccess"
SITE_NAME = "sarra-site.conf"
HTPASSWD_NAME = "htpasswd"


def htaccess_text(source: str, prefix: str, users: List[str]) -> str:
    """What sr_sarra writes in the directory of a restricted prefix."""
    return ("# Written by sr_sarra: readers of %s's %s (a declaration of the source).\n"
            "# Rewritten when it changes; sr_police check --fix repairs it.\n"
            "Require user %s\n" % (source, prefix or "/", " ".join(users)))


def web_dir() -> str:
    return os.path.join(paths.config_dir(), "web")


# ------------------------------------------------------------------ the admin's set-up

def marker() -> str:
    """Written by sr_police web (it names the site config): sr_police then has the
    linked pump's sr_sarra write .htaccess files (links.py)."""
    return os.path.join(paths.config_dir(), "web.site")


def is_set_up() -> bool:
    return os.path.exists(marker())


def _web_group(path: str) -> None:
    """Root writing for Debian's Apache: the htpasswd readable by group www-data only."""
    if hasattr(os, "getuid") and os.getuid() == 0:
        try:
            import grp
            os.chown(path, 0, grp.getgrnam("www-data").gr_gid)
        except (ImportError, KeyError, OSError):
            pass


def hash_password(password: str) -> str:
    """A bcrypt hash Apache 2.4 reads ($2y$, what htpasswd -B writes)."""
    import bcrypt       # paramiko's dependency: installed with sarra
    h = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=10)).decode("ascii")
    return "$2y$" + h[4:] if h.startswith("$2b$") else h


def htpasswd_text(users: Dict[str, str], old: str = "") -> str:
    """The htpasswd lines of users {name: password}; a line of ``old`` whose hash still
    matches is kept as it is (no rewrite when nothing changed)."""
    import bcrypt
    kept = {}
    for line in old.splitlines():
        name, _, h = line.partition(":")
        kept[name] = h
    out = []
    for name in sorted(users):
        if ":" in name or "\n" in name:
            continue
        h = kept.get(name, "")
        try:
            same = h.startswith("$2") and bcrypt.checkpw(
                users[name].encode("utf-8"), ("$2b$" + h[4:]).encode("ascii"))
        except ValueError:
            same = False
        out.append("%s:%s" % (name, h if same else hash_password(users[name])))
    return "".join(line + "\n" for line in out)


def site_text(root: str, listen: str, cert: str, key: str, htpasswd: str,
              server_name: str = "") -> str:
    """The Apache site serving ``root`` over HTTPS (see the module's text)."""
    root = os.path.abspath(root).rstrip("/") or "/"
    name = ("    ServerName %s\n" % server_name) if server_name else ""
    return """# Written by sr_police web: the pump's tree over HTTPS, private data by .htaccess
# (sr_sarra writes them with 'htaccess on'). Needs mod_ssl, mod_auth_basic,
# mod_authn_file, mod_authz_user: a2enmod ssl auth_basic authn_file authz_user
<VirtualHost %(listen)s>
%(name)s    SSLEngine on
    SSLCertificateFile "%(cert)s"
    SSLCertificateKeyFile "%(key)s"
    DocumentRoot "%(root)s"
    <Directory "%(root)s">
        Options None
        AllowOverride AuthConfig
        AuthType Basic
        AuthName "sarra pump"
        AuthBasicProvider file
        AuthUserFile "%(htpasswd)s"
        Require all granted
    </Directory>
    <Files ".ht*">
        Require all denied
    </Files>
</VirtualHost>
""" % {"listen": listen, "name": name, "cert": cert, "key": key, "root": root,
       "htpasswd": os.path.abspath(htpasswd)}


def write_web(users: Dict[str, str], root: str, listen: str, cert: str, key: str,
              server_name: str = "", directory: Optional[str] = None) -> List[str]:
    """Write htpasswd and the site config; returns the paths written (changed)."""
    directory = directory or web_dir()
    os.makedirs(directory, mode=0o750, exist_ok=True)
    os.chmod(directory, 0o750)
    pw_path = os.path.join(directory, HTPASSWD_NAME)
    site_path = os.path.join(directory, SITE_NAME)
    try:
        with open(pw_path, encoding="utf-8") as f:
            old = f.read()
    except OSError:
        old = ""
    written = []
    for path, text, mode in ((pw_path, htpasswd_text(users, old), 0o640),
                             (site_path, site_text(root, listen, cert, key, pw_path,
                                                   server_name), 0o644)):
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except OSError:
            pass
        paths.atomic_write(path, text, mode)
        written.append(path)
    _web_group(pw_path)
    _web_group(directory)
    paths.atomic_write(marker(), site_path + "\n", 0o644)
    return written


# ------------------------------------------------------------------ police: rules on disk

def rules_files() -> List[str]:
    """readers.json of every sr_sarra configuration of this account."""
    base = paths.state_dir("sarra", None, create=False)
    return sorted(glob.glob(os.path.join(base, "*", "readers.json")))


def survey(rules_path: str, base: str) -> List[Finding]:
    """Differences between one configuration's declarations and the .htaccess files of
    its tree ``base`` (its post_base_dir)."""
    try:
        with open(rules_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        return [Finding("readers %s" % rules_path, "unreadable (%s)" % e)]
    out = []
    downstream = data.get("_downstream", []) if isinstance(data, dict) else []
    for source, prefixes in sorted(data.items()):
        if source.startswith("_") or not isinstance(prefixes, dict):
            continue
        for prefix, rule in sorted(prefixes.items()):
            users = sorted(set(rule.get("readers", [])) | {source} | set(downstream))
            text = htaccess_text(source, prefix, users)
            dirs = set(rule.get("dirs", []))
            # a directory of the prefix made before its rule: below the tree or below
            # <date>/<source>/ (where pumps file a source's data)
            for d in [os.path.join(base, prefix)] + glob.glob(
                    os.path.join(glob.escape(base), "*", glob.escape(source), glob.escape(prefix))):
                if os.path.isdir(d) and not os.path.islink(d):
                    rel = os.path.relpath(d, base)
                    dirs.add("" if rel == "." else rel)
            for rel in sorted(dirs):
                out += _one(base, rel, text, source, prefix)
    return out


def _one(base: str, rel: str, text: str, source: str, prefix: str) -> List[Finding]:
    directory = os.path.join(base, rel) if rel else base
    target = os.path.join(directory, HTACCESS)
    if not os.path.isdir(directory):
        return []            # nothing there yet: sr_sarra writes it with the first file
    try:
        with open(target, encoding="utf-8") as f:
            have = f.read()
    except FileNotFoundError:
        have = None
    except OSError as e:
        return [Finding("access rule %s" % target, "unreadable (%s)" % e.strerror)]
    if have == text:
        return []
    problem = ("missing (readers of %s:%s)" % (source, prefix or "/") if have is None
               else "differs from the readers %s declared for %s" % (source, prefix or "/"))
    return [Finding("access rule %s" % target, problem, "write it", "written",
                    lambda: paths.atomic_write(target, text, 0o644))]


def police(fix: bool, dry_run: bool = False) -> List[Finding]:
    """sr_police check (and its watchdog): every configuration's declarations against the
    .htaccess files of its tree; with fix, each difference repaired."""
    out = []
    for path in rules_files():
        try:
            with open(path, encoding="utf-8") as f:
                base = json.load(f).get("_base")
        except (OSError, ValueError, AttributeError):
            base = None
        if not base:
            continue            # htaccess off: the broker door only
        for finding in survey(path, base):
            if fix and finding.fix is not None:
                if dry_run:
                    finding.result = "would fix"
                else:
                    try:
                        finding.fix()
                        finding.result = "fixed"
                    except OSError as e:
                        finding.result, finding.error = "failed", str(e)
            out.append(finding)
    return out
