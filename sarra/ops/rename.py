"""Moving a configuration's state and logs to a new name (the ``rename`` action).

The state directory ``<cache>/[<host>/]<component>/<old>/`` becomes ``.../<new>/`` and the
files in it that carry the name are renamed (pid, state, options, stats, retry queue,
the saved queue name, sr_watch's journal), so the renamed configuration finds its retry
queue, its duplicate cache and its queue on the broker (the queue keeps its name and its
messages); the instance logs ``sr_<component>_<old>_NN.log[.<date>]`` become
``sr_<component>_<new>_NN.log[...]``.  Running instances must be stopped first: they hold
their pid files and logs under the old name (the caller checks, see commands/actions.py).
"""

import os
import re
from pathlib import Path
from typing import List, Optional

from sarra import paths


class RenameError(Exception):
    """One line: what cannot be moved, and where."""


def _name_in_file(prog: str, old: str, new: str):
    """A function renaming one state file name: the configuration's name where it follows
    the program's (``sr_subscribe_<old>_01.pid``, ``sr_subscribe.<old>.user.qname``,
    ``.sr_subscribe_<old>.lock``); None when the name does not carry it."""
    pattern = re.compile(r"^(\.?%s[._])%s(?=[._])" % (re.escape(prog), re.escape(old)))

    def rename(name: str) -> Optional[str]:
        m = pattern.match(name)
        return None if m is None else m.group(1) + new + name[m.end():]
    return rename


def _log_name(prog: str, old: str, new: str):
    pattern = re.compile(r"^%s_%s(_\d+\.log(\..*)?)$" % (re.escape(prog), re.escape(old)))

    def rename(name: str) -> Optional[str]:
        m = pattern.match(name)
        return None if m is None else f"{prog}_{new}{m.group(1)}"
    return rename


def planned(component: str, old: str, new: str, host=paths.SETTING) -> List[tuple]:
    """[(source, destination)] of every move, state directory first; RenameError when a
    destination exists already."""
    prog = paths.program_name(component)
    moves = []
    src = Path(paths.state_dir(component, old, host, create=False))
    dst = Path(paths.state_dir(component, new, host, create=False))
    if src.is_dir():
        if os.path.lexists(dst):
            raise RenameError(f"state directory {dst} exists already (left by an earlier "
                              f"configuration {new!r}: remove it first)")
        moves.append((src, dst))
        rename = _name_in_file(prog, old, new)
        for entry in sorted(os.listdir(src)):
            to = rename(entry)
            if to is not None:
                moves.append((dst / entry, dst / to))
    logdir = Path(paths.log_dir(host, create=False))
    rename = _log_name(prog, old, new)
    try:
        entries = sorted(os.listdir(logdir))
    except OSError:
        entries = []
    for entry in entries:
        to = rename(entry)
        if to is not None:
            if os.path.lexists(logdir / to):
                raise RenameError(f"log {logdir / to} exists already (remove it first)")
            moves.append((logdir / entry, logdir / to))
    return moves


def move(component: str, old: str, new: str, host=paths.SETTING) -> List[tuple]:
    """Move the state and logs of configuration old to new; return the moves made.  An
    OSError stops at the failing move (RenameError naming it); what was moved stays."""
    moves = planned(component, old, new, host)
    done = []
    for a, b in moves:
        try:
            os.rename(a, b)
        except OSError as e:
            raise RenameError(f"cannot rename {a} to {b}: {e.strerror or e}") from None
        done.append((a, b))
    return done
