"""One remote directory listed over a transfer driver (its ``listdir``/``stat``), with the
plugins v2 has there:

* ``on_html_page``: an index page was fetched; ``parent.data`` is its text, the plugin
  fills ``parent.entries`` (name -> ls line, or name -> listing.Entry). Default
  ``html_page`` (sarra/plugins/html_page.py). With none, the built-in parser.
* ``on_line``: each entry's ls line is ``parent.line``; a plugin may rewrite it (it is
  parsed again) or drop the entry (False). Defaults ``line_mode`` (the ``chmod`` mask)
  and ``line_date``.

Every name goes through listing.checked (hostile names refused, count bounded). A
listing that fails raises ListingError: the poller then changes nothing for that
directory.
"""

from typing import List

from sarra.poll import listing
from sarra.poll.listing import Entry


class ListingError(Exception):
    """A directory could not be listed (one line: what and where)."""


def list_directory(drv, url: str, hooks, parent, log, shown: str) -> List[Entry]:
    """The checked entries of the directory at url (shown: url without password)."""
    from sarra.transfer import TransferError
    try:
        raw = drv.listdir(url, limit=listing.MAX_ENTRIES)
    except TransferError as e:
        raise ListingError(f"cannot list {shown}: {e}") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ListingError(f"cannot list {shown}: {type(e).__name__}: {e}") from None
    if isinstance(raw, str):
        entries = _from_page(raw, hooks, parent, log, shown)
    else:
        entries = []
        for item in raw:
            e = _from_item(item)
            if e is not None:
                entries.append(e)
    # names checked before the plugins see them, and again after they rewrote lines
    entries = _on_line(listing.checked(entries, log, shown), hooks, parent)
    return listing.checked(entries, log, shown)


def _from_item(item):
    if isinstance(item, str):
        return listing.parse_line(item)         # ftp LIST ('total 12' lines: None)
    if isinstance(item, tuple):
        return listing.mlsd_entry(*item)        # ftp MLSD
    return listing.sftp_entry(item)             # sftp attributes


def _from_page(page: str, hooks, parent, log, shown) -> List[Entry]:
    if hooks is None or not hooks.has("on_html_page"):
        return listing.html_entries(page)
    parent.data, parent.entries = page, {}
    hooks.run("on_html_page")
    found = getattr(parent, "entries", None)
    parent.data = None
    if not isinstance(found, dict):
        log.error("poll: %s: on_html_page left no entries dict: nothing listed", shown)
        return []
    out = []
    for name, value in found.items():
        if isinstance(value, Entry):
            out.append(value)
            continue
        e = listing.parse_line(str(value))
        if e is None:
            continue
        e.name = str(name).rstrip("/") if e.isdir else str(name)
        out.append(e)
    return out


def _on_line(entries, hooks, parent) -> List[Entry]:
    if hooks is None or not hooks.has("on_line"):
        return entries
    out = []
    for e in entries:
        parent.line = e.line
        if not hooks.run("on_line"):
            continue
        line = getattr(parent, "line", e.line)
        if line != e.line:          # rewritten: what it says now
            new = listing.parse_line(str(line))
            if new is None:
                continue
            new.listed, new.wall = e.listed, e.wall     # a synthesised line's date is UTC
            e = new
        out.append(e)
    parent.line = None
    return out


def fill_in(drv, url: str, e: Entry, log, shown: str) -> bool:
    """Ask the server the size (and date) the listing did not give exactly (HTTP: HEAD).
    False when it cannot say: the entry is left for the next poll."""
    from sarra.transfer import TransferError
    try:
        size, mtime = drv.stat(url)
    except TransferError as e2:
        log.warning("poll: %s: %s (left for the next poll)", shown, e2)
        return False
    if size is None:
        log.warning("poll: %s: the server gives no size (left for the next poll)", shown)
        return False
    e.size = size
    if mtime is not None:
        e.mtime = mtime
    return True
