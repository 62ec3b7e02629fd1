"""The command of a component that runs one instance per configuration and reads no queue:
sr_watch and sr_poll (components.md: "single instance").

    sr_<component> [options] <action> [<config>]     (v2 order; '<config> <action>' too)

What differs between them (how a configuration is read, what it cannot run without, the
flow an instance runs) is given to :class:`OneInstance`; the actions are the same.
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
from sarra.flow.routing import ConfigRefused
from sarra.ops import instances, logs, proctitle, secretargs

ACTIONS = ("foreground", "start", "stop", "restart", "reload", "status", "sanity", "cleanup",
           "list", "edit", "add", "remove", "rename", "enable", "disable", "show", "log")
ALL_CONFIG_ACTIONS = ("status", "start", "stop", "restart", "reload", "sanity", "cleanup")
#: the actions that start an instance: a configuration that lacks what it needs is refused
#: by the command (check_first) or by the instance, whose log says why
STARTING = ("foreground", "start", "restart", "reload", "sanity")


class OneInstance:
    """The actions of one single-instance component.

    load(name, pairs, set_state_host) -> cfg (ConfigError: file:line); missing(cfg) -> why
    cfg cannot run (one line) or None; make_flow(cfg, log, stop, instance) -> the flow an
    instance runs; quiet: a library logger kept at warnings; cleaned: what `cleanup` says
    the next start does; check_first: refuse a starting action in the command itself."""

    def __init__(self, program, component, module, load, missing, make_flow, quiet, cleaned,
                 check_first=False):
        self.program, self.component, self.module = program, component, module
        self.load, self.missing, self.make_flow = load, missing, make_flow
        self.quiet, self.cleaned, self.check_first = quiet, cleaned, check_first

    def fail(self, text, code=common.USAGE) -> int:
        return common.fail(self.program, text, code)

    def main(self, argv=None) -> int:
        argv = sys.argv[1:] if argv is None else argv
        argv = secretargs.restore(argv)     # passwords its starter kept off our command line
        synopsis = f"{self.program} [options] <action> [<config>]"
        if common.wants_version(argv):
            return common.print_version(self.program)
        if not argv or common.wants_help(argv):
            common.print_help(self.program, self.component, synopsis, ACTIONS)
            return common.OK if argv else common.USAGE
        try:
            pairs, words, no = common.split_argv(argv, ACTIONS)
        except common.UsageError as e:
            return self.fail(str(e))
        action = name = None
        extra = []
        for w in words:
            if action is None and w in ACTIONS:
                action = w
            elif name is None:
                name = w
            elif action == "rename" and not extra:      # rename <old> <new>
                extra.append(w)
            else:
                return self.fail(f"unexpected argument {w!r}")
        if action == "rename":
            return actions.rename_action(self.component, name, extra)
        if action is None:
            return self.fail(f"no action given (one of {', '.join(ACTIONS)})")
        if action in consumer.FILE_ACTIONS:
            return consumer._file_action(self.component, action, name)
        if name is None and action in ALL_CONFIG_ACTIONS:
            rc = common.OK
            for cname, enabled in actions.list_configs(self.component):
                if enabled:
                    rc = max(rc, self.one(action, cname, pairs, no))
            return rc
        if name is None and action not in ("foreground", "show"):
            return self.fail(f"action {action} needs a config name")
        return self.one(action, name, pairs, no)

    def config_action(self, action, name) -> int:
        """One action on one configuration, as `sr` asks for it: the same lines and exit
        code as ``sr_<component> <action> <name>`` (which reads a word that is no action of
        its own as the configuration's name, then the name as an unexpected argument)."""
        if action not in ACTIONS:
            return self.fail(f"unexpected argument {name!r}")
        return self.one(action, name, [], None)

    def one(self, action, name, pairs, no) -> int:
        component, program = self.component, self.program
        try:
            cfg = self.load(name, pairs, True)
        except config.ConfigError as e:
            if action == "stop":        # its instances run the config they read at start
                return common.stop_unloadable(program, component, name, e)
            return self.fail(str(e))
        cname = cfg.name or "-"
        if action == "show":
            print(cfg.show(), end="")
            return common.OK
        if self.check_first and action in STARTING:
            missing = self.missing(cfg)
            if missing:
                return self.fail(f"{cname}: {missing}")
        if action == "foreground":
            return self.foreground(cfg, no, pairs)
        if action == "reload":      # the config loads (checked above): SIGHUP, as consumers
            return self.reload(cfg)
        if action in ("stop", "restart"):
            n = instances.stop(component, cname)
            if action == "stop":
                print(f"{program} {cname}: stopped {n} instance(s)")
                return common.OK
        if action in ("start", "restart"):
            return self.start(cfg)
        if action == "status":      # the same state and exit code as `sr status` (health)
            return common.print_status(program, component, cname, cfg, 1)
        if action == "sanity":
            st = instances.status(component, cname)
            return self.start(cfg) if st.expected and not st.running else common.OK
        if action == "log":
            os.execvp("tail", ["tail", "-f", str(logs.log_file(component, cname, 1))])
        if action == "cleanup":
            instances.stop(component, cname)
            shutil.rmtree(paths.state_dir(component, cname, create=False), ignore_errors=True)
            print(f"{program} {cname}: state removed (the next start {self.cleaned})")
            return common.OK
        return self.fail(f"unknown action {action}")

    def start(self, cfg) -> int:
        """One instance per configuration, whatever `instances` says."""
        started = instances.start(self.component, cfg.name, 1, module=self.module)
        for n, code in started.failed:
            why = f": {started.why[n]}" if n in started.why else ""
            print(f"{self.program} {cfg.name}: instance {n} exited at once with code "
                  f"{code}{why}; see {logs.log_file(self.component, cfg.name, n)}",
                  file=sys.stderr)
        print(f"{self.program} {cfg.name}: started {len(started)} instance(s)")
        return common.SOME_FAILED if started.failed else common.OK

    def reload(self, cfg) -> int:
        """SIGHUP to the running instance (it reads its configuration again at a safe
        point); started when it does not run (as v2)."""
        from sarra.ops import reload
        done = reload.signal_instances(self.component, cfg.name, 1)
        if done.signalled:
            print(f"{self.program} {cfg.name}: reload sent to {len(done.signalled)} "
                  f"instance(s)")
            return common.OK
        print(f"{self.program} {cfg.name}: was not running: starting it")
        return self.start(cfg)

    def reload_config(self, cfg, pairs):
        """The configuration as the instance reads it at start (ConfigError: file:line)."""
        new = self.load(cfg.config_path or cfg.name, list(pairs or ()), False)
        missing = self.missing(new)
        if missing:
            raise config.ConfigError(f"{new.config_path or self.program}: {missing}")
        return new

    def foreground(self, cfg, no=None, pairs=()) -> int:
        """Run the instance until SIGTERM/SIGINT; SIGHUP: reload (flow/reload.py)."""
        background = no is not None
        instance = no or 1
        cname = cfg.name or "-"
        component = self.component
        log = logs.setup_logging(component, cname, instance if background else None,
                                 level=cfg.loglevel, foreground=not background,
                                 **logs.from_config(cfg))
        common.quiet_third_party()
        logging.getLogger(self.quiet).setLevel(logging.WARNING)
        missing = self.missing(cfg)
        if missing:
            log.error("%s", missing)
            return common.USAGE
        reload_requested = threading.Event()
        on_terminal = not background and sys.stderr.isatty()    # there SIGHUP ends it
        stop = instances.instance_signals(
            lambda: log.info("stop requested"),
            on_reload=None if on_terminal else consumer.on_hup(log, reload_requested))
        if background:
            instances.write_pid(component, cname, instance)
            proctitle.for_instance(component, cname, instance)  # `sr_<component> <cfg> 01`
        try:
            flow = self.make_flow(cfg, log, stop, instance)
            flow.reload_event = reload_requested
            flow.load_config = lambda: self.reload_config(cfg, pairs)
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
                instances.remove_pid(component, cname, instance)
            logging.shutdown()
