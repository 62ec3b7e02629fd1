"""Logging set-up shared by every sr_* command (components.md §1.2, config.md §1).

One logger, ``sarra`` (every module logs to a child of it).  A line looks like::

    2016-01-15 18:05:59,123 [INFO] sr_subscribe/dd_swob/01 downloaded x.txt

Foreground runs log to stderr; background instances log to
``<log_dir>/sr_<component>_<config>_<NN>.log``, rotated at midnight, ``logdays`` old files
kept, created with mode ``log_mode`` (0600).  Every line goes through a redaction step that
masks the password of any ``scheme://user:password@`` it contains, and has its control
characters escaped (a newline or an escape sequence in a message field cannot forge a line).

logging.handlers and pathlib are imported when first needed (background logs): a
foreground command such as sr_post starts faster without them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from pathlib import Path

from sarra import paths
from sarra.redaction import hide_passwords

LOGGER_NAME = "sarra"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}

LINE_FORMAT = "%(asctime)s [%(levelname)s] %(sarra_who)s %(message)s"


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(c: str) -> str:
    n = ord(c)
    return _NAMED.get(c) or ("\\x%02x" % n if n < 0x100 else "\\u%04x" % n)


def one_line(text: str) -> str:
    """text with every character str.isprintable() refuses escaped (\\n, \\x1b, \\u2028,
    ...): whatever a message field holds (a name with a newline, a terminal escape
    sequence), it cannot start a forged log line nor drive the terminal showing the log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def redact(text: str) -> str:
    """Mask the password part of every URL in text (scheme://user:***@host)."""
    return hide_passwords(text)


def program_name(component: str) -> str:
    """'subscribe' or 'sr_subscribe' -> 'sr_subscribe' (2016 names mapped: log -> report)."""
    return paths.program_name(component)


def component_name(component: str) -> str:
    """'sr_subscribe' or 'subscribe' -> 'subscribe'."""
    return paths.canonical_component(component)


def parse_level(level) -> int:
    """Level name (debug|info|warning|error|critical|none) or int -> logging level."""
    if isinstance(level, int):
        return level
    try:
        return LEVELS[str(level).strip().lower()]
    except KeyError:
        raise ValueError(f"unknown loglevel {level!r} (use one of debug info warning error "
                         f"critical none)") from None


def log_file(component: str, config: str, instance: int,
             host: Optional[str] = paths.SETTING) -> Path:
    """Path of the log of one background instance (host: the `statehost` directory)."""
    from pathlib import Path
    name = f"{program_name(component)}_{config}_{int(instance):02d}.log"
    return Path(paths.log_dir(host)) / name


class RedactingFilter(logging.Filter):
    """Rewrite a record's message so that no URL password survives (defence in depth),
    on one line whatever its arguments hold (one_line; a traceback, exc_info, still
    follows on lines of its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # bad format args: let the handler report it as usual
            return True
        clean = one_line(redact(text))
        if clean != text or record.args:
            record.msg, record.args = clean, None
        record.sarra_redacted = True    # RedactingFormatter need not redact the message again
        return True


class _WhoFilter(logging.Filter):
    """Add the '<program>/<config>/<NN>' field to every record."""

    def __init__(self, who: str):
        super().__init__()
        self.who = who

    def filter(self, record: logging.LogRecord) -> bool:
        record.sarra_who = self.who
        return True


class RedactingFormatter(logging.Formatter):
    """Formatter whose whole output (tracebacks included) is redacted.

    A message RedactingFilter already cleaned is not scanned a second time: only a line
    with a traceback or stack (or a record the filter did not see) is redacted whole."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.exc_text or record.stack_info or not getattr(record, "sarra_redacted", False):
            text = redact(text)
        return text

    def formatException(self, ei) -> str:
        return _quote_traceback(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _quote_traceback(super().formatStack(stack_info))


def _quote_traceback(text: str) -> str:
    """A traceback keeps its lines, but an exception's text (which may hold a message
    field) cannot forge a log line: control characters are escaped in each line, and a
    line that starts with a digit (as a log line's date does; no traceback line does) is
    indented."""
    return "\n".join(("    " if line[:1].isdigit() else "") + one_line(line)
                     for line in text.split("\n"))


_ROTATING = None


def _mode_rotating_handler(filename, file_mode: int, **kw) -> logging.Handler:
    """Midnight rotation; every file it creates gets the given mode (class made on first use)."""
    global _ROTATING
    if _ROTATING is None:
        import logging.handlers

        class _ModeRotatingHandler(logging.handlers.TimedRotatingFileHandler):
            def __init__(self, filename, file_mode: int, **kw):
                self._file_mode = file_mode
                super().__init__(filename, **kw)

            def _open(self):
                mode = self._file_mode

                def opener(path, flags):
                    return os.open(path, flags, mode)

                stream = open(self.baseFilename, self.mode, encoding=self.encoding,
                              errors=self.errors, opener=opener)
                try:
                    os.chmod(self.baseFilename, mode)
                except OSError:
                    pass
                return stream

        _ROTATING = _ModeRotatingHandler
    return _ROTATING(filename, file_mode, **kw)


def who(component: str, config: Optional[str], instance: Optional[int]) -> str:
    """The '<program>/<config>[/<NN>]' part of a log line."""
    text = f"{program_name(component)}/{config or '-'}"
    if instance is not None:
        text += f"/{int(instance):02d}"
    return text


def setup_logging(component: str, config: Optional[str], instance: Optional[int],
                  level="info", foreground: bool = False, logdays: int = 5,
                  log_mode: int = 0o600, host: Optional[str] = paths.SETTING,
                  rotate_every: float = 86400.0) -> logging.Logger:
    """Configure and return the 'sarra' logger; replaces a previous set-up.

    foreground: log to stderr.  Otherwise ``instance`` is required and the log goes to
    log_file(component, config, instance, host) (directory created as needed).
    """
    path = None
    if not foreground:
        if instance is None:
            raise ValueError("background logging needs an instance number")
        path = log_file(component, config or "-", instance, host)
    return _install(who(component, config, instance), path, level, logdays, log_mode,
                    rotate_every)


def named_log_file(name: str, host: Optional[str] = paths.SETTING) -> Path:
    """Log of a process that is no instance, e.g. 'sr_supervisor' -> <log_dir>/sr_supervisor.log."""
    from pathlib import Path
    return Path(paths.log_dir(host)) / f"{name}.log"


def setup_named_logging(name: str, path: Optional[Path] = None, level="info",
                        logdays: int = 5, log_mode: int = 0o600) -> logging.Logger:
    """Like setup_logging for a process that is no instance (``sr``, the supervisor):
    lines tagged ``name``, to ``path`` (rotated like instance logs) or to stderr when
    path is None."""
    return _install(name, path, level, logdays, log_mode)


def from_config(cfg) -> dict:
    """setup_logging's keyword arguments that come from a configuration: logdays, chmod_log
    (the log files' mode) and logrotate_interval."""
    return dict(logdays=cfg.logdays, log_mode=cfg.chmod_log or 0o600,
                rotate_every=cfg.logrotate_interval or 86400.0)


def rotation(every: float):
    """(when, interval) of a TimedRotatingFileHandler rotating every ``every`` seconds:
    whole days at midnight (v2's default: 1), else hours, minutes or seconds."""
    every = max(1, int(every))
    for when, unit in (("midnight", 86400), ("H", 3600), ("M", 60)):
        if every % unit == 0:
            return when, every // unit
    return "S", every


def _install(who_text: str, path: Optional[Path], level, logdays: int,
             log_mode: int, rotate_every: float = 86400.0) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if getattr(h, "_sarra_handler", False):
            logger.removeHandler(h)
            h.close()
    if path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        when, interval = rotation(rotate_every)
        handler = _mode_rotating_handler(str(path), int(log_mode), when=when, interval=interval,
                                         backupCount=max(0, int(logdays)), encoding="utf-8")
    handler._sarra_handler = True
    handler.addFilter(_WhoFilter(who_text))
    handler.addFilter(RedactingFilter())
    handler.setFormatter(RedactingFormatter(LINE_FORMAT))
    # LINE_FORMAT names no thread or process: a record need not look them up (a getpid()
    # and a thread lookup per line, for a line or two per file moved)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logger.addHandler(handler)
    logger.setLevel(parse_level(level))
    logger.propagate = False
    return logger
