"""v02 messages: the one place that knows the v02 wire syntax.

A v02 message is a topic (the AMQP routing key), a one-line body
``<pubtime> <baseurl> <relpath>`` (reports add ``<code> <host> <user> <duration>``)
and a table of string headers.  This module encodes and decodes them and does no I/O.

Facts: doc/spec/messages-v02.md and reports.md.
"""

import calendar
import dataclasses
import datetime
import re
import time
from typing import Dict, Optional, Tuple

from sarra import checksum

#: reference peers refuse header values of this many UTF-8 bytes or more
MAX_HEADER_BYTES = 253
#: topics are truncated to at most this many bytes (AMQP short string is 255)
MAX_TOPIC_BYTES = 253

# Bounds on what a received message may carry (any peer may be hostile; v2 and sr3 posts
# have about ten headers, each value under MAX_HEADER_BYTES). A message beyond them is
# malformed: acknowledged, dropped, never forwarded.
#: headers per message
MAX_HEADERS = 100
#: UTF-8 bytes of one header value, and of the baseurl and the relpath (PATH_MAX)
MAX_FIELD_BYTES = 4096
#: UTF-8 bytes of all header names and values together
MAX_HEADERS_TOTAL = 32768
#: characters of a body (its first line holds the fields; a pulse's text)
MAX_BODY_CHARS = 65536

KINDS = {"post": "post", "report": "report", "log": "report", "pulse": "pulse",
         "adm": "adm"}      # adm: a source's declaration of readers (flow/readers.py)

_ESC = {" ": "%20", "#": "%23"}
_UNESC = {"%20": " ", "%23": "#"}
_ESC_RE = re.compile(r"[ #]")
_UNESC_RE = re.compile(r"%2[03]")
_TIME_RE = re.compile(r"^(\d{8})T?(\d{6})(?:\.(\S*))?$")


class MessageError(ValueError):
    """A message that cannot be decoded or encoded; names the field and the bad value."""

    def __init__(self, field: str, value, reason: str):
        self.field = field
        self.value = value
        self.reason = reason
        shown = value if isinstance(value, str) else _safe_repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"bad v02 message: {field} {shown!r}: {reason}")


def _safe_repr(value) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def escape(text: str) -> str:
    """Escape exactly space and '#' (the only escapes v2 applies in topics and relpaths)."""
    if " " not in text and "#" not in text:
        return text
    return _ESC_RE.sub(lambda m: _ESC[m.group(0)], text)


def unescape(text: str) -> str:
    """Undo only %20 and %23; every other '%' sequence is left as it is."""
    return _UNESC_RE.sub(lambda m: _UNESC[m.group(0)], text)


# ---------------------------------------------------------------- time stamps

_SECONDS: Dict[float, str] = {}     # whole second -> 'YYYYMMDDHHMMSS' (files share seconds)
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def format_time(t: float) -> str:
    """UTC time as v2 writes it: YYYYMMDDHHMMSS plus the fraction in 9 significant digits."""
    f = t % 1
    frac = format(f, ".9g")
    if "e" in frac:  # the reference would emit an exponent here; write plain digits
        frac = ("%.9f" % f).rstrip("0")
        if frac in ("0.", "0"):
            frac = "0"
    frac = frac[1:]  # drop the leading '0' ('' when the fraction is exactly 0)
    whole = t - f    # floor(t), exactly: gmtime() floors too
    text = _SECONDS.get(whole)
    if text is None:
        text = time.strftime("%Y%m%d%H%M%S", time.gmtime(t))
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[whole] = text
    return text + frac


def _fixed_fields_epoch(day: str, hms: str) -> Optional[int]:
    """Epoch seconds of YYYYMMDD + HHMMSS read as fixed two-digit fields, or None when
    they are not a valid date and time (strptime then decides, as it always did: for
    valid fields its first match is exactly this split)."""
    if not (day.isascii() and hms.isascii()):
        return None
    try:
        days = datetime.date(int(day[:4]), int(day[4:6]), int(day[6:])).toordinal()
    except ValueError:
        return None
    h, m, s = int(hms[:2]), int(hms[2:4]), int(hms[4:])
    if h > 23 or m > 59 or s > 61:
        return None
    return (days - _EPOCH_ORDINAL) * 86400 + h * 3600 + m * 60 + s


def parse_time(text: str) -> float:
    """Parse a v02 time stamp (optional 'T', any number of fraction digits) to epoch seconds."""
    m = _TIME_RE.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not a v02 time stamp (YYYYMMDDHHMMSS[.fff]): {text!r}")
    day, hms, frac = m.groups()
    whole = _fixed_fields_epoch(day, hms)
    if whole is None:
        try:
            whole = calendar.timegm(time.strptime(day + hms, "%Y%m%d%H%M%S"))
        except ValueError as e:
            raise ValueError(f"not a valid date/time: {text!r}") from e
    seconds = float(whole)
    if frac:
        try:
            f = float("0." + frac)
            if 0.0 <= f < 1.0:
                seconds += f
        except ValueError:
            pass  # an unparsable fraction counts as 0 (spec §3.1)
    return seconds


def now() -> str:
    return format_time(time.time())


# ---------------------------------------------------------------- topics

_TOPICS: Dict[Tuple[str, str], str] = {}    # (prefix, directory part) -> topic


def topic_for(prefix: str, relpath: str, subtopic: Optional[str] = None) -> str:
    """Routing key for a post: prefix + the directory words of the (escaped) relpath."""
    if not subtopic and not relpath.endswith("/"):
        # posts come directory by directory: the topic of a directory is worked out once
        key = (prefix, relpath[:relpath.rfind("/") + 1])
        topic = _TOPICS.get(key)
        if topic is None:
            topic = _topic(prefix, relpath, None)
            if len(_TOPICS) >= 1024:
                _TOPICS.clear()
            _TOPICS[key] = topic
        return topic
    return _topic(prefix, relpath, subtopic)


def _topic(prefix: str, relpath: str, subtopic: Optional[str]) -> str:
    if subtopic:
        words = escape(subtopic)
    else:
        parts = relpath.strip("/").split("/")[:-1]
        words = ".".join(escape(p) for p in parts)
    topic = prefix + "." + words if words else prefix
    while ".." in topic:
        topic = topic.replace("..", ".")
    return truncate_utf8(topic.rstrip("."), MAX_TOPIC_BYTES)


def binding_key(prefix: str, subtopic: str) -> str:
    """Key to bind a queue with: the two escapes, but a trailing '.#' stays a wildcard."""
    if subtopic == "#":
        return prefix + ".#"
    if subtopic.endswith(".#"):
        return prefix + "." + escape(subtopic[:-2]) + ".#"
    return prefix + "." + escape(subtopic)


#: an http(s) base URL with a host and the start of a path: scheme://host[:port]/...
_HTTP_BASE = re.compile(r"(?i)https?://[^/]+/")


def join_url(baseurl: str, relpath: str) -> str:
    """The URL of baseurl + relpath, without the double slash of ``http://host/`` +
    ``/dir/file`` (v2's relpath always starts with '/': ``GET //dir/file`` would reach
    lenient servers only, and break signed URLs). Only the one slash at the boundary of
    an http(s) base is dropped; everything else is plain concatenation, as on the wire:
    for sftp/ftp a '//' means an absolute path on the server, and a base without a host
    (``http:/``) is never joined into one. The message itself is never changed, and
    accept/reject masks keep matching ``baseurl + path`` as v2 does."""
    if relpath[:1] == "/" and baseurl[-1:] == "/" and _HTTP_BASE.match(baseurl):
        return baseurl + relpath[1:]
    return baseurl + relpath


def truncate_utf8(text: str, limit: int) -> str:
    if len(text) <= limit and text.isascii():
        return text
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


# ---------------------------------------------------------------- the message

@dataclasses.dataclass
class Report:
    code: int
    host: str
    user: str
    duration: float


@dataclasses.dataclass
class Message:
    """One v02 message. ``relpath`` is kept escaped, exactly as on the wire."""

    pubtime: str
    baseurl: str
    relpath: str
    headers: Dict[str, str]
    topic: str = ""
    exchange: str = ""
    kind: str = "post"
    report: Optional[Report] = None

    # -- derived views
    @property
    def url(self) -> str:
        """v2's URL: plain concatenation, nothing normalised (logs, masks, plugins' urlstr)."""
        return self.baseurl + self.relpath

    @property
    def download_url(self) -> str:
        """The URL to fetch: baseurl + relpath as join_url() puts them together."""
        return join_url(self.baseurl, self.relpath)

    @property
    def path(self) -> str:
        """relpath with %20/%23 undone: the name to use on a local disk."""
        return unescape(self.relpath)

    @property
    def sum(self) -> checksum.Sum:
        return checksum.parse_sum(self.headers["sum"])

    @property
    def parts(self) -> Optional[checksum.Parts]:
        p = self.headers.get("parts")
        return checksum.Parts.parse(p) if p else None

    @property
    def pubtime_epoch(self) -> float:
        return parse_time(self.pubtime)

    def copy(self) -> "Message":
        return dataclasses.replace(self, headers=dict(self.headers))

    # -- encoding
    def encode(self, allow_long_headers: bool = False) -> Tuple[str, str, Dict[str, str]]:
        """Return (routing_key, body, headers) exactly as they go on the wire."""
        return encode(self, allow_long_headers)

    def to_report(self, code: int, text: str, host: str, user: str, duration: float) -> "Message":
        """The report a consumer publishes about this message (reports.md §2)."""
        # every value cut to fit (reports.md §2: informative; a long one would stop the
        # report at the next hop that posts it again, and the source would never see it)
        headers = {k: _fit(v) for k, v in self.headers.items()
                   if k not in ("content", "message")}
        headers["message"] = _fit(text)
        words = (self.topic or topic_for("v02.post", self.relpath)).split(".")
        if len(words) >= 2:
            words[1] = "report"
        else:
            words.append("report")
        return Message(self.pubtime, self.baseurl, self.relpath, headers,
                       topic=".".join(words), exchange=self.exchange, kind="report",
                       report=Report(int(code), host, user, float(duration)))


def _fit(value):
    """A header value cut (on a character boundary) to under MAX_HEADER_BYTES."""
    if isinstance(value, str) and len(value) >= MAX_HEADER_BYTES // 4:
        try:
            return truncate_utf8(value, MAX_HEADER_BYTES - 1)
        except UnicodeError:            # a lone surrogate: cut by characters
            return value[:MAX_HEADER_BYTES // 4]
    return value


def make_post(pubtime: str, baseurl: str, relpath: str, headers: Dict[str, str],
              topic_prefix: str = "v02.post", subtopic: Optional[str] = None,
              exchange: str = "") -> Message:
    """Build a post; ``relpath`` is the unescaped local form and gets escaped here."""
    rel = escape(relpath)
    return Message(pubtime, baseurl, rel, dict(headers),
                   topic=topic_for(topic_prefix, rel, subtopic), exchange=exchange)


def encode(msg: Message, allow_long_headers: bool = False) -> Tuple[str, str, Dict[str, str]]:
    if msg.kind == "pulse":
        return msg.topic, msg.pubtime, {k: str(v) for k, v in msg.headers.items() if v is not None}
    for field, value in (("pubtime", msg.pubtime), ("baseurl", msg.baseurl), ("relpath", msg.relpath)):
        # str.split() splits on exactly the characters str.isspace() accepts
        if not value or value.split(None, 1) != [value]:
            raise MessageError(field, value, "must be non-empty and contain no whitespace")
    headers = {}
    for k, v in msg.headers.items():
        if v is None:
            continue
        if not isinstance(v, str):
            v = _json(v) if isinstance(v, (dict, list)) else str(v)
        if not allow_long_headers and (len(v) >= MAX_HEADER_BYTES or not v.isascii()) \
                and len(v.encode("utf-8")) >= MAX_HEADER_BYTES:
            raise MessageError(f"header {k}", v, f"{len(v.encode('utf-8'))} bytes; "
                               f"v02 peers refuse values of {MAX_HEADER_BYTES} bytes or more")
        headers[k] = v
    if "sum" not in headers and msg.kind != "pulse":
        raise MessageError("header sum", None, "missing (mandatory on every post)")
    body = f"{msg.pubtime} {msg.baseurl} {msg.relpath}"
    if msg.report is not None:
        r = msg.report
        body += f" {int(r.code):03d} {r.host} {r.user} {r.duration:f}"
    topic = truncate_utf8(msg.topic or topic_for("v02.post", msg.relpath), MAX_TOPIC_BYTES)
    return topic, body, headers


# ---------------------------------------------------------------- decoding

def _text(value, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise MessageError(field, bytes(value)[:60], "not valid UTF-8") from None
    raise MessageError(field, value, f"expected text, got {type(value).__name__}")


def _json(value) -> str:
    import json     # here: only tables and lists in headers need it (start-up time)
    return json.dumps(value)


def _header_value(key: str, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _text(value, f"header {key}")
    if isinstance(value, (dict, list)):
        try:
            return _json(value)
        except (TypeError, ValueError):
            raise MessageError(f"header {key}", value, "not serialisable") from None
    if isinstance(value, (int, float, bool)):
        return str(value)
    raise MessageError(f"header {key}", value, f"unsupported header type {type(value).__name__}")


def decode(routing_key, body, headers, exchange: str = "") -> Message:
    """Decode a received message; any problem raises MessageError naming the field."""
    try:
        return _decode(routing_key, body, headers, exchange)
    except MessageError:
        raise
    except Exception as e:  # a guard: nothing but MessageError leaves the decoder
        raise MessageError("message", _safe_repr(body)[:60],
                           f"undecodable ({type(e).__name__})") from None


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _bounded(field: str, text: str, limit: int = MAX_FIELD_BYTES) -> str:
    if len(text) > limit // 4 and _utf8_len(text) > limit:
        raise MessageError(field, text, f"{_utf8_len(text)} bytes; at most {limit} accepted")
    return text


def _check_sizes(hdrs: Dict[str, str], count: int) -> None:
    total = 0
    for key, value in hdrs.items():
        _bounded(f"header {key}", value)
        total += _utf8_len(key) + _utf8_len(value)
    if total > MAX_HEADERS_TOTAL:
        raise MessageError("headers", f"{count} headers",
                           f"more than {MAX_HEADERS_TOTAL} bytes in all")


def _decode(routing_key, body, headers, exchange) -> Message:
    topic = _text(routing_key, "topic")
    words = topic.split(".")
    if len(words) < 2 or not words[0].startswith("v0"):
        raise MessageError("topic", topic, "expected v02.post..., v02.report... or v02.pulse...")
    kind = KINDS.get(words[1])
    if kind is None:
        raise MessageError("topic", topic, f"unknown message type {words[1]!r}")
    text = _text(body, "body")
    if headers is None:
        headers = {}
    if not isinstance(headers, dict):
        raise MessageError("headers", headers, "expected a table of headers")
    if len(headers) > MAX_HEADERS:
        raise MessageError("headers", f"{len(headers)} headers",
                           f"more than {MAX_HEADERS} headers")
    if len(text) > MAX_BODY_CHARS:
        raise MessageError("body", text, f"{len(text)} characters; at most "
                                         f"{MAX_BODY_CHARS} accepted")
    hdrs = {}
    chars = longest = 0
    for k, v in headers.items():
        key = _text(k, "header name")
        value = hdrs[key] = _header_value(key, v)
        n = len(value)
        chars += n
        if n > longest:
            longest = n
    names = "".join(hdrs)
    if "" in hdrs or not names.isprintable():
        bad = next(k for k in hdrs if not k or not k.isprintable())
        raise MessageError("header name", bad, "empty or not printable")
    if longest > MAX_FIELD_BYTES // 4 or chars + len(names) > MAX_HEADERS_TOTAL // 4:
        _check_sizes(hdrs, len(headers))    # UTF-8 bytes counted only when it may matter
    line = text.split("\n", 1)[0].strip()
    if line.startswith("{") or line.startswith("["):
        raise MessageError("body", line, "JSON (v03) bodies are not v02")
    fields = line.split()
    if kind == "pulse":
        if not fields:
            raise MessageError("body", text, "empty pulse")
        # v02.pulse.tick carries a time stamp, v02.pulse.message free text: keep the line whole
        return Message(line, "", "", hdrs, topic=topic, exchange=exchange, kind="pulse")
    if len(fields) < 3:
        raise MessageError("body", line, "expected '<pubtime> <baseurl> <relpath>'")
    pubtime, baseurl, relpath = fields[:3]
    _bounded("baseurl", baseurl)
    _bounded("relpath", relpath)
    try:
        parse_time(pubtime)
    except ValueError as e:
        raise MessageError("pubtime", pubtime, str(e)) from None
    report = None
    looks_like_report = len(fields) >= 7 and re.fullmatch(r"\d{3}", fields[3]) is not None
    if kind == "report" or looks_like_report:
        if len(fields) < 7:
            raise MessageError("body", line, "a report needs 7 fields: "
                               "<pubtime> <baseurl> <relpath> <code> <host> <user> <duration>")
        try:
            code = int(fields[3])
        except ValueError:
            raise MessageError("report code", fields[3], "not an integer") from None
        try:
            duration = float(fields[6])
        except ValueError:
            raise MessageError("report duration", fields[6], "not a number") from None
        report = Report(code, fields[4], fields[5], duration)
        kind = "report"
    if "sum" not in hdrs:
        raise MessageError("header sum", None, "missing (mandatory on every post)")
    try:
        s = checksum.parse_sum(hdrs["sum"])
    except ValueError as e:
        raise MessageError("header sum", hdrs["sum"], str(e)) from None
    why = checksum.unknown(s)
    if why is not None:
        raise MessageError("header sum", hdrs["sum"], why)
    if "parts" in hdrs:
        try:
            checksum.Parts.parse(hdrs["parts"])
        except ValueError as e:
            raise MessageError("header parts", hdrs["parts"], str(e)) from None
    elif s.algo not in checksum.NO_PARTS_ALGOS and kind == "post":
        raise MessageError("header parts", None, f"missing (mandatory for sum {s.algo!r})")
    return Message(pubtime, baseurl, relpath, hdrs, topic=topic, exchange=exchange,
                   kind=kind, report=report)
