"""Which files an ``include`` line (aliases ``config``, ``c``) reads (config.md §2).

v2's rules: a relative name is looked for beside the file that includes it (on the
command line: in the current directory, then in the component's configuration
directory), then in the component's configuration directory; a name without an
extension that is not found gets ``.inc`` (``include common`` reads ``common.inc``); a
glob pattern (``include feeds/*.inc``) reads every file it matches, in name order; an
http(s) URL is fetched and cached (remote configuration), its cached copy used when the
server cannot be reached.  Errors are ValueError with the one line to show (the caller
turns them into its ConfigError); no password ever appears in them.
"""

import glob
import logging
import os
import re
from typing import List, Optional

from sarra import paths
from sarra.config.credentials import redact, redact_text

logger = logging.getLogger("sarra.config")

_GLOB_CHARS = re.compile(r"[*?[]")


def include_paths(value: str, origin: str, base: Optional[str], component: str) -> List[str]:
    """The files `include <value>` (read at `origin`, in a file of directory `base`, None
    on the command line) stands for, in the order to read them."""
    if re.match(r"^https?://", value):
        return [fetch(value, origin)]
    value = os.path.expanduser(value)
    cdir = paths.component_config_dir(component)
    if base is None:      # command line: cwd first, then the component dir
        base = os.getcwd() if os.path.exists(value) or _matches(value) else cdir
    dirs = [base] + ([cdir] if cdir != base else [])
    if _GLOB_CHARS.search(value):
        for d in dirs:
            found = _matches(os.path.join(d, value))
            if found:
                return found
        raise ValueError("%s: include %s: no file matches" % (origin, value))
    for d in dirs:
        path = os.path.join(d, value)
        for candidate in (path, path + ".inc") if not os.path.splitext(value)[1] else (path,):
            if os.path.exists(candidate):
                return [candidate]
    return [os.path.join(base, value)]    # not found: the reader names it


def _matches(pattern: str) -> List[str]:
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))


def fetch(url: str, origin: str) -> str:
    """A remote configuration file's cached copy, refreshed from `url` when it answers."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", redact(url).split("://", 1)[1])
    cache = os.path.join(paths.cache_dir(), "remote_config", safe)
    import urllib.request   # here: it costs ~20 ms to import and is rarely needed
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            paths.atomic_write(cache, r.read())
    except (OSError, ValueError) as e:
        reason = redact_text(str(getattr(e, "reason", e)))
        if not os.path.exists(cache):
            raise ValueError("%s: include %s: %s" % (origin, redact(url), reason)) from None
        logger.warning("%s: include %s: %s; using cached copy %s", origin, redact(url),
                       reason, cache)
    return cache
