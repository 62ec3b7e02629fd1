"""What every sr_* command shares: argv splitting, --help, error lines and exit codes.

Exit codes: 0 ok; 1 some items failed; 2 usage or configuration error; 3 broker
unreachable or authentication refused.
"""

import functools
import logging
import os
import select
import sys

from sarra.config import cli

OK, SOME_FAILED, USAGE, BROKER = 0, 1, 2, 3

CONSUMER_ACTIONS = ("foreground", "start", "stop", "restart", "reload", "status", "sanity",
                    "cleanup", "declare", "setup", "list", "edit", "add", "remove", "rename",
                    "enable", "disable", "show", "log")


class UsageError(Exception):
    exit_code = USAGE


def _stdout_gone() -> bool:
    """Standard output is a pipe whose reader has gone (``sr_subscribe --help | head``)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def pipe_safe(main):
    """A command whose reader stops reading (``| head``) ends quietly with status 1, like a
    Unix tool, instead of a traceback. Any other broken pipe is not ours to hide. Another
    OSError (a configuration or state directory that cannot be read or created) is one
    line naming the file, status 1, not a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BrokenPipeError:
            if not _stdout_gone():
                raise
            try:    # the interpreter's last flush of stdout must not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except OSError:
                pass
            return 1
        except OSError as e:        # a directory of ours we cannot read or create, ...
            where = f": {e.filename}" if e.filename else ""
            return fail(_program(), f"{e.strerror or e}{where}", SOME_FAILED)
    return wrapper


def _program() -> str:
    """This command's name (sr_subscribe, also when run as python -m ...subscribe)."""
    name = os.path.basename(sys.argv[0]) or "sarra"
    if name.endswith(".py"):
        name = name[:-3] if name.startswith("sr") else "sr_" + name[:-3]
    return name


def fail(program: str, text: str, code: int) -> int:
    print(f"{program}: {text}", file=sys.stderr)
    return code


def print_status(program: str, component: str, name: str, cfg=None, wanted: int = 1,
                 enabled: bool = True, error=None) -> int:
    """A component's ``status`` action: health.status_lines on stdout; the state's exit
    code (as `sr status`)."""
    from sarra.ops import health
    lines, code = health.status_lines(program, component, name, cfg, wanted, enabled, error)
    for line in lines:
        print(line)
    return code


def split_argv(argv, actions=CONSUMER_ACTIONS):
    """Separate -options (with their values) from positional words.

    Returns (cli_pairs, positionals, instance_no). A value-less boolean flag (followed by
    another -option or by the end) gets None, which the config reads as true.  An unknown
    option (one a plugin may declare) takes the next word unless it is one of ``actions``.
    """
    found, words = cli.split_argv(argv, actions, valued=("no",))
    pairs, no = [], None
    for key, value in found:
        if key == "no":
            try:
                no = int(value)
            except (TypeError, ValueError):
                raise UsageError(f"--no needs an instance number, got {value!r}") from None
        else:
            pairs.append((key, value))
    return pairs, words, no


def wants_version(argv) -> bool:
    """``--version`` among the words before ``--`` (which ends the options)."""
    words = list(argv or ())
    return "--version" in (words[:words.index("--")] if "--" in words else words)


def print_version(program: str) -> int:
    """'<command> <version>' on stdout (the name it was run as: sr_log, sr_police...)."""
    from sarra import __version__
    name = _program()
    if not (name == "sr" or name.startswith("sr_")):
        name = program
    print(f"{name} {__version__}")
    return OK


def wants_help(argv) -> bool:
    return any(a in ("-h", "--help", "-help", "help") for a in argv)


def print_help(program: str, component: str, synopsis: str, actions=(), extra: str = ""):
    """``extra``: the command's own options, in the same form, listed after the table's."""
    text = cli.render_help(component, actions)
    if text.startswith("usage:"):       # ours is the synopsis given (one usage line)
        text = text.split("\n", 1)[1].lstrip("\n")
    print(f"usage: {synopsis}\n")
    if actions:
        print(f"actions: {' '.join(actions)}\n")
    print(text.rstrip("\n"))
    if extra:
        print(extra.rstrip("\n"))
    print("  --version\n      print the command's name and version, and exit")
    print(f"\nSee man {program} for details.")


def cli_warnings(program: str) -> None:
    """Until the command sets up its own logging: what the sarra modules warn about (an
    unknown option, an instance that would not start...) goes to stderr as one line
    '<program>: <text>' (no second prefix when the text already starts with program)."""
    from sarra.ops import logs
    logger = logging.getLogger(logs.LOGGER_NAME)
    if any(getattr(h, "_sarra_handler", False) for h in logger.handlers):
        return

    class Stderr(logging.StreamHandler):     # whatever sys.stderr is at the time
        stream = property(lambda self: sys.stderr, lambda self, value: None)

    class Prefixed(logs.RedactingFormatter):
        def format(self, record):
            text = super().format(record)
            return text if text.startswith(program + " ") else f"{program}: {text}"

    handler = Stderr()
    handler._sarra_handler = True       # replaced by logs.setup_logging
    handler.setLevel(logging.WARNING)
    handler.addFilter(logs.RedactingFilter())
    handler.setFormatter(Prefixed("%(message)s"))
    logger.addHandler(handler)


def setup_cli_logging(level: str = "info"):
    from sarra.ops import logs
    return logs.setup_logging(component_for_log(), None, None, level=level or "info", foreground=True)


def component_for_log():
    prog = sys.argv[0].rsplit("/", 1)[-1]
    return prog[3:] if prog.startswith("sr_") else prog


def quiet_third_party():
    for name in ("amqp", "paramiko", "urllib3", "requests"):
        logging.getLogger(name).setLevel(logging.WARNING)


def stop_unloadable(program, component, name, error) -> int:
    """`stop` of a configuration that no longer loads (edited since its start): stop the
    instances its state records, with a warning; without any, the load error (exit 2)."""
    from sarra.config import parser as config
    from sarra.ops import instances
    cname = config.config_name(name)
    st = instances.status(component, cname)
    if not (st.running or st.expected):
        return fail(program, str(error), USAGE)
    fail(program, f"warning: {error} (acting on its recorded instances)", USAGE)
    n = instances.stop(component, cname)
    print(f"{program} {cname}: stopped {n} instance(s)")
    return OK


def version_or_help(argv, program, component, synopsis):
    """--version or --help of a command without actions (sr_post, sr_readers): the exit
    code once it is printed, else None."""
    if wants_version(argv):
        return print_version(program)
    if wants_help(argv):
        print_help(program, component, synopsis)
        return OK
    return None
