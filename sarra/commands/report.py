"""sr_report: see man sr_report; the work is done by the shared flow (sarra/flow/engine.py) with the
'report' preset of sarra/flow/presets.py.

``sr_report [options] summary <config> [--json]``: what became of each file of the
source, from the reports this configuration recorded (sarra/flow/reportsummary.py).
"""

import sys

from sarra.commands import common
from sarra.commands.consumer import run
from sarra.config import parser as config
from sarra.flow import reportsummary, tracking

#: the consumers' actions and summary (a literal: tests/unit/test_manpages_match.py reads it)
ACTIONS = ("foreground", "start", "stop", "restart", "reload", "status", "sanity",
           "cleanup", "declare", "setup", "list", "edit", "add", "remove", "rename",
           "enable", "disable", "show", "log", "summary")
#: flags of this command that are not options of the table
OWN_OPTIONS = ("json",)
SYNOPSIS = "sr_report [options] <action> [<config>]   (summary <config> [--json])"
JSON_HELP = ("  --json\n      summary: the summary as JSON ({\"files\": [...]}) instead of "
             "one line per file\n")


@common.pipe_safe
def summary(argv) -> int:
    program = "sr_report"
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    try:
        pairs, words, _ = common.split_argv(argv, ACTIONS)
    except common.UsageError as e:
        return common.fail(program, str(e), common.USAGE)
    names = [w for w in words if w != "summary"]
    if len(names) != 1:
        return common.fail(program, "summary needs one config name "
                           "(sr_report summary <config> [--json])", common.USAGE)
    try:
        cfg = config.load("report", names[0], pairs)
    except config.ConfigError as e:
        return common.fail(program, str(e), common.USAGE)
    store = tracking.load("report", cfg.name or names[0])
    rows = reportsummary.summarize(store, cfg.summary_window, cfg.summary_expect)
    quota = reportsummary.quotas(store)
    if as_json:
        print(reportsummary.as_json(rows, quota))
    else:
        print("\n".join(reportsummary.text_lines(rows, quota)))
    return common.OK


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and common.wants_help(argv) and not common.wants_version(argv):
        common.print_help("sr_report", "report", SYNOPSIS, ACTIONS, JSON_HELP)
        return common.OK
    words = argv[:argv.index("--")] if "--" in argv else argv
    if "summary" in words:
        return summary(argv)
    return run("report", argv)


if __name__ == "__main__":
    sys.exit(main())
