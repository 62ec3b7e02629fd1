"""The command line of the sr_* commands and their --help text, from the option table
(sarra.config.options, which re-exports parse_cli and render_help).
"""

import re
from typing import Iterable, List, Optional, Sequence, Tuple

from sarra.config.options import (BOOL, BOOL_WORDS, BROKER, CACHE, CHOICE, DECLARE, DURATION,
                                  HEADER, INCLUDE, INFLIGHT, INT, LIST, MASK, OCTAL, PARTS, PATH,
                                  PLUGINS, SIZE, STR, STRIP, SUBTOPIC, URL, WORDS, OPTIONS, Option,
                                  acted_on, format_value, lookup)

#: how --help marks an option this component accepts (v2 configs carry it) but ignores
IGNORED_MARK = "[IGNORED: accepted for v2 compatibility, not acted on] "


def parse_cli(argv: Sequence[str]) -> Tuple[List[Tuple[str, Optional[str]]], List[str]]:
    """Split argv into ([(option, value-or-None)], [positional words]).

    `--key value`, `-k value`, `--key=value`; a boolean option takes the next word only
    if it is a boolean word (on/off/...), so `--reset foreground cfg` works.
    Unknown options take the next word unless it starts with '-'.
    """
    pairs: List[Tuple[str, Optional[str]]] = []
    positional: List[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional.extend(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-" or re.match(r"^-\d", arg):
            positional.append(arg)
            i += 1
            continue
        key = arg.lstrip("-")
        if "=" in key:
            key, value = key.split("=", 1)
            pairs.append((key, value))
            i += 1
            continue
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        opt = lookup(key)
        if opt is not None and opt.type == BOOL:
            take = nxt is not None and nxt.lower() in BOOL_WORDS
        elif opt is not None:
            take = nxt is not None
        else:
            take = nxt is not None and not nxt.startswith("-")
        pairs.append((key, nxt if take else None))
        i += 2 if take else 1
    return pairs, positional


_TYPE_HINT = {STR: "TEXT", INT: "N", SIZE: "SIZE", DURATION: "SECONDS", OCTAL: "MODE",
              LIST: "A,B", URL: "URL", BROKER: "URL", WORDS: "EVENTS", PLUGINS: "NAME",
              CHOICE: "WORD", CACHE: "on|off|SECONDS", STRIP: "N|REGEX", PARTS: "1|i,SIZE",
              INFLIGHT: "SUFFIX|SECONDS", MASK: "REGEX", SUBTOPIC: "KEY", PATH: "PATH",
              HEADER: "NAME=VALUE", DECLARE: "KIND VALUE", INCLUDE: "FILE", BOOL: "[on|off]"}


def options_for(component: str) -> List[Option]:
    from sarra.paths import canonical_component
    component = canonical_component(component)
    return sorted((o for o in OPTIONS if o.used_by(component)), key=lambda o: o.name)


def render_help(component: str, actions: Iterable[str] = ()) -> str:
    """Text for `sr_<component> --help`: usage line and the options this component uses
    (those it accepts but does not act on marked IGNORED_MARK)."""
    from sarra.paths import canonical_component
    component = canonical_component(component)
    lines = ["usage: sr_%s [options] %s [<config>]" % (
        component, "|".join(actions) if actions else "<action>"), "", "options:"]
    for o in options_for(component):
        flags = ", ".join(("--" if len(n) > 2 else "-") + n
                          for n in (o.name,) + o.aliases if " " not in n)
        default = o.default_for(component)
        dtext = "" if default in (None, [], "") and o.type != BOOL else \
            " (default: %s)" % format_value(o, default)
        lines.append("  %s %s" % (flags, _TYPE_HINT.get(o.type, "")))
        lines.append("      %s%s%s" % ("" if acted_on(o.name, component) else IGNORED_MARK,
                                       o.help, dtext))
    return "\n".join(lines) + "\n"
