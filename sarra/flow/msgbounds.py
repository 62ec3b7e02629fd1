"""What a peer's message may make a consumer do: modes, sums that check nothing, posts
that cannot be re-posted.

Every header may come from a hostile source, so:

* ``mode``: applied masked, never setuid/setgid/sticky; at a pump (sr_sarra) never
  world-writable either, and the pump re-posts the masked mode, not the one it received;
* ``sum``: at a pump, an algorithm that checks no data (``0``, ``n``, ``a``, ``p``, or
  ``z`` of one of those) is refused (403) unless the admin sets ``unchecked_sums``;
  removals (``R``), links (``L``) and the v03 directory operations carry no data and pass
  (sr_winnow's link posts, which may be downloaded, are judged by their ``link_sum``);
* refused once before any transfer, never retried (each retry would fail alike): a local
  name no file system takes (403), and in a posting flow a message whose re-post could
  not be encoded (a header v02 peers refuse: 413; a name with a newline: 403);
* the 417 report of a malformed message repeats only what can be decoded again.

Unknown algorithms and oversized messages are refused earlier, when decoded
(message.py); control characters in log lines are escaped by logs.py.
"""

import dataclasses

from sarra import checksum, message
from sarra.flow.work import Outcome

#: at a pump: no world-write, no setuid/setgid/sticky
PUMP_MODE_MASK = 0o775
#: elsewhere: the permission bits only (never setuid/setgid/sticky from a message)
MODE_MASK = 0o777

#: the header of sr_winnow's link posts holding the data's sum (download.WINNOW_LINK_SUM)
LINK_SUM = "link_sum"
#: sums without data to check, but without data to fetch either
NO_DATA = frozenset({"R", "L", "m", "r", "l"})

#: the code of a message refused because it cannot be passed on (RFC 9110 §15.5.14)
TOO_LARGE = 413


def mode_mask(cfg) -> int:
    """The permission bits a component may give what it writes."""
    return PUMP_MODE_MASK if getattr(cfg, "component", None) == "sarra" else MODE_MASK


def checks_data(s: checksum.Sum) -> bool:
    """The sum lets the receiver verify the data it fetches."""
    if s.algo == "z":
        return s.value in checksum.DATA_ALGOS
    return s.algo in checksum.DATA_ALGOS and bool(s.value)


def pump_check(flow, work):
    """sr_sarra's bounds on one message (from components.sarra_check): the sum must check
    the data (403 otherwise, unless unchecked_sums), and the mode header is masked so
    that what is written and what is re-posted agree."""
    msg, cfg = work.msg, flow.cfg
    try:
        s = msg.sum
        if s.algo == "L" and LINK_SUM in msg.headers:
            # sr_winnow's link post: the file may be downloaded, checked with this sum
            s = checksum.parse_sum(msg.headers[LINK_SUM])
    except ValueError:      # not from a decoded message: decode refuses it as malformed
        s = None
        if LINK_SUM in msg.headers:
            s = checksum.Sum("0", "")       # a link_sum that checks nothing
    if s is not None and s.algo not in NO_DATA and not checks_data(s) \
            and not getattr(cfg, "unchecked_sums", False):
        name = LINK_SUM if LINK_SUM in msg.headers else "sum"
        raise Outcome(403, f"Forbidden: {name} {msg.headers.get(name)} checks no data "
                           f"(refused at this pump: unchecked_sums off)")
    mode = msg.headers.get("mode")
    if mode is not None:
        try:
            msg.headers["mode"] = "%o" % (int(mode, 8) & PUMP_MODE_MASK)
        except (TypeError, ValueError):
            del msg.headers["mode"]      # not a mode: nothing to apply or to pass on


#: longest file name (one path component, UTF-8 bytes) and path local file systems take
NAME_MAX = 255
PATH_MAX = 4096


def check_work(flow, work):
    """Before the work step of every flow: a local name no file system takes, and in a
    posting flow a message that could not be posted on, are refused once, not retried
    (each retry would fail the same way)."""
    path = work.local_path
    if path is not None:
        check_name(path)
        if getattr(flow.preset.work, "__module__", None) == "sarra.flow.download":
            temp = temp_name(flow, work, path)
            check_name(temp)            # a name that fits, its temp not
            from sarra.flow import nodeparts
            # never a name of a block manifest's family (pump nodes), nor its temp's
            nodeparts.check(path, temp)
    if flow.preset.posts and flow.post_broker is not None:
        check_postable(flow, work)


def check_name(path: str):
    """403 for a local path longer than PATH_MAX or with a component longer than
    NAME_MAX bytes (ENAMETOOLONG is no error to retry)."""
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) >= PATH_MAX or any(len(c) > NAME_MAX for c in raw.split(b"/")):
        raise Outcome(403, f"Forbidden: local name too long (names of at most {NAME_MAX} "
                           f"bytes, paths under {PATH_MAX}): {_shown(path)}")


def temp_name(flow, work, path: str) -> str:
    """The longest name a download writes for ``path``: its temporary name (inflight),
    of its part file when blocks are kept in part files (download.py)."""
    from sarra.flow import placement
    try:
        parts, algo = work.msg.parts, work.msg.sum.algo
    except ValueError:
        parts, algo = None, None
    if algo == "L":
        return path + ".sarra-link"                 # download._symlink's temporary name
    if parts is not None and not parts.whole and not flow.cfg.inplace:
        path = path + parts.suffix(algo)
    return placement.inflight_path(path, flow.cfg.inflight)


def _shown(path: str) -> str:
    """The end of a long path (the name), quoted: a report's text fits a v02 header."""
    return repr(path if len(path) <= 120 else "..." + path[-117:])


def check_postable(flow, work):
    """A posting flow refuses a message it could not post again, before any transfer:
    otherwise the file would sit in its tree unannounced and the message loop in the retry
    queue. A header value v02 peers refuse: 413 (``rename`` is not passed on:
    download.repost drops it); a local name with whitespace other than space (a rename
    header with a newline): 403. Neither is retried."""
    path = work.local_path
    if path is not None and message.escape(path).split(None, 1) != [message.escape(path)]:
        # only space is escaped (%20) in a v02 relpath: a newline, a tab... cannot be carried
        raise Outcome(403, f"Forbidden: a v02 relpath cannot carry the whitespace in the "
                           f"local name {_shown(path)}") from None
    msg = work.msg
    if "rename" in msg.headers:
        msg = dataclasses.replace(msg, headers={k: v for k, v in msg.headers.items()
                                                if k != "rename"})
    try:
        message.encode(msg)
    except message.MessageError as e:
        raise Outcome(TOO_LARGE, f"Payload Too Large: {e.field} cannot be passed on: "
                                 f"{e.reason}") from None


def malformed_report_headers(flow, delivery) -> dict:
    """The headers of the 417 report about a message that could not be decoded: those
    echoed_headers keeps; at a pump (source_from_exchange) from an xs_ exchange, the
    source is the exchange's owner, as for any post (components.sarra_check): a malformed
    post claiming another source sends its report to its poster, not to that source."""
    hdrs = echoed_headers(delivery.headers)
    cfg = flow.cfg
    exchange = delivery.exchange if isinstance(delivery.exchange, str) else ""
    if getattr(cfg, "source_from_exchange", False) and exchange.startswith("xs_"):
        from sarra.flow.presets import exchange_owner     # components imports this module
        hdrs["source"] = exchange_owner(exchange, cfg)
        hdrs["from_cluster"] = cfg.cluster or cfg.broker_netloc()
    return hdrs


def echoed_headers(headers) -> dict:
    """The headers of a malformed message that its 417 report repeats: few enough for the
    report to be decoded on its way back to the source (room left for the headers it
    sets), each name printable, each value short enough to be posted, a ``sum`` or
    ``parts`` only when valid (the report's own default sum replaces a bad one): a message
    refused for its 10,000 headers or its unknown sum is not sent on inside its report."""
    out = {}
    if not isinstance(headers, dict):
        return out
    for k, v in headers.items():
        if len(out) >= message.MAX_HEADERS - 4:      # sum, source, from_cluster, message
            break
        if isinstance(k, (bytes, bytearray)):
            k = bytes(k).decode("utf-8", "replace")
        if isinstance(v, (bytes, bytearray)):
            v = bytes(v).decode("utf-8", "replace")
        k, v = str(k), str(v)
        if k and k.isprintable() and len(v.encode("utf-8", "replace")) < message.MAX_HEADER_BYTES \
                and _valid(k, v):
            out[k] = v
    return out


def _valid(key: str, value: str) -> bool:
    try:
        if key == "sum":
            return checksum.unknown(checksum.parse_sum(value)) is None
        if key == "parts":
            checksum.Parts.parse(value)
    except ValueError:
        return False
    return True
