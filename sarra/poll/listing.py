"""What a remote directory listing says, parsed: ls lines (unix and DOS style, as FTP LIST
gives them), MLSD facts, SFTP attributes and HTML index pages (Apache, nginx, python's
http.server).

Everything here comes from the remote server, which may be hostile: a listed name is
refused (with a reason, see :func:`refuse_name`) when it holds a ``/``, is ``.`` or ``..``,
holds a control character, or is longer than :data:`MAX_NAME` bytes; a listing holds at
most :data:`MAX_ENTRIES` entries (the rest is refused, once); a line longer than
:data:`MAX_LINE` is not parsed.

Facts: doc/spec/components.md (sr_poll), doc/spec/plugins.md (on_line, on_html_page).
"""

import calendar
import dataclasses
import html.parser
import re
import stat as statmod
import time
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

#: most entries one directory listing may give (the rest is refused)
MAX_ENTRIES = 100_000
#: longest name, in UTF-8 bytes (the common file system limit)
MAX_NAME = 255
#: longest listing line parsed
MAX_LINE = 4096
#: largest HTML index page read, in bytes
MAX_PAGE = 32 << 20

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}


@dataclasses.dataclass
class Entry:
    """One listed name. ``size``/``mtime`` are None when the listing does not give them
    exactly (then the poller asks the server: HTTP HEAD); ``line`` is the ls-style line
    on_line plugins see (v2 ``parent.line``)."""
    name: str
    size: Optional[int] = None
    mtime: Optional[float] = None
    isdir: bool = False
    mode: Optional[int] = None
    line: str = ""
    link: bool = False
    listed: str = ""        # an index page's own words about it (date, size)
    wall: bool = False      # mtime read from a date as the listing shows it (read as UTC)


def in_zone(e: Entry, zone) -> Entry:
    """An entry whose date the listing showed in time zone ``zone`` (a tzinfo; option
    destination_timezone) with its mtime made true: the listing's wall-clock date was
    read as UTC (MLSD and SFTP give true times: left alone)."""
    if zone is None or not e.wall or e.mtime is None:
        return e
    import datetime
    wall = datetime.datetime.fromtimestamp(e.mtime, datetime.timezone.utc)
    e.mtime = wall.replace(tzinfo=zone).timestamp()
    e.wall = False
    return e


def refuse_name(name) -> Optional[str]:
    """Why a listed name cannot be a file name here, or None when it can."""
    if not isinstance(name, str) or not name:
        return "empty name"
    if name in (".", ".."):
        return "names the directory itself or its parent"
    if "/" in name:
        return "holds a '/'"
    if _CONTROL.search(name):
        return "holds a control character"
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(raw) > MAX_NAME:
        return f"is longer than {MAX_NAME} bytes"
    return None


def shown(name) -> str:
    """A listed name as it may appear in a log line: control characters escaped, cut."""
    text = str(name)[:200]
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group(0)), text).encode(
        "utf-8", "backslashreplace").decode("utf-8")


def checked(entries, log=None, where="") -> List[Entry]:
    """The entries whose names may be used, at most MAX_ENTRIES; each refusal logged once
    per listing (one line: the name, escaped, and why)."""
    out, seen = [], set()
    for e in entries:
        why = refuse_name(e.name)
        if why is None and e.name in seen:
            why = "listed twice"
        if why is not None:
            if log is not None:
                log.warning("poll: %s: listed name '%s' refused: %s", where, shown(e.name), why)
            continue
        if len(out) >= MAX_ENTRIES:
            if log is not None:
                log.error("poll: %s: more than %d entries listed: the rest is refused",
                          where, MAX_ENTRIES)
            break
        seen.add(e.name)
        out.append(e)
    return out


# ---------------------------------------------------------------- dates

def _year_for(month: int, day: int, now: float) -> int:
    """ls drops the year of dates within the last six months: the year that puts the date
    at most a day in the future."""
    year = time.gmtime(now).tm_year
    try:
        t = calendar.timegm((year, month, day, 0, 0, 0))
    except (ValueError, OverflowError):
        return year
    return year - 1 if t > now + 86400 else year


def _epoch(year, month, day, hour=0, minute=0, second=0) -> Optional[float]:
    try:
        if not (1970 <= year < 10000 and 1 <= month <= 12 and hour < 24 and minute < 60
                and 1 <= day <= calendar.monthrange(year, month)[1] and second < 62):
            return None
        return float(calendar.timegm((year, month, day, hour, minute, second)))
    except (ValueError, OverflowError):
        return None


def mode_bits(text: str) -> Optional[int]:
    """'-rwxr-x---' -> 0o750 (setuid/sticky letters count as the x they stand on)."""
    if len(text) < 10:
        return None
    mode = 0
    for i, ch in enumerate(text[1:10]):
        if ch not in "-ST":           # S/T: set-id or sticky without the x bit
            mode |= 1 << (8 - i)
    return mode


# ---------------------------------------------------------------- ls lines

_UNIX = re.compile(
    r"(?P<mode>[-dlbcpsD][-rwxsStTlL]{9})[+@.]?\s+(?:\d+\s+)?(?:\S+\s+){0,2}?"
    r"(?P<size>\d+)\s+"
    r"(?:(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})|(?P<day2>\d{1,2})\s+(?P<mon2>[A-Za-z]{3})"
    r"|(?P<iso>\d{4}-\d{2}-\d{2}))\s+"
    r"(?P<when>\d{1,2}:\d{2}(?::\d{2})?|\d{4})\s(?P<name>.+)\Z", re.S)
_DOS = re.compile(
    r"(?P<m>\d{2})-(?P<d>\d{2})-(?P<y>\d{2}|\d{4})\s+(?P<h>\d{1,2}):(?P<mi>\d{2})\s*"
    r"(?P<ampm>[AaPp][Mm])?\s+(?P<what><DIR>|\d+)\s+(?P<name>.+)\Z", re.S)


def parse_line(line: str, now: Optional[float] = None) -> Optional[Entry]:
    """An ls line (unix ``-rw-r--r-- 1 u g 123 Mar 22 22:54 name``, its variants: no group,
    day before month, ISO date, year instead of time; or DOS ``03-25-17 10:54PM 123 name``)
    as an Entry, or None when it is neither (a ``total 12`` line, garbage)."""
    if not isinstance(line, str) or len(line) > MAX_LINE:
        return None
    line = line.rstrip("\r\n")
    now = time.time() if now is None else now
    m = _UNIX.match(line.strip(" \t") if line[:1] in " \t" else line)
    if m:
        return _unix_entry(m, line, now)
    m = _DOS.match(line.strip())
    if m:
        y = int(m["y"])
        y = y + (2000 if y < 70 else 1900) if y < 100 else y
        hour = int(m["h"]) % 12 + (12 if (m["ampm"] or "").lower() == "pm" else 0) \
            if m["ampm"] else int(m["h"])
        isdir = m["what"] == "<DIR>"
        return Entry(m["name"], None if isdir else int(m["what"]),
                     _epoch(y, int(m["m"]), int(m["d"]), hour, int(m["mi"])), isdir,
                     None, line, wall=True)
    return None


def _unix_entry(m, line, now) -> Optional[Entry]:
    kind = m["mode"][0]
    name, when = m["name"], m["when"]
    if m["iso"]:
        y, mo, d = (int(x) for x in m["iso"].split("-"))
    else:
        mon = (m["mon"] or m["mon2"]).lower()
        if mon not in MONTHS:
            return None
        mo, d = MONTHS[mon], int(m["day"] or m["day2"])
        y = None
    if ":" in when:
        hms = [int(x) for x in when.split(":")] + [0]
        hour, minute, second = hms[0], hms[1], hms[2]
        if y is None:
            y = _year_for(mo, d, now)
    else:
        hour = minute = second = 0
        if y is None:
            y = int(when)
        else:                       # an ISO date followed by a year: not a date
            return None
    link = kind == "l"
    if link and " -> " in name:
        name = name.split(" -> ", 1)[0]
    return Entry(name, int(m["size"]), _epoch(y, mo, d, hour, minute, second),
                 kind in "dD", mode_bits(m["mode"]), line, link, wall=True)


def ls_line(e: Entry, now: Optional[float] = None) -> str:
    """The ls-style line of an entry, for on_line plugins (v2 ``parent.line``): ``mode 1
    - - size Mon DD HH:MM name`` (a year in place of the time for dates over six months
    old), in UTC."""
    kind = "d" if e.isdir else ("l" if e.link else "-")
    mode = e.mode if e.mode is not None else (0o755 if e.isdir else 0o644)
    perms = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    now = time.time() if now is None else now
    if e.mtime is None:
        when = "Jan  1  1970"
    else:
        t = time.gmtime(e.mtime)
        recent = abs(now - e.mtime) < 180 * 86400
        when = time.strftime("%b %d %H:%M" if recent else "%b %d  %Y", t)
    return f"{kind}{perms} 1 - - {e.size if e.size is not None else 0} {when} {e.name}"


# ---------------------------------------------------------------- MLSD, SFTP

def mlsd_entry(name: str, facts: Dict[str, str]) -> Optional[Entry]:
    """An MLSD line (name and facts, RFC 3659) as an Entry; None for the directory itself
    and its parent (type cdir/pdir)."""
    facts = {str(k).lower(): str(v) for k, v in (facts or {}).items()}
    kind = facts.get("type", "file").lower()
    if kind in ("cdir", "pdir"):
        return None
    size = facts.get("size")
    mtime = None
    mod = facts.get("modify", "")
    mm = re.match(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d+)?\Z", mod)
    if mm:
        mtime = _epoch(*(int(x) for x in mm.groups()[:6]))
        if mtime is not None and mm.group(7):
            mtime += float(mm.group(7))
    mode = None
    um = facts.get("unix.mode", "")
    if re.fullmatch(r"0?[0-7]{3,4}", um):
        mode = int(um, 8) & 0o777
    link = "symlink" in kind or kind.startswith("os.unix=slink")
    e = Entry(name, int(size) if size and size.isdigit() else None, mtime, kind == "dir",
              mode, "", link)
    e.line = ls_line(e)
    return e


def sftp_entry(attr) -> Entry:
    """A paramiko SFTPAttributes (listdir_attr) as an Entry."""
    mode = getattr(attr, "st_mode", None) or 0
    e = Entry(attr.filename, getattr(attr, "st_size", None),
              None if getattr(attr, "st_mtime", None) is None else float(attr.st_mtime),
              statmod.S_ISDIR(mode), mode & 0o777 if mode else None, "",
              statmod.S_ISLNK(mode))
    e.line = ls_line(e)
    return e


# ---------------------------------------------------------------- HTML index pages

_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGTkmgt]?)(?:i?[Bb])?\Z")
_DATES = (
    (re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"), "dmy"),
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?"), "ymd"),
)


class _IndexParser(html.parser.HTMLParser):
    """The links of an index page and the text that follows each (its date and size)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: List[Tuple[str, List[str]]] = []
        self._text: Optional[List[str]] = None
        self.too_many = False

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            self._text = None
            if href is not None:
                if len(self.found) > MAX_ENTRIES:
                    self.too_many = True
                    return
                self._text = []
                self.found.append((href, self._text))
        elif tag == "tr":
            self._text = None

    def handle_endtag(self, tag):
        if tag in ("tr", "table", "pre"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None and sum(map(len, self._text)) < 512:
            self._text.append(data)


def _date_of(text: str) -> Optional[float]:
    for rx, order in _DATES:
        m = rx.search(text)
        if not m:
            continue
        g = m.groups()
        sec = int(g[5]) if g[5] else 0
        if order == "dmy":
            mon = MONTHS.get(g[1].lower())
            if mon is None:
                continue
            return _epoch(int(g[2]), mon, int(g[0]), int(g[3]), int(g[4]), sec)
        return _epoch(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), sec)
    return None


def _size_of(text: str) -> Tuple[Optional[int], bool]:
    """(size, exact) from the last word of the text after a link: '1234' is exact, '1.2K'
    is not (Apache's default), '-' (a directory) gives None."""
    words = text.split()
    if not words:
        return None, False
    m = _SIZE.match(words[-1])
    if not m:
        return None, False
    if not m.group(2) and "." not in m.group(1):
        return int(m.group(1)), True
    return None, False


def html_entries(page: str, now: Optional[float] = None) -> List[Entry]:
    """The entries an HTML index page lists: each ``<a href>`` that names something in
    this directory (no query, no other directory, no absolute URL; percent escapes decoded;
    a trailing '/' is a subdirectory). Size and date come from the text after the link
    when the page gives them (nginx, Apache); a size that is not exact ('1.2K') is left
    None, as when there is none (python's http.server): the poller asks with HEAD."""
    p = _IndexParser()
    try:
        p.feed(page[:MAX_PAGE])
        p.close()
    except Exception:       # html.parser is lenient; a page it cannot take lists nothing
        return []
    out = []
    for href, text in p.found:
        href = href.strip()
        if not href or href[0] in "?#" or "?" in href or "#" in href:
            continue
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", href) or href.startswith("/"):
            continue            # absolute links: elsewhere (parents, other sites)
        if href.startswith("./"):
            href = href[2:]
        isdir = href.endswith("/")
        name = unquote(href[:-1] if isdir else href, errors="surrogateescape")
        if name in ("", ".", ".."):
            continue
        after = " ".join("".join(text).split())
        size, exact = (None, False) if isdir else _size_of(after)
        when = _date_of(after)
        # the page's own words say whether it changed only when they hold its date
        e = Entry(name, size if exact else None, when, isdir, None, "",
                  listed=after if when is not None else "", wall=True)
        e.line = ls_line(e, now)
        out.append(e)
    return out
