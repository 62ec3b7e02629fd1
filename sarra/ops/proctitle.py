"""The command's name in the process title (issue 17, item 2).

A background instance is titled ``sr_subscribe <config> <NN> [its options]`` (the
supervisor ``sr_supervisor``), so that ``ps``, ``pgrep sr_subscribe`` (the kernel's
short name is set too) and monitoring find it.  The title is made with setproctitle
(PyPI); without it the process runs under its ``python -m ...`` command line.

The title holds no password: options are shown as ``secretargs.visible`` leaves them.
/proc/<pid>/environ stays readable (SPT_NOENV): procident finds its mark there.
``parse`` reads a title back, for instances.cmdline_matches.
"""

import os
import re
import sys
from typing import Optional, Sequence, Tuple

from sarra import paths
from sarra.ops import secretargs

_NUMBER = re.compile(r"^\d{2,}$")


def title(program: str, config: Optional[str] = None, n: Optional[int] = None,
          extra: Sequence[str] = ()) -> str:
    words = [program]
    if config:
        words.append(config)
    if n is not None:
        words.append(f"{int(n):02d}")
    words += [secretargs.visible(w) for w in extra]
    return " ".join(" ".join(words).split())       # one line, no control characters


def set_title(text: str) -> bool:
    """Set the process title (and the kernel's short name); False without setproctitle."""
    added = "SPT_NOENV" not in os.environ
    os.environ["SPT_NOENV"] = "1"      # never write over the environment (procident)
    try:
        import setproctitle
        setproctitle.setproctitle(text)
        return True
    except Exception:                  # ImportError, or a platform it cannot handle
        return False
    finally:
        if added:
            os.environ.pop("SPT_NOENV", None)


def instance_extra(argv: Sequence[str], config: str) -> list:
    """The instance's own options: argv without --no N, the action and the config."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--no":
            skip = True
            continue
        if a.startswith("--no="):
            continue
        if not a.startswith("-") and (a in ("foreground", "start") or a == config
                                      or os.path.basename(a) in (f"{config}.conf",)):
            continue
        out.append(a)
    return out


def for_instance(component: str, config: str, n: int, program: Optional[str] = None
                 ) -> bool:
    """Title this background instance: ``<program> <config> <NN> [options]``."""
    prog = program or paths.program_name(component)
    return set_title(title(prog, config, n, instance_extra(sys.argv[1:], config)))


def parse(cmdline: Sequence[str]) -> Optional[Tuple[str, str, int]]:
    """(component, config, instance number) of a title made by for_instance, else None."""
    words = " ".join(a for a in cmdline if a).split()
    if len(words) < 3 or not words[0].startswith("sr_"):
        return None
    for i in range(2, len(words)):
        if _NUMBER.match(words[i]):
            return paths.canonical_component(words[0]), " ".join(words[1:i]), int(words[i])
    return None
