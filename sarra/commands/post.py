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
from sarra.flow.cache import DupCache, cache_key
from sarra.commands import common
from sarra.config.credentials import Credentials, CredentialsError
from sarra.message import MessageError, escape
from sarra.flow.poster import PostError, PostOptions, posts_for_path, relpath_of, remove_post, walk

PROGRAM = "sr_post"
#: the xattr sum cache (user.sr_sum/user.sr_mtime) is used for files of at least this
#: size: hashing a smaller file costs less than reading and writing the attributes
XATTR_MIN_SIZE = 64 << 10
#: the hooks sr_post runs; default plugins of the others are not even loaded (plugins that
#: a config or the command line names are, so that a bad name is still an error)
RUN_HOOKS = ("on_post", "plugin")
SYNOPSIS = "sr_post [-c config] [--post_broker URL] [--post_base_url URL] [--post_base_dir DIR] " \
           "[--sum d|s|n|0|z,d] [--blocksize SIZE] [options] path ..."


def post_options(cfg) -> PostOptions:
    return PostOptions(
        post_base_url=cfg.post_base_url.split(",")[0], post_base_dir=cfg.post_base_dir,
        topic_prefix=cfg.post_topic_prefix or "v02.post",
        subtopic=cfg.bindings_subtopic() if hasattr(cfg, "bindings_subtopic") else None,
        sum=cfg.sum or "d", blocksize=cfg.blocksize if cfg.blocksize is not None else 200 << 20,
        to_clusters=cfg.to, source=cfg.source, cluster=cfg.cluster,
        preserve_mode=cfg.preserve_mode, preserve_time=cfg.preserve_time, rename=cfg.rename,
        headers=dict(cfg.headers), exchange=cfg.post_exchange,
        follow_symlinks=cfg.follow_symlinks, bufsize=cfg.bufsize or (4 << 20),
        use_xattr=not cfg.xattr_disable, xattr_min_size=XATTR_MIN_SIZE)


class Publisher:
    """Runs on_post plugins, the duplicate cache, and publishes to the post exchange."""

    def __init__(self, cfg, broker, logger, hooks, cache=None):
        self.cfg, self.broker, self.log, self.hooks, self.cache = cfg, broker, logger, hooks, cache
        self.msg = None
        self.posted = 0
        self.suppressed = 0
        # read once: Config attribute access is not free and this runs per message
        self._exchange, self._persistent = cfg.post_exchange, cfg.persistent
        self._basis = cfg.suppress_duplicates_basis or "path"
        self._on_post = hooks.has("on_post")

    def __getattr__(self, name):  # plugins read options as parent.<option>
        return getattr(self.__dict__["cfg"], name)

    def publish(self, msg) -> bool:
        if self.cache is not None:
            if msg.sum.algo == "R":
                self.cache.remove_path(msg.relpath)
            elif not self.cache.check_and_add(cache_key(msg, self._basis)):
                self.suppressed += 1
                return False
        self.msg = msg
        if self._on_post and not self.hooks.run("on_post"):
            return False
        topic, body, headers = msg.encode()
        self.broker.publish(self._exchange, topic, body, headers, persistent=self._persistent)
        self.posted += 1
        return True


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
    todo = list(_paths_from(cfg, words, cfg.pipe))
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
