"""sr_poll: list remote directories (ftp, ftps, sftp, http, https) and announce the files
that are new or changed, for a pump to fetch (see man sr_poll).

    sr_poll [options] <action> [<config>]        (v2 order; '<config> <action>' too)

Actions: foreground start stop restart reload status sanity cleanup list edit add remove
rename enable disable show log. The poll is sarra.poll (its source of the flow engine:
sarra/poll/source.py); SIGHUP (the reload action) re-reads the configuration between polls.
"""

import logging
import os
import shutil
import sys
import threading

from sarra import paths, plugin
from sarra.broker.client import BrokerError
from sarra.commands import actions, common, consumer
from sarra.config import parser as config
from sarra.config.credentials import CredentialsError
from sarra.ops import instances, logs, proctitle, secretargs
from sarra.flow import presets, routing
from sarra.flow.engine import Flow
from sarra.poll.poller import COMPONENT, time_zone

PROGRAM = "sr_poll"
ACTIONS = ("foreground", "start", "stop", "restart", "reload", "status", "sanity", "cleanup",
           "list", "edit", "add", "remove", "rename", "enable", "disable", "show", "log")
ALL_CONFIG_ACTIONS = ("status", "start", "stop", "restart", "reload", "sanity", "cleanup")


@common.pipe_safe
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    argv = secretargs.restore(argv)     # passwords its starter kept off our command line
    synopsis = f"{PROGRAM} [options] <action> [<config>]"
    if common.wants_version(argv):
        return common.print_version(PROGRAM)
    if not argv or common.wants_help(argv):
        common.print_help(PROGRAM, COMPONENT, synopsis, ACTIONS)
        return common.OK if argv else common.USAGE
    try:
        pairs, words, no = common.split_argv(argv, ACTIONS)
    except common.UsageError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    action = name = None
    extra = []
    for w in words:
        if action is None and w in ACTIONS:
            action = w
        elif name is None:
            name = w
        elif action == "rename" and not extra:      # sr_poll rename <old> <new>
            extra.append(w)
        else:
            return common.fail(PROGRAM, f"unexpected argument {w!r}", common.USAGE)
    if action == "rename":
        return actions.rename_action(COMPONENT, name, extra)
    if action is None:
        return common.fail(PROGRAM, f"no action given (one of {', '.join(ACTIONS)})",
                           common.USAGE)
    if action in consumer.FILE_ACTIONS:
        return consumer._file_action(COMPONENT, action, name)
    if name is None and action in ALL_CONFIG_ACTIONS:
        rc = common.OK
        for cname, enabled in actions.list_configs(COMPONENT):
            if enabled:
                rc = max(rc, _one(action, cname, pairs, no))
        return rc
    if name is None and action not in ("foreground", "show"):
        return common.fail(PROGRAM, f"action {action} needs a config name", common.USAGE)
    return _one(action, name, pairs, no)


@common.pipe_safe
def config_action(action, name) -> int:
    """One action on one configuration, as `sr` asks for it."""
    if action not in ACTIONS:
        return common.fail(PROGRAM, f"unexpected argument {name!r}", common.USAGE)
    return _one(action, name, [], None)


def missing_option(cfg):
    """Why cfg cannot poll (one line naming the option), or None."""
    for required in ("post_broker", "destination"):
        if not getattr(cfg, required):
            return f"option {required} is required"
    try:
        time_zone(cfg)
    except ValueError as e:
        return str(e)
    if not cfg.masks and not cfg.plugins.get("do_poll"):
        return ("no accept line: nothing to poll (give 'directory' and 'accept' lines, "
                "or a do_poll plugin)")
    return None


def _one(action, name, pairs, no) -> int:
    try:
        cfg = config.load(COMPONENT, name, pairs)
    except config.ConfigError as e:
        if action == "stop":        # its instances run the config they read at start
            return common.stop_unloadable(PROGRAM, COMPONENT, name, e)
        return common.fail(PROGRAM, str(e), common.USAGE)
    cname = cfg.name or "-"
    if action == "show":
        print(cfg.show(), end="")
        return common.OK
    if action in ("foreground", "start", "restart", "reload", "sanity"):
        missing = missing_option(cfg)
        if missing:
            return common.fail(PROGRAM, f"{cname}: {missing}", common.USAGE)
    if action == "foreground":
        return foreground(cfg, no, pairs)
    if action == "reload":      # the config loads (checked above): the instance re-reads it
        return _reload(cfg)
    if action in ("stop", "restart"):
        n = instances.stop(COMPONENT, cname)
        if action == "stop":
            print(f"{PROGRAM} {cname}: stopped {n} instance(s)")
            return common.OK
    if action in ("start", "restart"):
        return _start(cfg)
    if action == "status":
        return common.print_status(PROGRAM, COMPONENT, cname, cfg, 1)
    if action == "sanity":
        st = instances.status(COMPONENT, cname)
        return _start(cfg) if st.expected and not st.running else common.OK
    if action == "log":
        os.execvp("tail", ["tail", "-f", str(logs.log_file(COMPONENT, cname, 1))])
    if action == "cleanup":
        instances.stop(COMPONENT, cname)
        shutil.rmtree(paths.state_dir(COMPONENT, cname, create=False), ignore_errors=True)
        print(f"{PROGRAM} {cname}: state removed (the next start announces every file again)")
        return common.OK
    return common.fail(PROGRAM, f"unknown action {action}", common.USAGE)


def _start(cfg) -> int:
    """sr_poll runs one instance per configuration (components.md)."""
    started = instances.start(COMPONENT, cfg.name, 1, module="sarra.commands.poll")
    for n, code in started.failed:
        why = f": {started.why[n]}" if n in started.why else ""
        print(f"{PROGRAM} {cfg.name}: instance {n} exited at once with code {code}{why}; "
              f"see {logs.log_file(COMPONENT, cfg.name, n)}", file=sys.stderr)
    print(f"{PROGRAM} {cfg.name}: started {len(started)} instance(s)")
    return common.SOME_FAILED if started.failed else common.OK


def _reload(cfg) -> int:
    """SIGHUP to the running instance (it re-reads its configuration between two polls);
    started when it does not run."""
    from sarra.ops import reload
    done = reload.signal_instances(COMPONENT, cfg.name, 1)
    if done.signalled:
        print(f"{PROGRAM} {cfg.name}: reload sent to {len(done.signalled)} instance(s)")
        return common.OK
    print(f"{PROGRAM} {cfg.name}: was not running: starting it")
    return _start(cfg)


def _reload_config(cfg, pairs):
    """The configuration as the instance reads it at start (ConfigError: file:line)."""
    new = config.load(COMPONENT, cfg.config_path or cfg.name, list(pairs or ()),
                      set_state_host=False)
    missing = missing_option(new)
    if missing:
        raise config.ConfigError(missing)
    return new


def foreground(cfg, no=None, pairs=()) -> int:
    background = no is not None
    instance = no or 1
    cname = cfg.name or "-"
    log = logs.setup_logging(COMPONENT, cname, instance if background else None,
                             level=cfg.loglevel, foreground=not background,
                             **logs.from_config(cfg))
    common.quiet_third_party()
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    reload_requested = threading.Event()

    def on_hup():
        log.info("reload requested (SIGHUP): applied between two polls")
        reload_requested.set()

    stop = instances.instance_signals(lambda: log.info("stop requested"), on_reload=on_hup)
    if background:
        instances.write_pid(COMPONENT, cname, instance)
        proctitle.for_instance(COMPONENT, cname, instance)
    try:
        flow = Flow(cfg, presets.preset(COMPONENT), logger=log, stop_event=stop,
                    instance=instance)
        flow.reload_event = reload_requested
        flow.load_config = lambda: _reload_config(cfg, pairs)
        return flow.run()
    except (CredentialsError, plugin.PluginError, routing.ConfigRefused) as e:
        log.error("%s", e)
        return common.USAGE
    except BrokerError as e:
        log.error("%s", e)
        return common.BROKER
    finally:
        if background:
            instances.remove_pid(COMPONENT, cname, instance)
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
