#!/usr/bin/env python3
"""Generate the OPTION INDEX section of each command's man page from the option table.

Issue 19, item 8: every option a command reads is described in that command's own page.
Each page (man/sr_subscribe.1, man/sr_sarra.8, ...) gets one generated section between two
roff comment lines (BEGIN and END below): every option the component uses
(``Option.used_by``), its aliases, what it does, its default for that component, and
whether that component ignores it (options.NOT_ACTED_ON) or refuses it
(config/v2refuse.py). The full entries stay in man/sr_config.7 (scripts/gen_sr_config.py).
A page without the markers gets the section before EXIT STATUS (else FILES, else SEE ALSO).

    scripts/gen_option_index.py            rewrite the section of every command page
    scripts/gen_option_index.py --check    exit 1 (and say which) if one is out of date

tests/unit/test_manpages_match.py checks that the pages are up to date.
"""

import importlib.util
import os
import sys
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAN = os.path.join(ROOT, "man")

BEGIN = '.\\" BEGIN GENERATED OPTION INDEX (scripts/gen_option_index.py; do not edit by hand)'
END = '.\\" END GENERATED OPTION INDEX'
#: sections the index goes before, in order of preference, when a page has no markers yet
BEFORE = (".SH EXIT STATUS", ".SH FILES", ".SH SEE ALSO")


def _gen():
    """scripts/gen_sr_config.py: the roff and value formatting of the option reference."""
    spec = importlib.util.spec_from_file_location(
        "gen_sr_config", os.path.join(HERE, "gen_sr_config.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _setup_commands() -> Dict[str, str]:
    """{script: module} of setup.py's COMMANDS table (read, not run)."""
    import ast
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "COMMANDS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _full_page(script: str) -> Optional[str]:
    """man/<script>.<n> when it is a whole page (not a .so stub), else None."""
    for n in sorted(os.listdir(MAN)) if os.path.isdir(MAN) else ():
        stem, dot, section = n.rpartition(".")
        if stem != script or not section.isdigit():
            continue
        with open(os.path.join(MAN, n), encoding="utf-8") as f:
            lines = [x for x in f.read().splitlines() if x.strip()]
        if not (len(lines) == 1 and lines[0].startswith(".so ")):
            return n
    return None


def component_pages() -> Dict[str, str]:
    """{component: page file name} for every component that has a command and a page; a
    page named after the component (sr_poll.8) counts before setup.py lists its command."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from sarra import paths
    commands = _setup_commands()
    comps = list(paths.COMPONENTS) + sorted(
        {m for m in commands.values() if m not in paths.COMPONENTS and m != "sr"} | {"poll"})
    out = {}
    for comp in comps:
        scripts = ["sr_" + comp] + sorted(s for s, m in commands.items() if m == comp)
        for s in scripts:
            page = _full_page(s)
            if page:
                out[comp] = page
                break
    return out


def render(component: str, gen=None) -> str:
    """The generated section of component's page, markers included."""
    gen = gen or _gen()
    O = gen._options()
    prog = "sr_" + component
    opts = sorted((o for o in O.OPTIONS if o.used_by(component)),
                  key=lambda o: (o.type == O.PLUGINS, o.name))
    out = [BEGIN, ".SH OPTION INDEX",
           "Every option %s reads, with its default here (%d in all); each is described in "
           "full, with its type and the other commands that read it, in" % (
               gen.bold(prog), len(opts)),
           ".BR sr_config (7).",
           "An option said to be ignored here is accepted so that v2 configurations load, "
           "and changes nothing; setting it logs a warning naming the file and line."]
    for o in opts:
        tag = gen.bold(o.name)
        if o.aliases:
            tag += " (" + ", ".join(gen.bold(a) for a in o.aliases) + ")"
        text = gen.HOOK_WHEN.get(o.name, o.help) if o.type == O.PLUGINS else o.help
        facts = [gen.esc(gen.sentence(text))]
        if o.type not in O.SPECIAL_TYPES:
            facts.append("Default: %s." % gen.bold(
                gen.format_default(o, o.default_for(component))))
        if not O.acted_on(o.name, component):
            why = O.NOT_ACTED_ON[o.name][1]
            facts.append("Ignored here: %s." % gen.esc(why))
        refused = gen.refused_text(o) if O.acted_on(o.name, component) else ""
        if refused:
            facts.append(refused)
        out += [".TP", tag, gen.line(" ".join(facts))]
    out.append(END)
    return "\n".join(out) + "\n"


def splice(text: str, block: str) -> str:
    """text with its generated section replaced by block (inserted when missing)."""
    start, stop = text.find(BEGIN), text.find(END)
    if start >= 0 and stop > start:
        stop += len(END)
        if text[stop:stop + 1] == "\n":
            stop += 1
        return text[:start] + block + text[stop:]
    for head in BEFORE:
        at = text.find("\n" + head + "\n")
        if at >= 0:
            return text[:at + 1] + block + text[at + 1:]
    return text.rstrip("\n") + "\n" + block


def stale_pages(write: bool = False) -> List[str]:
    """Pages whose section is out of date (rewritten when write)."""
    gen = _gen()
    stale = []
    for comp, page in sorted(component_pages().items()):
        path = os.path.join(MAN, page)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = splice(text, render(comp, gen))
        if new == text:
            continue
        stale.append(page)
        if write:
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(new)
            os.replace(tmp, path)
    return stale


def main(argv: Sequence[str] = ()) -> int:
    check = "--check" in argv
    stale = stale_pages(write=not check)
    if check and stale:
        print("gen_option_index: out of date: %s; run scripts/gen_option_index.py"
              % ", ".join("man/" + p for p in stale), file=sys.stderr)
        return 1
    for p in stale:
        print("gen_option_index: man/%s updated" % p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
