"""The one reader of an append-only journal: the duplicate cache (cache.py) and the retry
queue (retry.py) each keep one, a line per record, appended and compacted.

Reading one back after a crash: every complete line is handed to the caller's parser in
file order; a line the parser refuses is skipped (one warning, naming the file and line of
the first, for all of them); a torn last line (no newline: an append interrupted) is cut
off the file, so that the next append starts on a line of its own.
"""
import logging
import os
from typing import Callable, Optional

#: what a parser raises for a line it cannot read (UnicodeDecodeError is a ValueError)
UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)


def read(path: str, parse: Callable[[bytes], None], log: logging.Logger, unreadable: str,
         torn_is_unreadable: bool = False) -> Optional[int]:
    """Call ``parse(line)`` for each complete line of ``path`` (bytes, newline removed);
    returns how many complete lines there were, or None when there is no file.

    ``unreadable`` is the warning's text after '<path>:<first line>: ', with ``%d`` for
    how many lines were skipped in all.  ``torn_is_unreadable``: a torn last line counts
    among them (else it is cut off silently)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    lines, bad, first_bad, good_end, offset = 0, 0, 0, 0, 0
    with f:
        for lineno, raw in enumerate(f, 1):
            offset += len(raw)
            if not raw.endswith(b"\n"):
                if torn_is_unreadable:
                    bad += 1
                    first_bad = first_bad or lineno
                break
            good_end = offset
            lines += 1
            try:
                parse(raw[:-1])
            except UNREADABLE:
                bad += 1
                first_bad = first_bad or lineno
    if bad:
        log.warning("%s:%d: " + unreadable, path, first_bad, bad)
    if good_end != offset:
        try:
            os.truncate(path, good_end)
        except OSError as e:
            log.warning("%s: cannot cut the torn last line: %s", path, e)
    return lines
