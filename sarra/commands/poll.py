"""sr_poll: list remote directories (ftp, ftps, sftp, http, https) and announce the files
that are new or changed, for a pump to fetch (see man sr_poll).

    sr_poll [options] <action> [<config>]        (v2 order; '<config> <action>' too)

Actions: foreground start stop restart reload status sanity cleanup list edit add remove
rename enable disable show log (sarra/commands/single.py, shared with sr_watch). The poll
is sarra.poll (its source of the flow engine: sarra/poll/source.py); SIGHUP (the reload
action) re-reads the configuration between polls.
"""

import sys

from sarra.commands import common, single
from sarra.config import parser as config
from sarra.poll.poller import COMPONENT, time_zone

PROGRAM = "sr_poll"
ACTIONS = single.ACTIONS
ALL_CONFIG_ACTIONS = single.ALL_CONFIG_ACTIONS


def load_config(name, pairs, set_state_host=True):
    return config.load(COMPONENT, name, pairs, set_state_host=set_state_host)


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


def _flow(cfg, log, stop, instance):
    from sarra.flow import presets
    from sarra.flow.engine import Flow
    return Flow(cfg, presets.preset(COMPONENT), logger=log, stop_event=stop, instance=instance)


COMMAND = single.OneInstance(PROGRAM, COMPONENT, "sarra.commands.poll", load_config,
                             missing_option, _flow, quiet="paramiko",
                             cleaned="announces every file again", check_first=True)
main = common.pipe_safe(COMMAND.main)
config_action = common.pipe_safe(COMMAND.config_action)
foreground = COMMAND.foreground


if __name__ == "__main__":
    sys.exit(main())
