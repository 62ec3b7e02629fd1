"""sr_post: announce files and directory trees once, then exit.

    sr_post [options] [path ...]          sr_post -c <config> [path ...]

Every post is confirmed by the broker (pipelined publisher confirms) before sr_post exits
0. With several paths, the good ones are posted and the exit code is 1 if any failed.
"""

import logging
import os
import sys

from sarra import paths, plugin
from sarra.config import parser as config
from sarra.ops import logs
from sarra.broker.client import Broker, BrokerAccessRefused, BrokerError
from sarra.flow.cache import DupCache
from sarra.commands import common
from sarra.config.credentials import Credentials, CredentialsError
from sarra.message import MessageError, escape
from sarra.flow.poster import (PostError, posts_for_path, relpath_of, remove_post,
                               resolve_path, walk)
from sarra.flow.publisher import (Publisher, XATTR_MIN_SIZE,  # noqa: F401 (bench, old imports)
                                  post_options)

PROGRAM = "sr_post"
#: the hooks sr_post runs; default plugins of the others are not even loaded (plugins that
#: a config or the command line names are, so that a bad name is still an error)
RUN_HOOKS = ("on_post", "plugin")
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
    if common.wants_version(argv):
        return common.print_version(PROGRAM)
    if common.wants_help(argv):
        common.print_help(PROGRAM, "post", SYNOPSIS)
        return common.OK
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
        creds = Credentials.load()
    except CredentialsError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    hooks = plugin.Hooks(None, log)
    try:
        for hook, names in cfg.plugins.items():
            if hook not in RUN_HOOKS and cfg.origin(hook) == "default":
                continue    # a default sr_post never runs (hb_memory alone imports psutil)
            for n in names:
                if hook == "on_post" and n == "post_log" and not log.isEnabledFor(logging.INFO):
                    continue    # it only logs at info level: nothing to do at this loglevel
                hooks.add(hook, n)
    except plugin.PluginError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)

    broker = Broker(cfg.post_broker, password_lookup=creds.password_for, logger=log,
                    reconnect=False, batch_writes=True)
    cache = None
    if cfg.suppress_duplicates:
        cache = DupCache(os.path.join(paths.state_dir("post", cfg.name or "-"),
                                      "recent_files_001.cache"), cfg.suppress_duplicates)
    pub = Publisher(cfg, broker, log, hooks, cache)
    hooks.parent = pub
    opts = post_options(cfg)
    remove_missing = "delete" in (cfg.events or ()) and cfg.origin("events") != "default"
    failed = 0
    try:
        broker.connect()
        if cfg.declare_exchange:
            try:
                broker.declare_exchange(cfg.post_exchange)
            except BrokerAccessRefused:
                # a pump's sources may not declare exchanges: sr_police made it already
                log.debug("not allowed to declare exchange %s; using it as it is", cfg.post_exchange)
        for path in todo:
            failed += _post_path(path, opts, pub, log, cfg, remove_missing)
        broker.wait_confirms(timeout=max(30.0, pub.posted / 1000.0))
    except BrokerError as e:
        return common.fail(PROGRAM, str(e), common.BROKER)
    finally:
        if cache is not None:
            cache.flush()
        broker.close()
    log.info("posted %d messages to %s%s", pub.posted, cfg.post_exchange,
             f", {pub.suppressed} duplicates suppressed" if pub.suppressed else "")
    return common.SOME_FAILED if failed else common.OK


def _post_path(path, opts, pub, log, cfg, remove_missing) -> int:
    """Post one command-line path (a directory recursively); returns the number of failures."""
    failed = 0
    debug = log.isEnabledFor(logging.DEBUG)
    # accept/reject on post_base_url + relpath (components.md sr_post), before any hashing
    filtering = bool(cfg.masks) or not cfg.accept_unmatch
    if os.path.isdir(path) and not os.path.islink(path):
        items = walk(path, cfg.follow_symlinks)
    else:
        items = [path]
    for item in items:
        try:
            if isinstance(item, PostError):
                raise item
            if filtering and not _accepted(item, opts, cfg, log):
                continue
            if remove_missing and not os.path.lexists(item):
                msgs = [remove_post(item, opts)]
            else:
                msgs = posts_for_path(item, opts)
            for m in msgs:
                if pub.publish(m) and debug:
                    log.debug("posted %s", m.url)
        except (PostError, MessageError) as e:
            print(f"{PROGRAM}: {item}: {e}" if isinstance(e, MessageError) else f"{PROGRAM}: {e}",
                  file=sys.stderr)
            failed += 1
    return failed


def _accepted(path, opts, cfg, log) -> bool:
    url = opts.post_base_url + escape(relpath_of(path, opts.post_base_dir))
    ok, _ = cfg.filter(url)
    if not ok and cfg.log_reject:
        log.info("rejected %s", url)
    return ok


if __name__ == "__main__":
    sys.exit(main())
