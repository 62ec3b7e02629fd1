"""v2 options and values sarra refuses at start, each with the reason and what to do instead.

v2's configs load unchanged (issue 19), but an option that would change where data goes or
how it moves is never accepted and then silently ignored: sarra either acts on it, ignores it
with a reason (options.NOT_ACTED_ON), or refuses it here. The parser
(sarra.config.parser) turns a refusal into a ConfigError naming file:line.

Also here: which names ``header name=value`` may set (every posted message carries them, so
a name that would forge what the message says about the file is refused).
"""

import re
from typing import Any, Dict, Optional, Tuple

#: option -> (components that refuse it, "*" = all; why, and what to do instead)
REFUSED: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "on_data": (("*",), "a plugin that rewrites downloaded bytes is not supported (sarra "
                        "checks every download against its announced checksum): transform "
                        "the file in an on_file plugin instead"),
    "do_get": (("*",), "v2 transport hook not supported: register a do_download plugin "
                       "for the scheme (sr_subscribe, sr_sarra) instead"),
    "do_put": (("*",), "v2 transport hook not supported: register a do_send plugin for the "
                       "scheme (sr_sender) instead"),
    "do_task": (("*",), "v2 never finished do_task: use on_message (per message), "
                        "do_download or do_send (per transfer) instead"),
    "randomize": (("*",), "a v2 test aid (random checksum algorithm and block order) sarra "
                          "does not offer: remove it (choose the algorithm with sum)"),
}

#: option -> {value: why}: values sarra cannot honour (the option's other values act)
REFUSED_VALUES: Dict[str, Dict[Any, str]] = {
    "tls_rigour": {"lax": "sarra always checks TLS certificates and host names: trust a "
                          "private CA or a self-signed server by naming its certificate in "
                          "SSL_CERT_FILE (or REQUESTS_CA_BUNDLE) instead"},
}


#: the keywords of a filename option (flow/naming.py applies them; '=' ones take a value)
FILENAME_KEYWORDS = ("WHATFN", "HEADFN", "SENDER", "NONE", "NONESENDER", "TIME")
FILENAME_VALUED = ("DESTFN=", "DESTFNSCRIPT=", "SATNET=")


def filename_problem(option: str) -> Optional[str]:
    """Why a filename option value (Sundew keywords) cannot be used, or None."""
    if option == "None":
        return None
    for spec in option.split(":"):
        if spec and spec not in FILENAME_KEYWORDS and not spec.startswith(FILENAME_VALUED):
            return ("unknown filename keyword %r: use %s, DESTFN=<name>, "
                    "DESTFNSCRIPT=<plugin> or SATNET=<...>"
                    % (spec, ", ".join(FILENAME_KEYWORDS)))
    return None


def vip_problem(value: Any) -> Optional[str]:
    """Why a vip value (IP addresses, see sarra/ops/vip.py) cannot be used, or None: a
    host name or a typo would leave the component in standby for ever."""
    import ipaddress
    words = value.replace(",", " ").split() if isinstance(value, str) else list(value or [])
    for w in words:
        try:
            ipaddress.ip_address(str(w).split("%", 1)[0])
        except ValueError:
            return "%r is not an IP address (vip takes the addresses themselves)" % str(w)
    return None


def refusal(name: str, component: str, value: Any = None) -> Optional[str]:
    """Why `component` refuses option `name` (canonical) set to `value`, or None."""
    from sarra.config import options
    if not options.acted_on(name, component):
        return None         # ignored there, with its reason (options.NOT_ACTED_ON)
    if name == "filename" and isinstance(value, str):
        return filename_problem(value)
    if name == "vip":
        return vip_problem(value)
    entry = REFUSED.get(name)
    if entry is not None and ("*" in entry[0] or component in entry[0]):
        return entry[1]
    by_value = REFUSED_VALUES.get(name)
    if by_value is not None and isinstance(value, str):
        return by_value.get(value.lower())
    return None


def config_problem(cfg) -> Optional[str]:
    """Why a whole configuration is refused (options that go together), naming the file
    and line of the option, or None. sr_sender's delete needs base_dir: only files below
    it are removed, so that an announcement naming any file of the machine cannot make
    the sender remove it."""
    if cfg.component == "sender" and cfg.get("delete") and not cfg.get("base_dir"):
        return ("%s: option 'delete' refused: it needs base_dir (only files below it are "
                "removed once sent): set base_dir to the tree the sender sends from"
                % cfg.origin("delete"))
    return None


#: header names a v02 message uses to describe the file, its origin or its route: set by
#: sarra itself (or by the option named) and never by ``header``
RESERVED_HEADERS = {
    "sum": None, "parts": None, "mtime": None, "atime": None, "mode": None, "link": None,
    "oldname": None, "newname": None, "content": None, "pubtime": None, "baseurl": None,
    "relpath": None, "topic": None, "exchange": None, "cluster_path": None,
    "message": None, "rename": "rename", "source": "source", "from_cluster": "cluster",
    "to_clusters": "to",
}
#: what a header name may look like (an AMQP field name, as v2 and sr3 write them)
_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def header_problem(name: str) -> Optional[str]:
    """Why ``header <name>=...`` is refused, or None."""
    if not _HEADER_NAME.match(name):
        return ("bad header name %r: a letter, then letters, digits, '_', '.' or '-' "
                "(64 at most)" % name[:80])
    low = name.lower()
    if low in RESERVED_HEADERS:
        instead = RESERVED_HEADERS[low]
        return "header %r is set by sarra itself%s" % (
            name, "; use the option %s instead" % instead if instead else
            ": it describes the file and cannot be changed")
    return None
