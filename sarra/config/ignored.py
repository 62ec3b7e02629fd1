"""The v2 options sarra accepts but does not act on, and why (issue 19).

Kept apart from the option table (options.py, which re-exports these names): an option
listed here loads, logs one warning with its reason (sarra.config.parser), is marked by
``show``, ``--help`` and the man pages. Options sarra refuses instead: v2refuse.py.
"""

from typing import Any, Dict, Optional, Tuple

ALL = ("*",)

#: Why an option is not acted on yet (work in progress, issue 19): one shared reason.
NOT_YET = "not implemented in sarra yet"
#: v03 only: the reason of the inline options.
_V03 = "v03 messages only: sarra posts v02, whose messages carry no file content"
#: Options accepted for v2 compatibility that sarra does not act on: name -> (the components
#: that ignore it ("*": all of them), why). Setting one in a file or on the command line logs
#: one warning with that reason (sarra.config.parser), `show` marks it and man/sr_config.7
#: says so. Code that starts acting on one of these for a component removes it (or that
#: component) here; one sarra cannot honour is refused at start instead (config/v2refuse.py).
NOT_ACTED_ON: Dict[str, Tuple[Tuple[str, ...], str]] = dict(
    interface=(ALL, "v2 ignores it too (deprecated there: vip is enough)"),
    cache_stat=(ALL, "sarra's winnow logs its duplicate cache statistics at every heartbeat "
                     "(hb_cache plugin), whatever this says"),
    inline=(ALL, _V03), inline_encoding=(ALL, _V03), inline_max=(ALL, _V03),
    queue_share=(ALL, "always on in sarra: the instances of a configuration share one queue"),
    filename=(("poll",), "v2's sr_poll ignores it too: a poll writes no file; the "
                         "subscriber or sender that takes the file applies it"),
    poll_without_vip=(("poll",), "sarra's standby node lists nothing (no connection, as "
                                 "every component in standby); when it takes over it "
                                 "announces what is new or changed since its own record"))
#: sr_poll announces what a listing says and reads no file (its own transfers are
#: listings): these options change nothing there
for _name in ("base_dir", "blocksize", "bufsize", "do_get", "do_put", "inflight", "parts",
              "preserve_mode", "randomize", "strip", "xattr_disable"):
    NOT_ACTED_ON.setdefault(_name, (("poll",), "sr_poll reads no file: it announces what "
                                               "the remote listing says"))
#: The warning's wording (config.md: v2 options are accepted; these ones change nothing),
#: followed by the option's reason.
NOT_ACTED_TEXT = "accepted for v2 compatibility, not acted on by sarra; ignored"


def acted_on(name: str, component: str) -> bool:
    """False when `component` accepts option `name` (canonical) but nothing acts on it."""
    ignored_by = NOT_ACTED_ON.get(name, ((), ""))[0]
    return not ("*" in ignored_by or component in ignored_by)


def ignored_text(name: str) -> str:
    """The warning text for option `name` that is not acted on: NOT_ACTED_TEXT and why."""
    return "%s: %s" % (NOT_ACTED_TEXT, NOT_ACTED_ON[name][1])


def ignored_part(name: str, value: Any) -> Optional[Tuple[str, Any]]:
    """(what is not acted on, the value used instead) for a value sarra acts on only in
    part, else None. None today: a comma list in post_base_url (v2 round robin) acts
    (sarra.flow.outbound)."""
    return None
