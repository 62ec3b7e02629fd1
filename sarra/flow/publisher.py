"""What sr_post and sr_watch share once a post is built: the options a config gives the
poster, and the publisher (duplicate cache, on_post plugins, the post exchange).

Core, not a command: sr_post (sarra/commands/post.py) and the sr_watch daemon
(sarra/watch/daemon.py) both use it; no argv and no printing here.
"""

from sarra.flow.cache import cache_key
from sarra.flow.poster import PostOptions
from sarra.flow.outbound import Outbound, first_url

#: the xattr sum cache (user.sr_sum/user.sr_mtime) is used for files of at least this
#: size: hashing a smaller file costs less than reading and writing the attributes
XATTR_MIN_SIZE = 64 << 10


def post_options(cfg) -> PostOptions:
    return PostOptions(
        post_base_url=first_url(cfg.post_base_url), post_base_dir=cfg.post_base_dir,
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
        out = Outbound.of(self.cfg, self.log)       # header, round robin, split
        out.prepare(msg)
        if self._on_post and not self.hooks.run("on_post"):
            return False
        topic, body, headers = msg.encode()
        self.broker.publish(out.exchange_for(headers, self._exchange), topic, body, headers,
                            persistent=self._persistent)
        self.posted += 1
        return True
