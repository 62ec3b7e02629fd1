"""Passwords never reach a command line (issue 16, item 7).

A command that starts a background process with options given on its own command line
(``sr_subscribe --broker amqp://u:secret@host/ start cfg``) gives the child every word
with the password removed (what ``ps`` shows), and the whole words in an environment
variable of the child only (/proc/<pid>/environ: readable by the same user and root).
The child puts them back first thing (``restore``) and removes the variable, so that
nothing it starts inherits it.
"""

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from sarra.redaction import hide_passwords


ENV = "SARRA_SECRET_ARGS"


def visible(word: str) -> str:
    """The word with the password of every URL in it removed (``amqp://u@h/``)."""
    return hide_passwords(word, mask=None)


def split(argv: Sequence[str], env: Optional[Dict[str, str]] = None
          ) -> Tuple[List[str], Optional[Dict[str, str]]]:
    """(argv for the command line, environment for the child).

    The environment is env (None: a copy of ours) plus ENV when a word held a password;
    when none did it is env unchanged (None stays None: the child inherits ours)."""
    shown, hidden = [], []
    for word in argv:
        word = str(word)
        v = visible(word)
        shown.append(v)
        if v != word:
            hidden.append([v, word])
    if not hidden:
        return shown, env
    out = dict(os.environ if env is None else env)
    out[ENV] = json.dumps(hidden)
    return shown, out


def restore(argv: Sequence[str], environ=None) -> List[str]:
    """argv with the words split() hid put back; ENV is removed from environ (os.environ).
    A word is put back only where the visible form is found, once each."""
    environ = os.environ if environ is None else environ
    raw = environ.pop(ENV, None)
    argv = list(argv)
    if not raw:
        return argv
    try:
        pairs = json.loads(raw)
    except ValueError:
        return argv
    used = set()
    for pair in pairs if isinstance(pairs, list) else ():
        if not (isinstance(pair, list) and len(pair) == 2 and
                all(isinstance(x, str) for x in pair)):
            continue
        shown, word = pair
        if visible(word) != shown:         # only ever a password put back, nothing else
            continue
        for i, a in enumerate(argv):
            if i not in used and a == shown:
                argv[i] = word
                used.add(i)
                break
    return argv
