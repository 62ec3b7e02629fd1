"""sr_poll: list remote directories (ftp, ftps, sftp, http, https) and announce the files
that are new or changed, for a pump to fetch (see man sr_poll).

    sr_poll [options] <action> [<config>]        (v2 order; '<config> <action>' too)

Actions: foreground start stop restart status sanity cleanup list edit add remove enable
disable show log. The poll loop itself is sarra.poll.poller.
"""

import logging
import os
import shutil
import sys

from sarra import paths, plugin
from sarra.broker.client import BrokerError
from sarra.commands import actions, common, consumer
from sarra.config import parser as config
from sarra.config.credentials import CredentialsError
from sarra.ops import instances, logs, proctitle, secretargs
from sarra.flow import presets, routing
from sarra.flow.engine import Flow
from sarra.poll.poller import COMPONENT

PROGRAM = "sr_poll"
ACTIONS = ("foreground", "start", "stop", "restart", "status", "sanity", "cleanup", "list",
           "edit", "add", "remove", "enable", "disable", "show", "log")
ALL_CONFIG_ACTIONS = ("status", "start", "stop", "restart", "sanity", "cleanup")


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
    for w in words:
        if action is None and w in ACTIONS:
            action = w
        elif name is None:
            name = w
        else:
            return common.fail(PROGRAM, f"unexpected argument {w!r}", common.USAGE)
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
    if not cfg.masks and not cfg.plugins.get("do_poll"):
        return ("no accept line: nothing to poll (give 'directory' and 'accept' lines, "
                "or a do_poll plugin)")
    return None


def _one(action, name, pairs, no) -> int:
    try:
        cfg = config.load(COMPONENT, name, pairs)
    except config.ConfigError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    cname = cfg.name or "-"
    if action == "show":
        print(cfg.show(), end="")
        return common.OK
    if action in ("foreground", "start", "restart", "sanity"):
        missing = missing_option(cfg)
        if missing:
            return common.fail(PROGRAM, f"{cname}: {missing}", common.USAGE)
    if action == "foreground":
        return foreground(cfg, no)
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


def foreground(cfg, no=None) -> int:
    background = no is not None
    instance = no or 1
    cname = cfg.name or "-"
    log = logs.setup_logging(COMPONENT, cname, instance if background else None,
                             level=cfg.loglevel, foreground=not background,
                             **logs.from_config(cfg))
    common.quiet_third_party()
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    stop = instances.instance_signals(lambda: log.info("stop requested"))
    if background:
        instances.write_pid(COMPONENT, cname, instance)
        proctitle.for_instance(COMPONENT, cname, instance)
    try:
        return Flow(cfg, presets.preset(COMPONENT), logger=log, stop_event=stop,
                    instance=instance).run()
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
