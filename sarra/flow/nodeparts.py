"""Where the parts manifest of a file in blocks lives when pump nodes share a flow.

Without ``node_shares`` the manifest (assemble.Manifest: which blocks of which version
are written) is in the configuration's state directory on the host (inplace.manifest).
With ``node_shares`` the blocks of one file reach one node at a time (the shard of the
file's directory), but the shard moves when its node stops, dies or hands it to a node
that joined: the next node must know the blocks already written, or the file is restarted
(its acked blocks never come back) and left unfinished. So the manifest is kept on the
data tree the nodes share, beside the temporary file it describes, and the next node goes
on from it. No lock spans hosts: the broker gives the shard to one consumer at a time
(the manifest's flock only orders the instances of one host).

Its name is hidden and in the family of our own temporary names, never a product:
``.sarra-parts-<sha1 of the final path>.sarra-tmp`` (sr_watch never announces a
``.*.sarra-tmp`` name: watch/ready.py; a web server's index hides dot files). Its length
is fixed (it fits wherever the temporary file fits); it is derived from the final path
only, whose directory download.py has already checked to be inside the tree, and it holds
base names only (``final``, ``temp``: no path of the server is shown). A message whose
local path, or the temporary name derived from it (whatever ``inflight``: ``.<name>.sarra-tmp``
by default, ``.<name>``, ``<name><suffix>``, ``<dir>/<name>``), has a component holding
``sarra-parts-`` (any case) is refused (403, :func:`check`): no source can plant, overwrite or
block a manifest, with a file or a directory of its name. The manifest is opened without
following a link, and only as a regular file (assemble.Manifest.locked): anything else where
a manifest should be fails that block's message once, never a retry loop (inplace.py).

A completed manifest is kept (tiny) so that a redelivered block of a finished file is
recognised; each process prunes a directory's old manifests (and the temporary file of one
never completed) when it completes a file there, at most once per PRUNE_EVERY seconds per
directory.
"""

import hashlib
import os
import re
import time
from typing import Optional

from sarra.flow import assemble
from sarra.flow.nodeshare import shares
from sarra.flow.stepstate import DownloadState
from sarra.flow.work import Outcome

PREFIX = ".sarra-parts-"
SUFFIX = ".sarra-tmp"
#: no component of a posted name, or of its temporary name, may hold this (any case)
FAMILY = "sarra-parts-"
_NAME = re.compile(r"\A\.sarra-parts-[0-9a-f]{40}\.sarra-tmp\Z")
#: seconds between two prunes of one directory by one process
PRUNE_EVERY = 600.0
#: directories remembered per process (the oldest half forgotten beyond that)
PRUNED_MAX = 10000


def shared(cfg) -> bool:
    """The manifests of this flow are kept on the data tree (node_shares on)."""
    return shares(cfg) > 0


def name_of(final: str) -> str:
    key = hashlib.sha1(os.path.abspath(final).encode("utf-8", "surrogateescape")).hexdigest()
    return PREFIX + key + SUFFIX


def is_manifest_name(name: str) -> bool:
    return bool(_NAME.match(name))


def check(path: str, temp: Optional[str] = None) -> None:
    """403 for a local path, or its temporary name ``temp``, with a component of our
    manifests' family, whatever the flow (a tree may be shared by pump nodes later). The
    whole path: its directory may hold message fields too (``${SOURCE}``)."""
    for p in (path, temp):
        if not p:
            continue
        for c in p.split(os.sep):
            if FAMILY in c.lower():
                raise Outcome(403, "Forbidden: a name of the family of the pump's own block "
                                   "manifests (%s): %r" % (FAMILY, c[:80]))


class TreeManifest(assemble.Manifest):
    """A manifest beside the temporary file, with base names only."""

    def __init__(self, directory: str, final_path: str):
        self.path = os.path.join(directory, name_of(final_path))
        self.final = final_path
        self.data = {}
        self._fd = None

    def start(self, gen, final, temp, version=0.0):
        super().start(gen, os.path.basename(final), os.path.basename(temp), version)


def manifest(flow, final: str, temp: str) -> assemble.Manifest:
    """The manifest of ``final`` beside its temporary file ``temp``."""
    return TreeManifest(os.path.dirname(temp) or ".", final)


def completed(flow, temp: str) -> int:
    """After a file was completed: prune the old manifests of its directory (throttled)."""
    d = os.path.dirname(temp) or "."
    st = DownloadState.of(flow)
    done = st.__dict__.setdefault("tree_parts_pruned", {})
    now = time.monotonic()
    if now - done.get(d, -PRUNE_EVERY) < PRUNE_EVERY:
        return 0
    if len(done) >= PRUNED_MAX:
        for k in sorted(done, key=done.get)[: PRUNED_MAX // 2]:
            del done[k]
    done[d] = now
    cfg = flow.cfg
    return assemble.prune(d, max(cfg.retry_ttl or 0, cfg.expire or 0, 86400.0),
                          match=is_manifest_name, beside=True)
