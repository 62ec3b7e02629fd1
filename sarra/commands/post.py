"""sr_post: announce files and directory trees once, then exit.

    sr_post [options] [path ...]          sr_post -c <config> [path ...]

Every post is confirmed by the broker (pipelined publisher confirms) before sr_post exits
0. With several paths, the good ones are posted and the exit code is 1 if any failed.
The run is the flow engine's (preset "post", sarra.flow.postsource): this module reads
argv, prints one line per path that could not be posted, and maps the result to an exit
code.
"""

import sys

from sarra import plugin
from sarra.config import parser as config
from sarra.ops import logs
from sarra.commands import common
from sarra.config.credentials import CredentialsError
from sarra.flow.engine import Flow
from sarra.flow.postsource import PRESET
from sarra.flow.poster import resolve_path
from sarra.flow.publisher import XATTR_MIN_SIZE, post_options  # noqa: F401 (bench, old imports)
from sarra.flow.routing import ConfigRefused

PROGRAM = "sr_post"
SYNOPSIS = "sr_post [-c config] [--post_broker URL] [--post_base_url URL] [--post_base_dir DIR] " \
           "[--sum d|s|n|0|z,d] [--blocksize SIZE] [options] path ..."


def _paths_from(cfg, words, pipe):
    for p in list(cfg.paths) + list(words):
        yield p
    if pipe:
        for line in sys.stdin:
            line = line.rstrip("\n")
            if line:
                yield line


@common.pipe_safe
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    early = common.version_or_help(argv, PROGRAM, "post", SYNOPSIS)
    if early is not None:
        return early
    common.cli_warnings(PROGRAM)
    try:
        pairs, words, _ = common.split_argv(argv, actions=())
        name = None
        rest = []
        for k, v in pairs:
            if k in ("c", "config", "include") and name is None:
                name = v
            else:
                rest.append((k, v))
        cfg = config.load("post", name, rest)
    except (config.ConfigError, common.UsageError) as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    log = logs.setup_logging("post", cfg.name or "-", None, level=cfg.loglevel, foreground=True)
    common.quiet_third_party()
    for required in ("post_broker", "post_base_url"):
        if not getattr(cfg, required):
            return common.fail(PROGRAM, f"option {required} is required (on the command line "
                                        f"--{required} or in the config)", common.USAGE)
    todo = [resolve_path(p, cfg.post_base_dir) for p in _paths_from(cfg, words, cfg.pipe)]
    if not todo:
        return common.fail(PROGRAM, "no path to post (give paths or 'path' lines)", common.USAGE)
    try:
        flow = Flow(cfg, PRESET, logger=log)
    except (CredentialsError, plugin.PluginError, ConfigRefused) as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    flow.source.paths = todo
    rc = flow.run()
    for line in flow.source.errors:         # one line per path that could not be posted
        print(f"{PROGRAM}: {line}", file=sys.stderr)
    if rc:
        return common.fail(PROGRAM, str(flow.error), common.BROKER)
    dupes = flow.counters["duplicates"]
    log.info("posted %d messages to %s%s", flow.counters["posted"], cfg.post_exchange,
             f", {dupes} duplicates suppressed" if dupes else "")
    return common.SOME_FAILED if flow.source.errors else common.OK


if __name__ == "__main__":
    sys.exit(main())
