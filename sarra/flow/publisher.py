"""The options a config gives the poster (poster.PostOptions), shared by sr_post
(postsource.py) and sr_watch (sarra/watch/daemon.py). What happens to a post once it is
built (duplicate suppression, on_post, outbound, publish) is the flow engine's one post
step (poststep.py).
"""

from sarra.flow.poster import PostOptions
from sarra.flow.outbound import first_url

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

