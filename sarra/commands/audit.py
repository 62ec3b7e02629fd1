"""sr_police (alias sr_audit): set up a pump's users, permissions and exchanges, and police
its conventions. See man sr_police.

    sr_police [options] setup|check|show|foreground|start|stop|restart|status [<config>]

Options of our own: --fix (check/foreground: also repair what breaks the conventions),
--dry-run (print what would be done), --management_url URL (API location).
Exit codes: 0 clean / done, 1 problems found (fixed or not; the output says which) or a
change failed, 2 configuration error, 3 management API unreachable or login refused.
"""

import logging
import os
import sys
import time

from sarra import paths
from sarra.ops import audit, instances, links, logs, proctitle, secretargs, webdoor
from sarra.config import parser as config, options
from sarra.commands import common
from sarra.config.credentials import Credentials, CredentialsError
from sarra.broker.admin import ApiError, ManagementAPI

ACTIONS = ("setup", "declare", "check", "show", "foreground", "start", "stop", "restart",
           "status", "sanity", "web")
OWN_OPTIONS = ("fix", "management_url")
DAEMON_NAME = "admin"        # instance name when no configuration is named


def _program() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return prog if prog in ("sr_police", "sr_audit") else "sr_police"


def _take_fix(argv):
    """Remove --fix[=on|off] (and a following on/off word) from argv; (argv, fix or None)."""
    out, fix, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a.lstrip("-") == "fix" and a.startswith("-"):
            fix = True
            if i + 1 < len(argv) and argv[i + 1].lower() in options.BOOL_WORDS:
                fix = options.parse_bool(argv[i + 1])
                i += 1
        elif a.startswith("--fix="):
            fix = options.parse_bool(a.split("=", 1)[1])
        else:
            out.append(a)
        i += 1
    return out, fix


@common.pipe_safe
def main(argv=None) -> int:
    program = _program()
    argv = sys.argv[1:] if argv is None else list(argv)
    argv = secretargs.restore(argv)     # passwords its starter kept off our command line
    synopsis = "%s [options] %s [<config>]" % (program, "|".join(ACTIONS))
    if common.wants_version(argv):
        return common.print_version(program)
    if not argv or common.wants_help(argv):
        common.print_help(program, "audit", synopsis, ACTIONS, extra=(
            "  --fix\n      check/foreground: also repair what breaks the conventions\n"
            "  --management_url URL\n      management API (default http://<admin host>:15672/)"))
        return common.OK if argv else common.USAGE
    common.cli_warnings(program)
    try:
        argv, fix = _take_fix(argv)
        pairs, words, no = common.split_argv(argv, ACTIONS)
    except (ValueError, common.UsageError) as e:
        return common.fail(program, str(e), common.USAGE)
    action = next((w for w in words if w in ACTIONS), None)
    rest = [w for w in words if w != action]
    if action is None:
        return common.fail(program, "no action given (one of %s)" % ", ".join(ACTIONS),
                           common.USAGE)
    if len(rest) > 1:
        return common.fail(program, "unexpected argument '%s'" % rest[1], common.USAGE)
    return _action(program, action, rest[0] if rest else None, pairs, no, fix)


@common.pipe_safe
def config_action(action, name) -> int:
    """One action on one configuration, as `sr` asks for it: the same lines and exit code
    as ``sr_police <action> <name>``."""
    program = _program()
    if action not in ACTIONS:
        return common.fail(program, "no action given (one of %s)" % ", ".join(ACTIONS),
                           common.USAGE)
    return _action(program, action, name, [], None, None)


def _action(program, action, name, pairs, no, fix) -> int:
    try:
        cfg = _load(name, pairs)
        if fix is None:
            fix = options.parse_bool(audit._last(cfg.get("fix")) or "off")
        pump = links.linked_pump(cfg)       # admin.conf + links.conf
    except (config.ConfigError, CredentialsError, ValueError) as e:
        return common.fail(program, str(e), common.USAGE)
    iname = cfg.name or DAEMON_NAME
    if action in ("start", "stop", "restart", "status", "sanity"):
        return _daemon(program, action, iname, fix, cfg)
    if action == "show":
        return _show(pump)
    if action == "web":         # the web door of private data, set up once (webdoor.py)
        return _web(program, cfg, pump)
    try:
        api = _api(pump)
    except (CredentialsError, config.ConfigError) as e:
        return common.fail(program, str(e), common.USAGE)
    try:
        if action in ("setup", "declare"):
            return _setup(program, cfg, pump, api)
        if action == "check":
            return _check(program, cfg, pump, api, fix)
        return _foreground(program, cfg, pump, api, fix, no, iname)
    finally:
        api.close()


# ------------------------------------------------------------------ set-up

def _load(name, pairs):
    if name == DAEMON_NAME and not os.path.exists(
            os.path.join(paths.component_config_dir("audit"), name + ".conf")):
        name = None            # 'admin' names the admin.conf read anyway
    cfg = config.load("audit", name, pairs, warn_unknown=False)
    cfg.check_unknown(OWN_OPTIONS + ("msg_by_user", "msg_by_source"))
    return cfg


def _api(pump: audit.Pump) -> ManagementAPI:
    creds = Credentials.load()
    password = creds.password_for(pump.admin_url)
    if password is None:
        raise CredentialsError("%s: no password for the admin %s in credentials.conf"
                               % (paths.credentials_path(), pump.display))
    return ManagementAPI(pump.api_url, pump.admin, password)


def _password_lookup(pump: audit.Pump):
    creds = Credentials.load()

    def lookup(user):
        if user == pump.admin:
            url = pump.admin_url
        elif user == pump.feeder:
            url = pump.feeder_url
        else:
            url = pump.user_url(user)
        password = creds.password_for(url)
        if password is None and user == "anonymous":
            password = "anonymous"
        return password
    return lookup


def _police(cfg, pump, api, logger=None) -> audit.Police:
    return audit.Police(pump, api, _password_lookup(pump), set_passwords=cfg.set_passwords,
                        reset=cfg.reset, max_queue_size=cfg.max_queue_size,
                        dry_run=cfg.dry_run, logger=logger)


def _header(pump):
    print("%s: pump %s, vhost '%s', management API %s" % (
        _program(), pump.display, pump.vhost, pump.api_url + "api/"))
    for note in pump.notes:
        print("note     %s" % note)


def _run(program, police, cfg, pump, fix_setup, fix_all):
    """Survey + fixes + report shovels; returns the findings or an exit code on error."""
    try:
        found = police.run(fix_setup, fix_all)
    except ApiError as e:
        return common.fail(program, str(e), common.BROKER)
    if cfg.report_daemons:
        found += audit.write_report_shovels(pump, cfg.dry_run)
    found += links.write_configs(pump, cfg.dry_run, cfg.report_daemons, apply=fix_setup)
    found += webdoor.police(fix_all, cfg.dry_run)   # .htaccess against the declarations
    return found


def _setup(program, cfg, pump, api) -> int:
    _header(pump)
    found = _run(program, _police(cfg, pump, api), cfg, pump, True, False)
    if isinstance(found, int):
        return found
    mine = [f for f in found if f.setup or f.result != "found"]
    others = [f for f in found if f not in mine]
    for f in mine:
        print(f.line())
    failed = [f for f in mine if f.result in ("failed", "found")]
    changed = [f for f in mine if f.result in ("fixed", "would fix")]
    if not mine:
        print("%s: no change" % program)
    else:
        verb = "would make" if cfg.dry_run else "made"
        print("%s: %s %d change(s)%s" % (program, verb, len(changed),
                                         ", %d failed" % len(failed) if failed else ""))
    if others:
        print("%s: %d other problem(s) with the pump's conventions; see %s check"
              % (program, len(others), program))
    return common.SOME_FAILED if failed else common.OK


def _check(program, cfg, pump, api, fix) -> int:
    _header(pump)
    found = _run(program, _police(cfg, pump, api), cfg, pump, fix, fix)
    if isinstance(found, int):
        return found
    for f in found:
        print(f.line())
    return _summary(program, found, fix)


def _summary(program, found, fix) -> int:
    if not found:
        print("%s: clean, no problem found" % program)
        return common.OK
    fixed = sum(f.result == "fixed" for f in found)
    would = sum(f.result == "would fix" for f in found)
    left = len(found) - fixed - would
    parts = ["%d fixed" % fixed] if fixed else []
    if would:
        parts.append("%d would be fixed" % would)
    if left:
        parts.append("%d not fixed" % left)
    hint = "" if fix or not any(f.fix for f in found) else " (run with --fix to repair)"
    print("%s: %d problem(s) found: %s%s" % (program, len(found), ", ".join(parts), hint))
    return common.SOME_FAILED


def _web(program, cfg, pump) -> int:
    """Write the web door's htpasswd (the pump's users, credentials.conf's passwords) and
    Apache site config (see man sr_police, doc/admin-guide.rst)."""
    decl = getattr(pump, "links", None)        # links.conf names the pump's tree
    root = cfg.web_root or (decl.post_base_dir if decl else None)
    if not root:
        return common.fail(program, "web needs web_root (the pump's tree, its "
                                    "post_base_dir)", common.USAGE)
    lookup = _password_lookup(pump)
    users = {}
    for user in pump.users("source", "subscriber"):
        password = lookup(user)
        if password is None:
            print("note     user %s: no password in credentials.conf, not in htpasswd" % user)
        else:
            users[user] = password
    try:
        where = cfg.web_dir or webdoor.web_dir()
        written = webdoor.write_web(users, audit._last(root), cfg.web_listen, cfg.web_cert,
                                    cfg.web_key, directory=where)
    except OSError as e:
        return common.fail(program, "%s: %s" % (e.filename or webdoor.web_dir(),
                                                e.strerror or e), common.SOME_FAILED)
    for path in written:
        print("written  %s" % path)
    print("%s: web door in %s (%d users)%s" % (program, where, len(users),
                                                "" if written else ", no change"))
    return common.OK


def _show(pump) -> int:
    _header(pump)
    for user, role in pump.roles.items():
        c, w, r = pump.permissions(user)
        print("user %s (%s)\n  configure %s\n  write     %s\n  read      %s" % (
            user, role, c, w, r))
    print("exchanges %s" % " ".join(pump.expected_exchanges()))
    for line in links.describe(pump):        # links.conf: the neighbours, the configs
        print(line)
    return common.OK


# ------------------------------------------------------------------ watchdog loop

def _foreground(program, cfg, pump, api, fix, no, iname) -> int:
    background = no is not None
    log = logs.setup_logging("audit", iname, no if background else None, level=cfg.loglevel,
                             foreground=not background, **logs.from_config(cfg))
    common.quiet_third_party()
    stop = instances.instance_signals(lambda: log.info("stop requested"))
    if background:
        instances.write_pid("audit", iname, no)
        proctitle.for_instance("audit", iname, no, program)     # `sr_police admin 01`
    police = _police(cfg, pump, api, log)
    heartbeat = max(1.0, float(cfg.heartbeat or 300))
    log.info("policing pump %s vhost '%s' every %g s%s", pump.display, pump.vhost,
             heartbeat, " (fixing problems)" if fix else "")
    rc = common.OK
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                links.refresh(pump)         # links.conf edited: followed at this pass
            except config.ConfigError as e:
                log.error("%s (links.conf not applied; the previous one still is)", e)
            try:
                found = police.run(True, fix)
                if cfg.report_daemons:
                    found += audit.write_report_shovels(pump, cfg.dry_run)
                found += links.write_configs(pump, cfg.dry_run, cfg.report_daemons)
                found += webdoor.police(fix, cfg.dry_run)
            except ApiError as e:
                log.error("%s", e)
                rc = e.exit_code
            else:
                for f in found:
                    level = logging.INFO if f.result in ("fixed", "would fix") else \
                        logging.WARNING
                    log.log(level, "%s", f.line())
                log.info("pass done: %d finding(s), %d fixed", len(found),
                         sum(f.result == "fixed" for f in found))
                rc = common.SOME_FAILED if any(f.result != "fixed" for f in found) else \
                    common.OK
            stop.wait(max(0.0, heartbeat - (time.monotonic() - started)))
    finally:
        if background:
            instances.remove_pid("audit", iname, no)
        logging.shutdown()
    return rc


def _daemon(program, action, iname, fix, cfg) -> int:
    extra = ["--fix"] if fix else []
    if action in ("stop", "restart"):
        n = instances.stop("audit", iname)
        if action == "stop":
            print("%s %s: stopped %d instance(s)" % (program, iname, n))
            return common.OK
    if action == "status":      # the same state and exit code as `sr status` (health)
        return common.print_status(program, "audit", iname, cfg, 1)
    if action == "sanity":
        st = instances.status("audit", iname)
        if not st.expected or st.running:
            return common.OK
    started = instances.start("audit", iname, 1, argv_extra=extra,
                              module="sarra.commands.audit")
    for n, code in started.failed:
        print("%s %s: instance %d exited at once with code %s; see %s" % (
            program, iname, n, code, logs.log_file("audit", iname, n)), file=sys.stderr)
        return common.SOME_FAILED
    print("%s %s: started" % (program, iname))
    return common.OK


if __name__ == "__main__":
    sys.exit(main())
