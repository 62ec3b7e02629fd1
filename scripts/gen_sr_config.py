#!/usr/bin/env python3
"""Generate the option reference of man/sr_config.7 from the option table (sarra/config/options.py).

The page is hand-written prose plus one generated block between two roff comment lines
(BEGIN and END below). Every option of ``options.OPTIONS`` gets an entry with its aliases,
its value type, its default (per component where they differ), the components that read
it and its help text.

    scripts/gen_sr_config.py            rewrite the generated block of man/sr_config.7
    scripts/gen_sr_config.py --check    exit 1 (and say so) if the block is out of date
    scripts/gen_sr_config.py --print    print the generated block on stdout

tests/unit/test_manpages.py checks that the page is up to date.
"""

import os
import sys
from typing import Any, Dict, List, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAGE = os.path.join(ROOT, "man", "sr_config.7")

BEGIN = '.\\" BEGIN GENERATED OPTION REFERENCE (scripts/gen_sr_config.py; do not edit by hand)'
END = '.\\" END GENERATED OPTION REFERENCE'


def _options():
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from sarra.config import options
    return options


# ------------------------------------------------------------------ roff helpers

def esc(text: str) -> str:
    """Text safe inside a roff line: backslashes and hyphens escaped."""
    return str(text).replace("\\", "\\e").replace("-", "\\-")


def line(text: str) -> str:
    """A text line that roff cannot take for a request (no leading dot or quote)."""
    return "\\&" + text if text[:1] in (".", "'") else text


def bold(text: str) -> str:
    return "\\fB" + esc(text) + "\\fR"


def italic(text: str) -> str:
    return "\\fI" + esc(text) + "\\fR"


# ------------------------------------------------------------------ values

TYPE_WORDS = {
    "str": ("TEXT", "text"),
    "bool": ("on|off", "boolean"),
    "int": ("N", "integer"),
    "size": ("SIZE", "size in bytes (suffixes K, M, G, T are powers of 1024)"),
    "duration": ("DURATION", "duration (seconds, or a number with s, m, h, d or w)"),
    "octal": ("MODE", "octal permission bits"),
    "list": ("A,B,...", "comma-separated list"),
    "url": ("URL", "URL (a comma-separated list is accepted)"),
    "broker": ("URL", "broker URL (amqp:// or amqps://user@host[:port]/[vhost])"),
    "words": ("EVENTS", "event words separated by |: create, delete, link, modify, move"),
    "plugins": ("NAME", "plugin name or path (repeatable)"),
    "choice": ("WORD", "one word of a fixed set"),
    "cache": ("on|off|DURATION", "off, on (300 seconds) or a lifetime"),
    "strip": ("N|REGEX", "count of leading path components, or a regular expression"),
    "inflight": ("SUFFIX|DURATION", "temporary-name rule (.tmp, ., tmp/, NONE) "
                                    "or, for posters, a minimum file age"),
    "parts": ("1|i,SIZE", "1, i,<size> or 0 (the blocksize values 1, <size> and 0); "
                          "p,... is refused"),
    "mask": ("REGEX", "regular expression (repeatable, order matters)"),
    "subtopic": ("KEY", "binding key words (repeatable, order matters)"),
    "path": ("PATH", "file or directory (repeatable)"),
    "header": ("NAME=VALUE", "header assignment (repeatable)"),
    "declare": ("KIND VALUE", "declaration (repeatable)"),
    "include": ("FILE|URL", "file name or http(s) URL"),
}

# What each plugin hook is for (the option table has one generic help text for all hooks).
HOOK_WHEN = {
    "on_start": "runs when the process starts, before it connects",
    "on_stop": "runs when the process stops cleanly",
    "on_heartbeat": "runs every heartbeat; the defaults log counters and memory use",
    "on_message": "runs for each accepted message, before the duplicate check and the "
                  "transfer; False drops the message (no report)",
    "on_part": "runs after each block (or whole file) is written and verified; False "
               "prevents the re-post",
    "on_file": "runs once a complete, verified file is in place; False prevents the re-post",
    "on_post": "runs just before a message is published; False: not published",
    "on_report": "runs before a report is published; False: not published",
    "on_data": "v2: transform the data while downloading",
    "on_watch": "sr_watch: runs at each interval",
    "on_line": "sr_poll: runs for each line of a remote listing",
    "on_html_page": "sr_poll: runs for each HTML listing page",
    "do_download": "replaces the built-in download: True = done, False = failed, "
                   "None = use the built-in one",
    "do_get": "v2: low-level get for a URL scheme",
    "do_put": "v2: low-level put for a URL scheme",
    "do_send": "sr_sender: delivers one file",
    "do_poll": "sr_poll: replaces the listing step",
    "do_task": "v2: reserved",
    "destfn_script": "computes the destination file name",
    "plugin": "a file with a class whose methods are named after hooks; each method is "
              "added to its hook",
}

_DURATION_UNITS = (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60))


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0"
    for unit, size in _DURATION_UNITS:
        if seconds >= size and seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    if float(seconds).is_integer():
        return "%ds" % seconds
    return "%gs" % seconds


def format_default(opt, value: Any) -> str:
    O = _options()
    if value is None:
        return "none"
    if opt.type == O.CACHE:
        return "off" if not value else format_duration(value)
    if opt.type == O.DURATION:
        return format_duration(value)
    if isinstance(value, (list, tuple)) and not value:
        return "none"
    return O.format_value(opt, value)


def program(component: str) -> str:
    return "all commands" if component == "*" else "sr_" + component


def default_text(opt) -> str:
    """'\\fBx\\fR' or '\\fBx\\fR (sr_a, sr_b: \\fBy\\fR; sr_c: \\fBz\\fR)'."""
    base = opt.default_for("*")
    groups: List[Tuple[str, List[str]]] = []
    for comp, value in opt.default.items():
        if comp == "*":
            continue
        shown = format_default(opt, value)
        if shown == format_default(opt, base):
            continue
        for i, (text, comps) in enumerate(groups):
            if text == shown:
                comps.append(comp)
                break
        else:
            groups.append((shown, [comp]))
    text = bold(format_default(opt, base))
    if groups:
        text += " (" + "; ".join(
            "%s: %s" % (", ".join(esc(program(c)) for c in comps), bold(shown))
            for shown, comps in groups) + ")"
    return text


def used_by(opt) -> str:
    if "*" in opt.components:
        return "all commands"
    return ", ".join(esc(program(c)) for c in opt.components)


def not_acted_on(opt) -> str:
    """The sentence for an option accepted for v2 compatibility but not acted on ('' for
    the others): options.NOT_ACTED_ON says by which commands."""
    ignored_by, why = _options().NOT_ACTED_ON.get(opt.name, ((), ""))
    refused = refused_text(opt)
    if not ignored_by:
        return refused
    why = esc(why[:1].upper() + why[1:]) + "."
    if "*" in ignored_by:
        return ("Accepted for v2 compatibility, not acted on by sarra: ignored "
                "(setting it logs a warning). %s" % why)
    return ("Accepted for v2 compatibility, not acted on by %s: ignored there "
            "(setting it logs a warning). %s %s" % (
                ", ".join(esc(program(c)) for c in ignored_by), why, refused)).strip()


def refused_text(opt) -> str:
    """The sentence for an option (or a value) refused at start ('' for the others):
    sarra/config/v2refuse.py says why."""
    from sarra.config import v2refuse
    entry = v2refuse.REFUSED.get(opt.name)
    if entry:
        return "Refused at start (a configuration error): %s." % esc(entry[1])
    values = v2refuse.REFUSED_VALUES.get(opt.name, {})
    return " ".join("The value %s is refused at start (a configuration error): %s."
                    % (bold(v), esc(why)) for v, why in sorted(values.items()))


def range_text(opt) -> str:
    """'Minimum: 1.' / 'Range: 1 to 65535.' for the numeric options ('' for the others);
    a value outside is a configuration error naming the file and line."""
    if opt.lo is None:
        return ""
    O = _options()
    fmt = format_duration if opt.type in (O.DURATION, O.CACHE) else (lambda v: "%g" % v)
    if opt.hi is None:
        return "Minimum: %s." % bold(fmt(opt.lo))
    return "Range: %s to %s." % (bold(fmt(opt.lo)), bold(fmt(opt.hi)))


def sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


# ------------------------------------------------------------------ the block

def entry(opt) -> List[str]:
    O = _options()
    hint, words = TYPE_WORDS.get(opt.type, (opt.type.upper(), opt.type))
    if opt.type == O.CHOICE and opt.choices:
        hint = "|".join(opt.choices)
    tag = bold(opt.name) + " " + italic(hint)
    text = HOOK_WHEN.get(opt.name, opt.help) if opt.type == O.PLUGINS else opt.help
    lines = [".TP", tag, line(esc(sentence(text)))]
    facts = []
    if opt.aliases:
        facts.append("Aliases: " + ", ".join(bold(a) for a in opt.aliases) + ".")
    typeline = "Type: " + esc(words)
    if opt.type == O.CHOICE and opt.choices:
        typeline += " (" + ", ".join(bold(c) for c in opt.choices) + ")"
    facts.append(typeline + ".")
    if opt.type not in O.SPECIAL_TYPES:
        facts.append("Default: " + default_text(opt) + ".")
    if range_text(opt):
        facts.append(range_text(opt))
    facts.append("Used by: " + used_by(opt) + ".")
    if opt.order_sensitive:
        facts.append("Applies to the lines that follow it (see ORDER).")
    if not_acted_on(opt):
        facts.append(not_acted_on(opt))
    for f in facts:
        lines += [".br", line(f)]
    return lines


def render(options_module=None) -> str:
    """The generated block, markers included, ending with a newline."""
    O = options_module or _options()
    opts = list(O.OPTIONS)
    hooks = [o for o in opts if o.type == O.PLUGINS]
    plain = sorted((o for o in opts if o.type != O.PLUGINS), key=lambda o: o.name)
    out = [BEGIN,
           ".PP",
           "The table of %d options (%d settings and %d plugin hooks), "
           "in alphabetical order." % (len(opts), len(plain), len(hooks)),
           "Those said to be \\(lqnot acted on\\(rq are accepted so that v2 configurations "
           "load, but change nothing; setting one logs a warning naming the file and line "
           "(or the command line), and \\fBshow\\fR marks them.",
           ".SS Settings"]
    for o in plain:
        out += entry(o)
    out += [".SS Plugin hooks",
            "Each hook line names one plugin; repeating the line adds another one "
            "(they run in order).",
            "The value \\fBNone\\fR or \\fBoff\\fR empties the list, default plugins included."]
    for o in sorted(hooks, key=lambda o: o.name):
        out += entry(o)
    out.append(END)
    return "\n".join(out) + "\n"


def split_page(text: str) -> Tuple[str, str, str]:
    """(before, block, after) of a page; ValueError when the markers are missing."""
    start = text.find(BEGIN)
    stop = text.find(END)
    if start < 0 or stop < start:
        raise ValueError("markers not found (need the lines %r and %r)" % (BEGIN, END))
    stop += len(END)
    if text[stop:stop + 1] == "\n":
        stop += 1
    return text[:start], text[start:stop], text[stop:]


def splice(text: str, block: str) -> str:
    before, _, after = split_page(text)
    return before + block + after


def main(argv: Sequence[str] = ()) -> int:
    argv = list(argv)
    block = render()
    if "--print" in argv:
        sys.stdout.write(block)
        return 0
    try:
        with open(PAGE, encoding="utf-8") as f:
            text = f.read()
        new = splice(text, block)
    except (OSError, ValueError) as e:
        print("gen_sr_config: %s: %s" % (PAGE, e), file=sys.stderr)
        return 2
    if "--check" in argv:
        if new != text:
            print("gen_sr_config: %s: option reference out of date; run "
                  "scripts/gen_sr_config.py" % PAGE, file=sys.stderr)
            return 1
        return 0
    if new != text:
        tmp = PAGE + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, PAGE)
        print("gen_sr_config: %s updated" % PAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
