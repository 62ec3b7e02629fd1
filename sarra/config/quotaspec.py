"""The value of sr_sarra's ``quota`` option (issue 23, item 2): what each source may keep
in the pump's tree.

``quota alice=10G/5000,bob=500M,*=1G``: entries ``<source>=<size>[/<files>]`` (sizes as
every size option: 10M, 1.5G, powers of 1024), ``*`` for every source not named;
``<source>=off`` exempts one source from the ``*`` entry.  An empty list (the default):
no quota at all.
"""

import re
from typing import Dict, Optional, Tuple

#: (bytes or None, files or None) per source name; '*' for the others
Limits = Dict[str, Tuple[Optional[int], Optional[int]]]

_NAME = re.compile(r"^(\*|[A-Za-z0-9_.@-]{1,64})$")


def parse(entries) -> Limits:
    """{source: (bytes, files)}; ValueError naming the entry that is wrong."""
    from sarra.config.options import parse_size
    out: Limits = {}
    for entry in entries or ():
        name, sep, value = entry.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _NAME.match(name) or not value:
            raise ValueError(f"bad quota entry {entry!r} (use source=size[/files], "
                             f"e.g. alice=10G/5000 or *=1G)")
        if value.lower() in ("off", "none"):
            out[name] = (None, None)
            continue
        size, _, files = value.partition("/")
        try:
            nbytes = parse_size(size)
            nfiles = int(files) if files.strip() else None
        except ValueError:
            raise ValueError(f"bad quota entry {entry!r} (use source=size[/files], "
                             f"e.g. alice=10G/5000)") from None
        if nfiles is not None and nfiles < 1:
            raise ValueError(f"bad quota entry {entry!r}: files must be 1 or more")
        out[name] = (nbytes, nfiles)
    return out


def limits_for(limits: Limits, source: str) -> Tuple[Optional[int], Optional[int]]:
    """(bytes, files) that source may keep: its own entry, else '*', else no limit."""
    if source in limits:
        return limits[source]
    return limits.get("*", (None, None))
