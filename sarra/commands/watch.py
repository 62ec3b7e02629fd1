"""sr_watch: announce what happens in directory trees, with the options and headers of sr_post.

    sr_watch [options] <action> [<config>]        (v2 order; '<config> <action>' too)

Actions: foreground start stop restart reload status sanity cleanup list edit add remove
rename enable disable show log (sarra/commands/single.py, shared with sr_poll).
``foreground`` also runs without a configuration, from
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

import sys

from sarra import plugin
from sarra.commands import common, single
from sarra.config import parser as config, options
from sarra.watch.daemon import COMPONENT, Daemon

PROGRAM = "sr_watch"
ACTIONS = single.ACTIONS
ALL_CONFIG_ACTIONS = single.ALL_CONFIG_ACTIONS
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


def _missing(cfg):
    """What an sr_watch configuration cannot run without (one line), or None."""
    for required in ("post_broker", "post_base_url"):
        if not getattr(cfg, required):
            return f"option {required} is required"
    if not cfg.paths:
        return "no path to watch (give 'path' lines or --path)"
    return None


COMMAND = single.OneInstance(PROGRAM, COMPONENT, "sarra.commands.watch", load_config,
                             _missing, Daemon, quiet="watchdog",
                             cleaned="posts every file again")
main = common.pipe_safe(COMMAND.main)
config_action = common.pipe_safe(COMMAND.config_action)
foreground = COMMAND.foreground


if __name__ == "__main__":
    sys.exit(main())
