"""The command line of the sr_* commands (the one argv parser, split_argv) and their
--help text, from the option table (sarra.config.options).
"""

from typing import Iterable, List, Optional, Sequence, Tuple

from sarra.config.options import (BOOL, BOOL_WORDS, BROKER, CACHE, CHOICE, DECLARE, DURATION,
                                  HEADER, INCLUDE, INFLIGHT, INT, LIST, MASK, OCTAL, PARTS, PATH,
                                  PLUGINS, SIZE, STR, STRIP, SUBTOPIC, URL, WORDS, OPTIONS, Option,
                                  NOT_ACTED_ON, acted_on, format_value, lookup)

#: how --help marks an option this component accepts (v2 configs carry it) but ignores
IGNORED_MARK = "[IGNORED: accepted for v2 compatibility, not acted on] "


def split_argv(argv: Sequence[str], actions: Iterable[str] = (),
               valued: Iterable[str] = ()) -> Tuple[List[Tuple[str, Optional[str]]], List[str]]:
    """The one argv parser: argv as ([(option, value-or-None)], [positional words]).

    `--key value`, `-k value`, `--key=value`; '--' ends the options; '-' and numbers
    ('-3') are words.  A boolean option takes the next word only if it is a boolean word
    (on/off/...), so `--reset foreground cfg` works, and gets None (true) otherwise.  Any
    other option takes the next word unless that looks like an option itself; an unknown
    one (a plugin may declare it) not when the word is one of ``actions`` (`--bogus show
    cfg`).  The keys in ``valued`` always take the next word.
    """
    pairs: List[Tuple[str, Optional[str]]] = []
    words: List[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            words += argv[i + 1:]
            break
        if a.startswith("-") and len(a) > 1 and not _is_number(a):
            key = a.lstrip("-")
            value = None
            if "=" in key and a.startswith("--"):
                key, value = key.split("=", 1)
            else:
                opt = lookup(key)
                takes_value = not (opt is not None and opt.type == BOOL)
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                if opt is None and nxt in actions:
                    takes_value = False   # `--bogus show cfg`: show is the action
                if key in valued:
                    takes_value = True
                if nxt is not None and (takes_value or nxt.lower() in BOOL_WORDS) \
                        and not (nxt.startswith("-") and len(nxt) > 1 and not _is_number(nxt)):
                    value = nxt
                    i += 1
            pairs.append((key, value))
        else:
            words.append(a)
        i += 1
    return pairs, words


#: the name the configuration parser knows it by (load() with a raw argv list)
parse_cli = split_argv


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


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
        mark = "" if acted_on(o.name, component) else \
            "%s(%s) " % (IGNORED_MARK, NOT_ACTED_ON[o.name][1])
        lines.append("      %s%s%s" % (mark, o.help, dtext))
    return "\n".join(lines) + "\n"
