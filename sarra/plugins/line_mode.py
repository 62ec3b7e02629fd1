"""line_mode (on_line, sr_poll's default): a listed file is kept only when its mode has
every bit of the ``chmod`` option (for sr_poll a minimum-permission mask, default 0400:
the owner may read it). Facts: doc/spec/config.md (sr_poll), plugins.md.
"""

from sarra.plugin import get_option
from sarra.poll.listing import mode_bits


def on_line(parent):
    line = str(getattr(parent, "line", "") or "")
    mode = mode_bits(line.split(" ", 1)[0]) if line[:1] in "-dlDbcps" else None
    if mode is None:            # a line without a unix mode (DOS listing): nothing to check
        return True
    mask = get_option(parent, "chmod", 0o400) or 0
    try:
        mask = int(mask, 8) if isinstance(mask, str) else int(mask)
    except ValueError:
        mask = 0o400
    return (mode & mask) == mask
