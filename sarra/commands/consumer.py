"""The command line shared by the consuming components (sr_subscribe, sr_sarra, ...).

    sr_<component> [options] <action> [<config>]     (v2 order; '<config> <action>' too)

Actions: foreground start stop restart reload status sanity cleanup declare setup list edit
add remove rename enable disable show log. An action without a config applies to every
config of the component (start/stop/restart/reload/status/sanity/cleanup).
``rename <old> <new>`` (v2's order) takes two names.
"""

import logging
import os
import signal
import sys
import threading

from sarra import paths
from sarra.commands import actions
from sarra.flow import presets as components, queueadmin, routing
from sarra.config import parser as config
from sarra.ops import instances, logs, proctitle, secretargs
from sarra.broker.client import BrokerError
from sarra.commands import common
from sarra.config.credentials import CredentialsError

NO_CONFIG_ACTIONS = ("list", "status", "start", "stop", "restart", "reload", "sanity",
                     "cleanup")
FILE_ACTIONS = ("list", "edit", "add", "remove", "enable", "disable")
NEEDS_BROKER = ("foreground", "start", "restart", "reload", "sanity", "declare", "setup",
                "cleanup")


def _split(words):
    action = name = None
    extra = []
    for w in words:
        if action is None and w in common.CONSUMER_ACTIONS:
            action = w
        elif name is None:
            name = w
        else:
            extra.append(w)
    return action, name, extra


@common.pipe_safe
def run(component: str, argv=None) -> int:
    program = f"sr_{component}"
    argv = sys.argv[1:] if argv is None else argv
    argv = secretargs.restore(argv)     # passwords its starter kept off our command line
    synopsis = f"{program} [options] <action> [<config>]"
    if common.wants_version(argv):
        return common.print_version(program)
    if not argv or common.wants_help(argv):
        common.print_help(program, component, synopsis, common.CONSUMER_ACTIONS)
        return common.OK if argv else common.USAGE
    common.cli_warnings(program)
    try:
        pairs, words, no = common.split_argv(argv)
        action, name, extra = _split(words)
    except common.UsageError as e:
        return common.fail(program, str(e), common.USAGE)
    if action is None:
        if len(words) > 1:
            return common.fail(program, f"no action among {' '.join(map(repr, words))} (one "
                               f"of {', '.join(common.CONSUMER_ACTIONS)})", common.USAGE)
        return common.fail(program, f"no action given (one of {', '.join(common.CONSUMER_ACTIONS)})",
                           common.USAGE)
    if action == "rename":      # sr_subscribe rename <old> <new>
        return actions.rename_action(component, name, extra)
    if extra:
        return common.fail(program, f"unexpected argument(s) after {name!r}: {' '.join(extra)} "
                           "(one config per command)", common.USAGE)
    if action in FILE_ACTIONS:
        return _file_action(component, action, name)
    if name is None:
        if action not in NO_CONFIG_ACTIONS:
            return common.fail(program, f"action {action} needs a config name", common.USAGE)
        rc = common.OK
        for cname, enabled in actions.list_configs(component):
            if enabled:
                rc = max(rc, _one(component, action, cname, pairs, no))
        return rc
    return _one(component, action, name, pairs, no)


def _file_action(component, action, name):
    fn = {"list": actions.list_action, "edit": actions.edit, "add": actions.add,
          "remove": actions.remove, "enable": actions.enable, "disable": actions.disable}[action]
    if action == "list":
        return fn(component, name)
    if name is None:
        return common.fail(f"sr_{component}", f"action {action} needs a config name", common.USAGE)
    return fn(component, name)


def _one(component, action, name, pairs, no) -> int:
    program = f"sr_{component}"
    try:
        cfg = config.load(component, name, pairs)
    except config.ConfigError as e:
        # a configuration broken, disabled or removed since its start: its instances may
        # be running still; stop them, or tell about them
        cname = config.config_name(name)
        st = instances.status(component, cname) if action in ("stop", "status") else None
        if st is None or not (st.running or st.expected):
            return common.fail(program, str(e), common.USAGE)
        common.fail(program, f"warning: {e} (acting on its recorded instances)", common.USAGE)
        cfg, load_error = None, str(e)
    else:
        cname = cfg.name or name
    if cfg is not None and action in NEEDS_BROKER:
        missing = _missing_option(component, cfg)
        if missing:
            return common.fail(program, missing, common.USAGE)
    if action == "show":
        print(cfg.show())
        return common.OK
    if action == "foreground":
        return foreground(component, cfg, no, pairs)
    if action == "start":
        return _start(component, cfg, _instance_args(pairs))
    if action == "stop":
        n = instances.stop(component, cname)
        print(f"{program} {cname}: stopped {n} instance(s)")
        return common.OK
    if action == "restart":
        instances.stop(component, cname)
        return _start(component, cfg, _instance_args(pairs))
    if action == "reload":      # the config loads (checked above): instances re-read it
        return _reload(component, cfg)
    if action == "status":      # the same state and exit code as `sr status` (health)
        wanted = cfg.instances or 1 if cfg is not None else 1
        enabled = cfg is not None or (cname, True) in actions.list_configs(component)
        return common.print_status(program, component, cname, cfg, wanted, enabled,
                                   None if cfg is not None or not enabled else load_error)
    if action == "sanity":
        st = instances.status(component, cname)
        if st.expected and len(st.running) < st.expected:   # options: those of the start
            return _start(component, cfg, _instance_args(pairs) or None)
        return common.OK
    if action == "log":
        path = os.path.join(paths.log_dir(), f"sr_{component}_{cname}_01.log")
        os.execvp("tail", ["tail", "-f", path])
    if action in ("declare", "setup", "cleanup"):
        return _broker_action(component, action, cfg)
    return common.fail(program, f"unknown action {action}", common.USAGE)


def _missing_option(component, cfg):
    """What a configuration cannot run without, as a one-line error (None: nothing)."""
    where = f"{cfg.config_path}: " if cfg.config_path else ""
    if not cfg.broker:
        return f"{where}option broker is required (the broker to consume from)"
    if component == "sender" and not cfg.destination:    # do_send plugins get it too
        return f"{where}option destination is required (where sr_sender sends)"
    return None


def _instance_args(pairs):
    """The command-line options as the instances get them (instances.start records them
    for the supervisor): one '--key=value' word each, so that no value is ever read as an
    action or a config name, and no shell is involved (nothing to quote)."""
    return [f"--{k}" if v is None else f"--{k}={v}" for k, v in pairs]


def _reload(component, cfg) -> int:
    """SIGHUP to the running instances (each re-reads its configuration between two
    batches: sarra/flow/reload.py), as v2: instances above the count stopped, missing
    ones started (with the options of the last start)."""
    from sarra.ops import reload
    wanted = cfg.instances or 1
    done = reload.signal_instances(component, cfg.name, wanted)
    program = f"sr_{component} {cfg.name}"
    if done.signalled:
        print(f"{program}: reload sent to {len(done.signalled)} instance(s)")
    if done.stopped:
        print(f"{program}: stopped instance(s) {' '.join('%02d' % n for n in done.stopped)} "
              f"(instances {wanted})")
    if done.missing:
        if done.signalled:
            print(f"{program}: {len(done.missing)} instance(s) not running: starting them")
        else:
            print(f"{program}: was not running: starting it")
        return _start(component, cfg, None)
    instances.write_expected(component, cfg.name, wanted, instances.read_options(
        component, cfg.name))
    return common.OK


def _start(component, cfg, argv_extra) -> int:
    pids = instances.start(component, cfg.name, cfg.instances or 1, argv_extra,
                           module=f"sarra.commands.{component}")
    print(f"sr_{component} {cfg.name}: started {len(pids)} instance(s)")
    return common.SOME_FAILED if pids.failed else common.OK


@common.pipe_safe
def queue_action(component, action, name) -> int:
    """``declare``, ``setup`` or ``cleanup`` of one configuration, as `sr` asks for it:
    the same lines and exit codes as ``sr_<component> <action> <name>``."""
    return _one(component, action, name, [], None)


def _broker_action(component, action, cfg) -> int:
    program = f"sr_{component}"
    try:
        if action == "cleanup":
            names = queueadmin.cleanup(component, cfg)
            print(f"{program} {cfg.name}: queue {' '.join(names) or '(none)'} deleted, "
                  "state removed")
        else:
            queue = queueadmin.declare(cfg, bind=(action == "setup"))
            print(f"{program} {cfg.name}: queue {queue} declared"
                  + (" and bound" if action == "setup" else ""))
    except CredentialsError as e:
        return common.fail(program, str(e), common.USAGE)
    except BrokerError as e:
        return common.fail(program, str(e), common.BROKER)
    return common.OK


def foreground(component, cfg, no=None, pairs=()) -> int:
    """Run one instance in this process until SIGTERM/SIGINT; SIGHUP: reload (the
    configuration and ``pairs``, the command-line options, read again)."""
    from sarra.flow.engine import Flow
    background = no is not None
    instance = no or 1
    log = logs.setup_logging(component, cfg.name, instance if background else None,
                             level=cfg.loglevel, foreground=not background,
                             **logs.from_config(cfg))
    common.quiet_third_party()
    reload_requested = threading.Event()
    # on a terminal, a SIGHUP is the terminal going away: it ends the process, as before
    on_terminal = not background and sys.stderr.isatty()
    stop = instances.instance_signals(lambda: log.info("stop requested"), on_reload=None
                                      if on_terminal else on_hup(log, reload_requested))
    if background:
        instances.write_pid(component, cfg.name, instance)
        proctitle.for_instance(component, cfg.name, instance)   # `sr_subscribe obs 01`
    try:
        flow = Flow(cfg, components.preset(component), logger=log, stop_event=stop, instance=instance)
        _interrupt_transfers_on_stop(flow)
        flow.reload_event = reload_requested
        flow.load_config = lambda: _reload_config(component, cfg, pairs)
        flow.outlet_stream = sys.stdout     # option outlet json/url writes its lines here
        return flow.run()
    except routing.ConfigRefused:     # a loop, a missing cluster: the flow logged why
        return common.USAGE
    except CredentialsError as e:
        log.error("%s", e)
        return common.USAGE
    except BrokerError as e:      # flow.run logs its own (before its "stopped:" line)
        log.error("%s", e)        # once: stderr in foreground, the log file otherwise
        return common.BROKER
    finally:
        if background:
            instances.remove_pid(component, cfg.name, instance)
        logging.shutdown()


def on_hup(log, event):
    """The SIGHUP handler of an instance: log, and ask the flow for a reload."""
    def requested():
        log.info("reload requested (SIGHUP): applied between two batches")
        event.set()
    return requested


def _reload_config(component, cfg, pairs):
    """The configuration as the instance reads it at start (ConfigError: file:line)."""
    new = config.load(component, cfg.config_path or cfg.name, list(pairs or ()),
                      set_state_host=False)
    missing = _missing_option(component, new)
    if missing:
        raise config.ConfigError(missing)
    return new


def _interrupt_transfers_on_stop(flow):
    """Chain Flow.interrupt after the stop handlers of instances.instance_signals: a
    transfer blocked on a silent server is abandoned (its message returned to the queue)
    instead of delaying the stop past a few seconds."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous):
            previous(signum, frame)
            flow.interrupt()

        signal.signal(sig, handler)
