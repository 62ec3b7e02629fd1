"""sr_watch: announce what happens in directory trees, with the options and headers of sr_post.

    sr_watch [options] <action> [<config>]        (v2 order; '<config> <action>' too)

Actions: foreground start stop restart reload status sanity cleanup list edit add remove
rename enable disable show log.  ``foreground`` also runs without a configuration, from
command-line options (--post_broker, --post_base_url, --path ...).  ``reload`` (or SIGHUP)
makes the instance read its configuration again (sarra/flow/reload.py).

An instance is the flow engine with the watch preset: its source (events, readiness,
state) is sarra.watch.daemon.WatchSource; the post step, heartbeat and stats file are the
engine's.

Watch-only options not (yet) in the common option table, read from the configuration:
``snapshot_interval <duration>`` (post a file still being written at that interval, only
its changed blocks; default 0 = wait until it is closed or quiet) and
``ignore_written <on|off>`` (skip files a subscriber of this package wrote and marked with
the user.sr_origin extended attribute, for two-way synchronisation; default off).
"""

import logging
import os
import shutil
import sys
import threading

from sarra import paths, plugin
from sarra.commands import actions
from sarra.config import parser as config, options
from sarra.ops import instances, logs, proctitle, secretargs
from sarra.broker.client import BrokerError
from sarra.commands import common, consumer
from sarra.config.credentials import CredentialsError
from sarra.flow.routing import ConfigRefused
from sarra.watch.daemon import COMPONENT, Daemon

PROGRAM = "sr_watch"
ACTIONS = ("foreground", "start", "stop", "restart", "reload", "status", "sanity", "cleanup",
           "list", "edit", "add", "remove", "rename", "enable", "disable", "show", "log")
ALL_CONFIG_ACTIONS = ("status", "start", "stop", "restart", "reload", "sanity", "cleanup")
WATCH_OPTIONS = {"snapshot_interval": (options.parse_duration, 0.0),
                 "ignore_written": (options.parse_bool, False)}


def load_config(name, pairs, set_state_host=True):
    cfg = config.load(COMPONENT, name, pairs, warn_unknown=False,
                      set_state_host=set_state_host)
    cfg.check_unknown(set(WATCH_OPTIONS) | plugin.declared_options(cfg.plugins))
    for opt, (conv, default) in WATCH_OPTIONS.items():
        raw = cfg.unknown.get(opt)
        if options.lookup(opt) is not None:          # once in the common option table
            value = cfg.get(opt, default)
        else:
            try:
                value = conv(raw[-1] or None) if raw else default
            except ValueError as e:
                raise config.ConfigError(f"{cfg.origin(opt)}: option '{opt}': {e}") from None
        cfg.__dict__["watch_" + opt] = default if value is None else value
    return cfg


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
        elif action == "rename" and not extra:      # sr_watch rename <old> <new>
            extra.append(w)
        else:
            return common.fail(PROGRAM, f"unexpected argument {w!r}", common.USAGE)
    if action == "rename":
        return actions.rename_action(COMPONENT, name, extra)
    if action is None:
        return common.fail(PROGRAM, f"no action given (one of {', '.join(ACTIONS)})", common.USAGE)
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
    """One action on one configuration, as `sr` asks for it: the same lines and exit code
    as ``sr_watch <action> <name>`` (which reads a word that is no action of its own as
    the configuration's name, then the name as an unexpected argument)."""
    if action not in ACTIONS:
        return common.fail(PROGRAM, f"unexpected argument {name!r}", common.USAGE)
    return _one(action, name, [], None)


def _one(action, name, pairs, no) -> int:
    try:
        cfg = load_config(name, pairs)
    except config.ConfigError as e:
        if action == "stop":        # its instances run the config they read at start
            return common.stop_unloadable(PROGRAM, COMPONENT, name, e)
        return common.fail(PROGRAM, str(e), common.USAGE)
    cname = cfg.name or "-"
    if action == "show":
        print(cfg.show(), end="")
        return common.OK
    if action == "foreground":
        return foreground(cfg, no, pairs)
    if action == "reload":      # the config loads (checked above): SIGHUP, as consumers
        return _reload(cfg)
    if action in ("stop", "restart"):
        n = instances.stop(COMPONENT, cname)
        if action == "stop":
            print(f"{PROGRAM} {cname}: stopped {n} instance(s)")
            return common.OK
    if action in ("start", "restart"):
        return _start(cfg)
    if action == "status":      # the same state and exit code as `sr status` (health)
        return common.print_status(PROGRAM, COMPONENT, cname, cfg, 1)
    if action == "sanity":
        st = instances.status(COMPONENT, cname)
        return _start(cfg) if st.expected and not st.running else common.OK
    if action == "log":
        os.execvp("tail", ["tail", "-f", str(logs.log_file(COMPONENT, cname, 1))])
    if action == "cleanup":
        instances.stop(COMPONENT, cname)
        shutil.rmtree(paths.state_dir(COMPONENT, cname, create=False), ignore_errors=True)
        print(f"{PROGRAM} {cname}: state removed (the next start posts every file again)")
        return common.OK
    return common.fail(PROGRAM, f"unknown action {action}", common.USAGE)


def _start(cfg) -> int:
    """sr_watch runs one instance per configuration, whatever `instances` says."""
    started = instances.start(COMPONENT, cfg.name, 1, module="sarra.commands.watch")
    for n, code in started.failed:
        why = f": {started.why[n]}" if n in started.why else ""
        print(f"{PROGRAM} {cfg.name}: instance {n} exited at once with code {code}{why}; "
              f"see {logs.log_file(COMPONENT, cfg.name, n)}", file=sys.stderr)
    print(f"{PROGRAM} {cfg.name}: started {len(started)} instance(s)")
    return common.SOME_FAILED if started.failed else common.OK


def _reload(cfg) -> int:
    from sarra.ops import reload
    done = reload.signal_instances(COMPONENT, cfg.name, 1)
    if done.signalled:
        print(f"{PROGRAM} {cfg.name}: reload sent to {len(done.signalled)} instance(s)")
        return common.OK
    print(f"{PROGRAM} {cfg.name}: was not running: starting it")
    return _start(cfg)


def _missing(cfg):
    """What an sr_watch configuration cannot run without (one line), or None."""
    for required in ("post_broker", "post_base_url"):
        if not getattr(cfg, required):
            return f"option {required} is required"
    if not cfg.paths:
        return "no path to watch (give 'path' lines or --path)"
    return None


def _reload_config(cfg, pairs):
    """The configuration as the instance read it at start (ConfigError: file:line)."""
    new = load_config(cfg.config_path or cfg.name, list(pairs or ()), set_state_host=False)
    missing = _missing(new)
    if missing:
        raise config.ConfigError(f"{new.config_path or PROGRAM}: {missing}")
    return new


def foreground(cfg, no=None, pairs=()) -> int:
    """Run the instance until SIGTERM/SIGINT; SIGHUP: reload (flow/reload.py: the trees
    are watched anew from the configuration read again, the state file kept)."""
    background = no is not None
    instance = no or 1
    cname = cfg.name or "-"
    log = logs.setup_logging(COMPONENT, cname, instance if background else None,
                             level=cfg.loglevel, foreground=not background,
                             **logs.from_config(cfg))
    common.quiet_third_party()
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    missing = _missing(cfg)
    if missing:
        log.error("%s", missing)
        return common.USAGE
    reload_requested = threading.Event()
    on_terminal = not background and sys.stderr.isatty()    # there SIGHUP ends it
    stop = instances.instance_signals(lambda: log.info("stop requested"), on_reload=None
                                      if on_terminal else consumer.on_hup(log, reload_requested))
    if background:
        instances.write_pid(COMPONENT, cname, instance)
        proctitle.for_instance(COMPONENT, cname, instance)      # `sr_watch <cfg> 01`
    try:
        flow = Daemon(cfg, log, stop, instance)
        flow.reload_event = reload_requested
        flow.load_config = lambda: _reload_config(cfg, pairs)
        return flow.run()
    except ConfigRefused:     # the flow logged why
        return common.USAGE
    except (CredentialsError, plugin.PluginError) as e:
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
