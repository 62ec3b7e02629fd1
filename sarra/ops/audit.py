"""sr_police (sr_audit): a pump's users, permissions and exchanges, and its watchdog.

The pump is described by the admin's configuration (admin.conf, audit/<name>.conf):

    admin  amqp://bunnymaster@pump.example.org/      # role admin (administrator tag)
    feeder amqp://feeder@pump.example.org/           # role feeder (runs the pump)
    declare source alice                             # posts to xs_alice, reads xr_alice
    declare subscriber anonymous                     # reads xpublic
    declare exchange xcustom                         # extra exchange to create

:class:`Pump` turns that into the wanted state (users, tags, permission regexes,
exchanges); :meth:`Police.survey` compares it with what the broker's management API shows
and returns :class:`Finding` objects, each with the fix that would repair it. ``setup``
applies the fixes that create or correct what the admin declared; ``check`` reports every
finding, and with ``fix`` repairs all of them (including deleting what breaks the naming
conventions). Nothing is written when the broker already matches: a second run makes no
change. Facts: doc/spec/pump-topology.md §1-§3, reports.md §5.
"""

import dataclasses
import logging
import os
import re
import urllib.parse
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from sarra import paths
from sarra.broker.client import parse_url, redact
from sarra.config.parser import ConfigError
from sarra.broker.admin import ApiError, ManagementAPI, api_url_for, password_matches
from sarra.ops import reportroute

ROLES = ("admin", "feeder", "source", "subscriber")
ORDINARY = ("source", "subscriber")
STANDARD_EXCHANGES = ("xpublic", "xreport")
DEFAULT_MAX_QUEUE_SIZE = 25000

_PCRE_META = re.compile(r"([\\^$.|?*+()\[\]{}])")


# ------------------------------------------------------------------ permission regexes

def rx_escape(name: str) -> str:
    """Escape the regex metacharacters of a user name (same meaning in Python and PCRE)."""
    return _PCRE_META.sub(r"\\\1", name)


def _extensions(user: str, users: Iterable[str]) -> List[str]:
    """What follows ``user`` in the names of the other users it is a prefix of."""
    return sorted({v[len(user):] for v in users if v != user and v.startswith(user)})


def queue_pattern(user: str, users: Iterable[str] = ()) -> str:
    """Regex (unanchored part) of the queues of ``user``: ``q_<user>.<anything>``.

    The '.' after the name keeps alice's pattern off alice2's queues; a lookahead also
    excludes the queues of users whose name is ``<user>.<more>``."""
    rests = [r for r in _extensions(user, users) if r.startswith(".")]
    look = "(?!%s)" % "|".join(rx_escape(r) + r"\." for r in rests) if rests else ""
    return "q_" + rx_escape(user) + look + r"\..*"


def xs_pattern(user: str, users: Iterable[str] = ()) -> str:
    """Regex of the exchanges ``user`` posts to: ``xs_<user>``, ``xs_<user>_<suffix>``
    (post_exchange_suffix) and ``xs_<user>NN`` (post_exchange_split).

    When another user's name extends this one with '_' or two digits (alice_b, alice12),
    a lookahead gives that user's exchanges (xs_alice_b, xs_alice_b_..., xs_alice_bNN)
    to their owner only."""
    rests = [r for r in _extensions(user, users)
             if r.startswith("_") or re.fullmatch(r"[0-9]{2}", r)]
    look = ""
    if rests:
        look = "(?!(%s)(_|[0-9]{2}$|$))" % "|".join(rx_escape(r) for r in rests)
    return "xs_" + rx_escape(user) + look + "(_.+|[0-9]{2})?"


def _anchored(parts: List[str]) -> str:
    return "^%s$" % parts[0] if len(parts) == 1 else "^(%s)$" % "|".join(parts)


def role_permissions(user: str, role: str, users: Iterable[str] = (),
                     public: Iterable[str] = ("xpublic",)) -> Tuple[str, str, str]:
    """(configure, write, read) regexes of a user with a role (see man sr_police).

    admin and feeder: everything. source and subscriber: configure only their own queues
    (so no exchange can be declared or deleted), write their own queues (to bind them) and
    their own xs_ exchanges, read their own queues, their own xs_ exchanges, the public
    exchanges, and (sources) their report exchange xr_<user>.
    """
    if role in ("admin", "feeder"):
        return ".*", ".*", ".*"
    if role not in ORDINARY:
        raise ValueError("unknown role %r" % role)
    users = list(users)
    q, xs = queue_pattern(user, users), xs_pattern(user, users)
    read = [q, xs, "xp_" + rx_escape(user)]    # xp_<user>: data only it may read (readers)
    if role == "source":
        read.append("xr_" + rx_escape(user))
    read.extend(rx_escape(x) for x in public)
    return _anchored([q]), _anchored([q, xs]), _anchored(read)


# ------------------------------------------------------------------ the pump

@dataclasses.dataclass
class Pump:
    """The wanted state of one pump (one broker vhost), from the admin's configuration."""

    admin_url: str
    feeder_url: Optional[str]
    roles: Dict[str, str]                  # user -> role, in declaration order
    exchanges: List[str]                   # extra exchanges (declare exchange ...)
    api_url: str
    notes: List[str] = dataclasses.field(default_factory=list)
    peers: List[str] = dataclasses.field(default_factory=list)   # neighbours' accounts
    links: Optional[object] = None         # links.conf (sarra.ops.links.Links), if any

    def __post_init__(self):
        u = parse_url(self.admin_url)
        self.scheme, self.host, self.port, self.vhost = u.scheme, u.host, u.port, u.vhost
        self.admin = u.user
        self.feeder = parse_url(self.feeder_url).user if self.feeder_url else None

    @property
    def display(self) -> str:
        return redact(self.admin_url)

    def users(self, *roles: str) -> List[str]:
        return [u for u, r in self.roles.items() if not roles or r in roles]

    def public_exchanges(self) -> List[str]:
        """xpublic, and the declared exchanges whose names end with 'public'."""
        return ["xpublic"] + [x for x in self.exchanges if x.endswith("public")
                              and x != "xpublic"]

    def permissions(self, user: str) -> Tuple[str, str, str]:
        return role_permissions(user, self.roles[user], self.roles, self.public_exchanges())

    def expected_exchanges(self) -> List[str]:
        want = list(STANDARD_EXCHANGES) + list(self.exchanges)
        for u in self.users(*ORDINARY):
            want.extend(["xs_" + u, "xp_" + u])
            if self.roles[u] == "source":
                want.append("xr_" + u)
        return list(dict.fromkeys(want))

    def owns_exchange(self, name: str) -> bool:
        """Is an xs_/xr_/xp_/xl_ exchange one of a declared user's (or declared)?"""
        if name in self.exchanges or name in STANDARD_EXCHANGES:
            return True
        users = list(self.roles)
        if name.startswith("xs_"):
            return any(re.fullmatch(xs_pattern(u, users), name) for u in users)
        if name.startswith("xr_"):
            return name[3:] in self.users("source")
        if name.startswith("xp_"):           # a user's private data (readers.py)
            return name[3:] in self.users(*ORDINARY)
        if name.startswith("xl_"):           # 2016 per-user log exchanges: tolerated
            return name[3:] in self.users(*ORDINARY)
        return True

    def queue_owner(self, name: str) -> Optional[str]:
        """The declared user whose queue this is (q_<user>.<...>), else None."""
        users = list(self.roles)
        owners = [u for u in users if re.fullmatch(queue_pattern(u, users), name)]
        return max(owners, key=len) if owners else None

    def user_url(self, user: str) -> str:
        """amqp(s)://<user>@<pump host>:<port>/<vhost>: the credentials.conf key."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        vhost = "" if self.vhost == "/" else urllib.parse.quote(self.vhost, safe="")
        return "%s://%s@%s:%d/%s" % (self.scheme, urllib.parse.quote(user, safe=""), host,
                                     self.port, vhost)


def _last(value):
    if isinstance(value, (list, tuple)):
        return value[-1] if value else None
    return value


def pump_from_config(cfg) -> Pump:
    """The Pump a loaded sr_audit Config describes; ConfigError (exit 2) when unusable."""
    admin = cfg.admin or cfg.broker
    where = cfg.origin("admin") if cfg.admin else cfg.origin("broker")
    if not admin:
        raise ConfigError("%s: no 'admin amqp://<user>@<host>/' line (put it in admin.conf)"
                          % os.path.join(paths.config_dir(), "admin.conf"))
    try:
        parse_url(admin)
        if cfg.feeder:
            parse_url(cfg.feeder)
    except ValueError as e:
        raise ConfigError("%s: %s" % (where, e)) from None
    notes: List[str] = []
    roles: Dict[str, str] = {}
    admin_user = parse_url(admin).user
    roles[admin_user] = "admin"
    if cfg.feeder:
        f_user = parse_url(cfg.feeder).user
        if f_user != admin_user:
            roles[f_user] = "feeder"
    for role in ("source", "subscriber"):
        for user in cfg.declared.get(role, []):
            had = roles.get(user)
            if had is None:
                roles[user] = role
            elif had != role:
                if had == "subscriber" and role == "source":
                    roles[user] = "source"
                notes.append("user '%s' is declared %s and %s; it gets the %s permissions"
                             % (user, had, role, roles[user]))
    exchanges = []
    for x in cfg.declared.get("exchange", []):
        if not x.startswith("x"):
            raise ConfigError("%s: declared exchange '%s' does not start with 'x' (every "
                              "exchange of a pump must)" % (cfg.origin("declare"), x))
        exchanges.append(x)
    api = api_url_for(admin, _last(cfg.get("management_url")))
    pump = Pump(admin, cfg.feeder, roles, list(dict.fromkeys(exchanges)), api, notes)
    for u in pump.users(*ORDINARY):
        for r in _extensions(u, roles):
            if re.fullmatch(r"[0-9]{2}", r):
                notes.append("users '%s' and '%s': exchange xs_%s belongs to '%s', so '%s' "
                             "cannot use post_exchange_split shard %s" % (u, u + r, u + r,
                                                                           u + r, u, r))
    return pump


# ------------------------------------------------------------------ findings

@dataclasses.dataclass
class Finding:
    """One difference between the pump as declared and the broker as it is."""

    what: str                      # "user 'alice' (source)", "queue 'foo'"
    problem: str                   # "missing", "name does not start with 'q_'"
    action: str = ""               # "create it"; '' when there is no automatic fix
    done: str = ""                 # "created"
    fix: Optional[Callable[[], None]] = None
    setup: bool = False            # part of the declared set-up (applied by `setup`)
    result: str = "found"          # found | fixed | would fix | failed
    error: str = ""

    def line(self) -> str:
        text = "%s: %s" % (self.what, self.problem)
        if self.result == "fixed":
            return "fixed    %s -> %s" % (text, self.done)
        if self.result == "would fix":
            return "dry-run  %s -> would %s" % (text, self.action)
        if self.result == "failed":
            return "FAILED   %s -> could not %s: %s" % (text, self.action, self.error)
        if self.fix is None:
            return "problem  %s (no automatic fix)" % text
        return "problem  %s (fix: %s)" % (text, self.action)


def _tags(info: Dict) -> List[str]:
    tags = info.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",")]
    return sorted(t for t in tags if t)


def _show_perm(p: Optional[Tuple[str, str, str]]) -> str:
    if p is None:
        return "none"
    return "configure '%s' write '%s' read '%s'" % p


class Police:
    """Compares a Pump with the broker (through the management API) and repairs it."""

    def __init__(self, pump: Pump, api: ManagementAPI,
                 password_for: Callable[[str], Optional[str]], set_passwords: bool = True,
                 reset: bool = False, max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
                 dry_run: bool = False, logger: Optional[logging.Logger] = None):
        self.pump = pump
        self.api = api
        self.password_for = password_for
        self.set_passwords = set_passwords
        self.reset = reset
        self.max_queue_size = max_queue_size
        self.dry_run = dry_run
        self.log = logger or logging.getLogger("sarra.audit")
        self.depths: Dict[str, int] = {}   # queue -> messages at the previous survey

    # ------------------------------------------------------------ running
    def run(self, fix_setup: bool, fix_all: bool) -> List[Finding]:
        """Survey the broker and apply the fixes asked for; returns every finding."""
        findings = self.survey()
        for f in findings:
            if f.result == "found" and f.fix is not None and (fix_all or (fix_setup and f.setup)):
                self.apply(f)
                if f.result == "failed" and f.what.startswith("vhost"):
                    break            # nothing else can be made without the vhost
        return findings

    def apply(self, f: Finding) -> None:
        if f.fix is None:
            return
        if self.dry_run:
            f.result = "would fix"
            return
        try:
            f.fix()
        except ApiError as e:
            f.result, f.error = "failed", str(e)
            self.log.debug("fix of %s failed: %s", f.what, e)
            return
        f.result = "fixed"

    # ------------------------------------------------------------ survey
    def survey(self) -> List[Finding]:
        """Every difference, in the order the fixes must be applied: the plan that a run
        applies and that --dry-run prints (one computation for both). A missing vhost is
        surveyed as the empty vhost its creation makes, so the plan goes past it."""
        api, vhost = self.api, self.pump.vhost
        found: List[Finding] = []
        fresh = api.vhost(vhost) is None
        if fresh:
            found.append(Finding("vhost '%s'" % vhost, "missing", "create it", "created",
                                 lambda: api.put_vhost(vhost), setup=True))
        users = {u["name"]: u for u in api.users()}
        perms = {} if fresh else {p["user"]: p for p in api.permissions(vhost)}
        found += self._declared_users(users, perms)
        found += self._undeclared_users(users, perms)
        found += self._exchanges({} if fresh else
                                 {e["name"]: e for e in api.exchanges(vhost)})
        found += self._queues([] if fresh else api.queues(vhost))
        found += self._bindings([] if fresh else api.bindings(vhost))
        return found

    def _declared_users(self, users: Dict, perms: Dict) -> List[Finding]:
        api, pump, out = self.api, self.pump, []
        for name, role in pump.roles.items():
            what = "user '%s' (%s)" % (name, role)
            info = users.get(name)
            password = self.password_for(name)
            if info is None:
                tags = "administrator" if role == "admin" else ""
                if password is None:
                    out.append(Finding(what, "missing, and credentials.conf has no password "
                                       "for %s" % pump.user_url(name), setup=True))
                else:
                    out.append(Finding(what, "missing", "create it", "created",
                                       _call(api.put_user, name, password, tags), setup=True))
            else:
                out += self._user_update(name, what, role, info, password)
            want = pump.permissions(name)
            p = perms.get(name)
            have = (p["configure"], p["write"], p["read"]) if p else None
            if have != want or self.reset:
                if have is None:
                    problem = "no permissions on vhost '%s'" % pump.vhost
                elif have == want:
                    problem = "permissions re-applied (reset)"
                else:
                    problem = "; ".join(
                        "%s permission is '%s', the %s role's is '%s'" % (kind, h, role, w)
                        for kind, h, w in zip(("configure", "write", "read"), have, want)
                        if h != w)
                out.append(Finding(what, problem, "set %s" % _show_perm(want),
                                   "set %s" % _show_perm(want),
                                   _call(api.put_permission, pump.vhost, name, *want),
                                   setup=True))
        return out

    def _user_update(self, name, what, role, info, password) -> List[Finding]:
        have = _tags(info)
        if role == "admin":
            want = have if "administrator" in have else sorted(have + ["administrator"])
        else:
            want = []
        problems = []
        if have != want:
            problems.append("tags %s, should be %s" % (",".join(have) or "none",
                                                       ",".join(want) or "none"))
        new_password = None
        if self.set_passwords and password is not None:
            matches = password_matches(info, password)
            if matches is False or (self.reset and matches is None):
                problems.append("password differs from credentials.conf")
                new_password = password
            elif self.reset:
                new_password = password
        if not problems and new_password is None:
            return []
        problem = "; ".join(problems) or "password re-applied (reset)"
        return [Finding(what, problem, "update it", "updated",
                        _call(self.api.put_user, name, new_password, ",".join(want),
                              keep=info), setup=True)]

    def _undeclared_users(self, users: Dict, perms: Dict) -> List[Finding]:
        out = []
        for name in perms:
            if name in self.pump.roles:
                continue
            elsewhere = [p["vhost"] for p in self.api.user_permissions(name)
                         if p.get("vhost") != self.pump.vhost]
            problem = "has permissions on vhost '%s' but no role in admin.conf" % self.pump.vhost
            if elsewhere or "administrator" in _tags(users.get(name, {})):
                out.append(Finding("user '%s'" % name, problem,
                                   "remove its permissions on vhost '%s'" % self.pump.vhost,
                                   "permissions removed",
                                   _call(self.api.delete_permission, self.pump.vhost, name)))
            else:
                out.append(Finding("user '%s'" % name, problem, "delete the user", "deleted",
                                   _call(self.api.delete_user, name)))
        return out

    def _exchanges(self, present: Dict[str, Dict]) -> List[Finding]:
        api, vhost, out = self.api, self.pump.vhost, []
        expected = self.pump.expected_exchanges()
        for name in expected:
            e = present.get(name)
            what = "exchange '%s'" % name
            if e is None:
                out.append(Finding(what, "missing", "create it", "created",
                                   _call(api.put_exchange, vhost, name), setup=True))
            elif e.get("type") != "topic" or not e.get("durable") or e.get("auto_delete"):
                out.append(Finding(what, "is a %s%s%s exchange, should be a durable topic "
                                   "exchange (delete it by hand, then run setup)" % (
                                       "durable " if e.get("durable") else "transient ",
                                       "auto-delete " if e.get("auto_delete") else "",
                                       e.get("type"))))
        for name in sorted(present):
            if name == "" or name.startswith("amq.") or name in expected:
                continue
            what = "exchange '%s'" % name
            delete = _call(api.delete_exchange, vhost, name)
            if not name.startswith("x"):
                out.append(Finding(what, "name does not start with 'x'", "delete it",
                                   "deleted", delete))
            elif not self.pump.owns_exchange(name):
                out.append(Finding(what, "belongs to no declared user", "delete it",
                                   "deleted", delete))
        return out

    def _queues(self, queues: List[Dict]) -> List[Finding]:
        api, vhost, out = self.api, self.pump.vhost, []
        seen = {}
        for q in sorted(queues, key=lambda q: q["name"]):
            name = q["name"]
            n = int(q.get("messages") or q.get("messages_ready") or 0)
            consumers = int(q.get("consumers") or 0)
            seen[name] = n
            what = "queue '%s'" % name
            state = "%d messages, %d consumers" % (n, consumers)
            delete = _call(api.delete_queue, vhost, name)
            if not name.startswith("q_"):
                out.append(Finding(what, "name does not start with 'q_' (%s)" % state,
                                   "delete it", "deleted", delete))
            elif self.pump.queue_owner(name) is None:
                out.append(Finding(what, "belongs to no declared user (%s)" % state,
                                   "delete it", "deleted", delete))
            elif consumers == 0 and n > self.max_queue_size:
                prev = self.depths.get(name)
                trend = "" if prev is None else ", %+d since the last check" % (n - prev)
                out.append(Finding(what, "%d messages and no consumer (max_queue_size %d%s)"
                                   % (n, self.max_queue_size, trend),
                                   "delete it", "deleted", delete))
        self.depths = seen
        return out

    def _bindings(self, bindings: List[Dict]) -> List[Finding]:
        out = []
        for b in bindings:
            if b.get("destination_type") != "exchange":
                continue
            src, dst = b.get("source", ""), b.get("destination", "")
            out.append(Finding(
                "binding '%s' -> exchange '%s' (key '%s')" % (src, dst, b.get("routing_key")),
                "exchange-to-exchange binding (copies one exchange's messages into another; "
                "no pump component makes them)", "delete it", "deleted",
                _call(self.api.delete_exchange_binding, self.pump.vhost, src, dst,
                      b.get("properties_key", "~"))))
        return out


def _call(fn, *args, **kwargs) -> Callable[[], None]:
    return lambda: fn(*args, **kwargs)


# ------------------------------------------------------------------ report routing shovels

def _report_common(feeder: str) -> List[str]:
    """The bindings and post broker every report shovel has.

    reports.md §1-2: reports are v02.report.#, v02.log.# from 2016-era peers, and v02.post
    for a v2 consumer's report on a root-level file (its topic was never changed); on
    xs_<user> posts with that key are dropped by msg_by_user (a report has 7 fields)."""
    return ["topic_prefix v02.report", "subtopic #", "topic_prefix v02.log", "subtopic #",
            "topic_prefix v02", "subtopic post", "post_broker %s" % feeder]


def report_shovels(pump: Pump, left_out: Iterable[str] = ()) -> Dict[str, str]:
    """{config name: text} of the report routing shovels (reports.md §5.1): rr_<user>2xreport
    per user, one rr_xreport_route for every source but ``left_out`` (reportroute.py)."""
    feeder = redact(pump.feeder_url)
    out = {}
    common = _report_common(feeder)
    for user in pump.users(*ORDINARY):
        if user in pump.peers:
            continue        # a neighbour relays others' reports: links.py's ln_<pump>2xreport
        name = "rr_%s2xreport" % user
        out[name] = "\n".join([
            "# Written by sr_police: copy the reports %s publishes on xs_%s to xreport," % (
                user, user),
            "# keeping only those that name %s as the consumer (no spoofed reports)." % user,
            "# Rename to %s.conf.off to stop routing (sr_police will not rewrite it)." % name,
            "broker %s" % feeder, "exchange xs_%s" % user] + common + [
            "post_exchange xreport", "on_message msg_by_user", "msg_by_user %s" % user,
            "report_back off", reportroute.NO_POST_LOG[0], reportroute.NO_POST_LOG[1], ""])
    sources = [u for u in pump.users("source") if u not in set(left_out)]
    if sources:
        out[reportroute.ROUTE] = reportroute.route_text(feeder, sources, common)
    return out


def write_report_shovels(pump: Pump, dry_run: bool = False,
                         directory: Optional[str] = None) -> List[Finding]:
    """Write the missing rr_* shovel configs (never over a file or its .off twin); rewrite
    rr_xreport_route when the sources changed and it is as sr_police wrote it; retire the
    per-source rr_xreport2<source> of earlier versions (reportroute.py)."""
    if not pump.feeder_url:
        return [Finding("report routing", "report_daemons is on but no 'feeder' URL is "
                        "configured (the shovels run as the feeder)")]
    directory = directory or paths.component_config_dir("shovel")
    feeder, common = redact(pump.feeder_url), _report_common(redact(pump.feeder_url))
    old, kept = reportroute.old_shovels(directory, feeder, pump.users("source"))
    out = []
    for name, text in report_shovels(pump, left_out=kept).items():
        path = os.path.join(directory, name + ".conf")
        if os.path.exists(path + ".off"):
            continue
        if not os.path.exists(path):
            out.append(_applied(Finding("shovel config %s" % path, "missing", "write it",
                                        "written", _call(paths.atomic_write, path, text,
                                                         0o644), setup=True), dry_run, path))
            continue
        if name != reportroute.ROUTE:
            continue
        have = reportroute.read_text(path)
        if have != text and reportroute.is_untouched_route(have, feeder, common):
            out.append(_applied(Finding("shovel config %s" % path, "the sources routed "
                                        "changed", "rewrite it", "rewritten (reloaded)",
                                        _call(reportroute.rewrite, path, text), setup=True),
                                dry_run, path))
    for path, name in old:
        out.append(_applied(Finding("shovel config %s" % path, "one shovel per source "
                                    "(each reads every report); %s routes them all" %
                                    reportroute.ROUTE, "stop it and delete it",
                                    "stopped and deleted", _call(reportroute.retire, path,
                                                                 name), setup=True),
                            dry_run, path))
    for source, (stopped, why) in sorted(kept.items()):
        if not stopped:
            out.append(Finding("report routing of source '%s'" % source, "%s; %s leaves it "
                               "out (rename it .off or remove it)" % (why, reportroute.ROUTE)))
    return out


def _applied(f: Finding, dry_run: bool, path: str) -> Finding:
    if dry_run:
        f.result = "would fix"
        return f
    try:
        f.fix()
        f.result = "fixed"
    except OSError as e:
        f.result, f.error = "failed", "%s: %s" % (path, e.strerror or e)
    return f
