"""sr_post's source for the flow engine: the paths of one run, announced once.

Each path (a directory: every file and link below it, sorted) is filtered by accept/reject
on post_base_url + relpath before any hashing (components.md sr_post), turned into posts by
poster.py, and handed to the engine's post step in batches; the run ends when the paths are
exhausted and the last batch is confirmed. A path that cannot be posted is one line in
``errors`` (the command prints them, one per line, and exits 1); the core prints nothing.
"""

import logging
import os
import time
from typing import List

from sarra.flow.preset import Preset
from sarra.flow.poster import PostError, posts_for_path, relpath_of, remove_post, walk
from sarra.flow.publisher import post_options
from sarra.flow.sources import Announced, Source
from sarra.message import MessageError, escape

#: messages per batch (held until the batch is settled; the confirms are waited for once,
#: at the end: Source.confirm_at_end)
BATCH = 250
#: the hooks sr_post runs; default plugins of the others are not even loaded (plugins that
#: a config or the command line names are, so that a bad name is still an error)
RUN_HOOKS = ("on_post", "plugin")


def keep_plugin(flow, hook: str, name: str) -> bool:
    """Preset.keep_plugin of sr_post (see RUN_HOOKS)."""
    if hook not in RUN_HOOKS and flow.cfg.origin(hook) == "default":
        return False        # a default sr_post never runs (hb_memory alone imports psutil)
    if hook == "on_post" and name == "post_log" and not flow.log.isEnabledFor(logging.INFO):
        return False        # it only logs at info level: nothing to do at this loglevel
    return True


class PathSource(Source):
    """The paths given to one sr_post run (``paths``, set before Flow.run)."""

    one_shot = True
    confirm_at_end = True       # every post confirmed before the run ends (exit 0)
    broker_options = {"reconnect": False, "batch_writes": True}
    what = "posting"

    def __init__(self, flow):
        super().__init__(flow)
        cfg = flow.cfg
        self.paths = ()
        #: one line per path that could not be posted, in order
        self.errors: List[str] = []
        self.opts = post_options(cfg)
        self.remove_missing = "delete" in (cfg.events or ()) and cfg.origin("events") != "default"
        self.filtering = bool(cfg.masks) or not cfg.accept_unmatch
        self._items = None
        self._finished = False

    def get(self, wait: float) -> List[Announced]:
        if self._items is None:
            self._items = self._messages()
        batch = []
        now = time.time()
        for path, msg in self._items:
            batch.append(Announced(msg, now, path))
            if len(batch) >= BATCH:
                break
        else:
            self._finished = True
        return batch

    def finished(self) -> bool:
        return self._finished

    def done(self, batch) -> None:
        log = self.flow.log
        debug = log.isEnabledFor(logging.DEBUG)
        for w in batch:
            if w.posts:
                if debug:
                    log.debug("posted %s", w.msg.url)
            elif w.code >= 400:         # could not be encoded (poststep.post_built)
                self.errors.append(f"{w.local_path}: {w.text}")

    def _messages(self):
        """(path, message) for every post of every path, errors noted as they come."""
        opts, cfg = self.opts, self.flow.cfg
        for path in self.paths:
            if os.path.isdir(path) and not os.path.islink(path):
                items = walk(path, cfg.follow_symlinks)
            else:
                items = (path,)
            for item in items:
                try:
                    if isinstance(item, PostError):
                        raise item
                    if self.filtering and not self._accepted(item):
                        continue
                    if cfg.realpath_post:        # v2: the canonical path is announced
                        item = os.path.realpath(item)
                    if self.remove_missing and not os.path.lexists(item):
                        msgs = [remove_post(item, opts)]
                    else:
                        msgs = posts_for_path(item, opts)
                except PostError as e:
                    self.errors.append(str(e))
                    continue
                except MessageError as e:
                    self.errors.append(f"{item}: {e}")
                    continue
                for m in msgs:
                    yield item, m

    def _accepted(self, path) -> bool:
        cfg = self.flow.cfg
        if cfg.realpath_filter:         # v2: accept/reject see the canonical path
            path = os.path.realpath(path)
        url = self.opts.post_base_url + escape(relpath_of(path, self.opts.post_base_dir))
        ok, _ = cfg.filter(url)
        if not ok and cfg.log_reject:
            self.flow.log.info("rejected %s", url)
        return ok


#: sr_post's preset (in presets.PRESETS as "post"): no queue, no reports, no work step
PRESET = Preset("post", posts=True, reports=False, source=PathSource, keep_plugin=keep_plugin)
