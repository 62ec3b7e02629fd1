"""How a configuration line splits into words: the v2 rules (config.md §2).

* A line whose first non-blank character is ``#`` is a comment; blank lines are skipped.
* Words are separated by runs of blanks (spaces, tabs); leading and trailing blanks go.
* A word that ends with a backslash is joined to the next word by one space, the
  backslash dropped: ``path sub\\ dir/with\\ space.txt`` is the one path
  ``sub dir/with space.txt``.  A backslash anywhere else is an ordinary character
  (regular expressions keep theirs: ``reject .*\\.tmp$``), and so is one ending the line.
* No quotes: ``"`` and ``'`` are ordinary characters.  No line continuation.
* ``#`` inside a value is an ordinary character (``accept .*#.*``, ``subtopic #``); a
  later word that starts with ``#`` begins a trailing comment (``expire 1d # a day``),
  which v2 ignored as it ignored every word its option did not read.

The command line has no such rules (the shell did the quoting): its values are taken as
they are. Nothing here reads files, prints or logs.
"""

from typing import List, Optional, Tuple


def is_comment(line: str) -> bool:
    """True for a blank line or a line whose first non-blank character is '#'."""
    text = line.strip()
    return not text or text.startswith("#")


def split_words(line: str) -> List[str]:
    """The words of one line by the v2 rules (see the module text)."""
    words: List[str] = []
    joining = False
    for w in line.split():
        if joining:
            words[-1] = words[-1][:-1] + " " + w
        else:
            words.append(w)
        joining = words[-1].endswith("\\")
    return words


def drop_comment(words: List[str]) -> List[str]:
    """The words before a trailing comment: the first word after `words[0]` (the option's
    first value word, which may itself be '#': `subtopic #`) that starts with '#'."""
    for i in range(1, len(words)):
        if words[i].startswith("#"):
            return words[:i]
    return words


def option_line(line: str) -> Optional[Tuple[str, List[str]]]:
    """(keyword, value words) of a configuration line, or None for a comment or blank
    line. The value words keep no trailing comment; the keyword no dashes (v2 reads a
    line `--mirror on` copied from a command line as `mirror on`)."""
    if is_comment(line):
        return None
    words = split_words(line)
    return words[0].strip("-") or words[0], drop_comment(words[1:])
