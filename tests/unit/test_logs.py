"""sarra.ops.logs: line format, destinations, rotation set-up, levels, redaction, file mode."""

import logging
import logging.handlers
import os
import re

import pytest

from sarra.ops import logs

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(?P<level>[A-Z]+)\] "
                  r"(?P<who>\S+) (?P<text>.*)$")


def ours(log):
    """Our handlers (pytest attaches its own capture handlers to non-propagating loggers)."""
    return [h for h in log.handlers if getattr(h, "_sarra_handler", False)]


@pytest.fixture(autouse=True)
def reset_logger():
    yield
    lg = logging.getLogger(logs.LOGGER_NAME)
    for h in ours(lg):
        lg.removeHandler(h)
        h.close()
    lg.propagate = True


def test_foreground_line_format_on_stderr(capsys):
    log = logs.setup_logging("subscribe", "dd_swob", 3, level="info", foreground=True)
    assert log.name == "sarra"
    logging.getLogger("sarra.flow").info("downloaded %s", "x.txt")
    logging.getLogger("sarra.flow").debug("not shown")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    m = LINE.match(err[0])
    assert m, err[0]
    assert m["level"] == "INFO" and m["who"] == "sr_subscribe/dd_swob/03"
    assert m["text"] == "downloaded x.txt"


def test_one_shot_command_has_no_instance_part(capsys):
    logs.setup_logging("sr_post", None, None, foreground=True)
    logging.getLogger("sarra").warning("posted")
    m = LINE.match(capsys.readouterr().err.strip())
    assert m and m["who"] == "sr_post/-" and m["level"] == "WARNING"
    logs.setup_logging("post", "my_post", None, foreground=True)
    logging.getLogger("sarra").error("bad")
    m = LINE.match(capsys.readouterr().err.strip())
    assert m and m["who"] == "sr_post/my_post"


def test_setup_twice_does_not_duplicate(capsys):
    logs.setup_logging("shovel", "a", 1, foreground=True)
    logs.setup_logging("shovel", "a", 1, foreground=True, level="debug")
    logging.getLogger("sarra.x").debug("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.parametrize("name,shown", [
    ("debug", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]),
    ("info", ["INFO", "WARNING", "ERROR", "CRITICAL"]),
    ("warning", ["WARNING", "ERROR", "CRITICAL"]),
    ("error", ["ERROR", "CRITICAL"]),
    ("critical", ["CRITICAL"]),
    ("none", []),
])
def test_levels(capsys, name, shown):
    logs.setup_logging("sender", "s", 1, level=name, foreground=True)
    lg = logging.getLogger("sarra.t")
    for f in (lg.debug, lg.info, lg.warning, lg.error, lg.critical):
        f("m")
    got = [LINE.match(x)["level"] for x in capsys.readouterr().err.splitlines()]
    assert got == shown


def test_bad_level():
    with pytest.raises(ValueError, match="loglevel"):
        logs.setup_logging("sender", "s", 1, level="loud", foreground=True)


def test_background_file_rotation_and_mode(home):
    old = os.umask(0o022)
    try:
        log = logs.setup_logging("subscribe", "dd_swob", 2, logdays=7)
    finally:
        os.umask(old)
    path = home / ".cache" / "sarra" / "log" / "sr_subscribe_dd_swob_02.log"
    assert logs.log_file("subscribe", "dd_swob", 2) == path
    (h,) = ours(log)
    assert isinstance(h, logging.handlers.TimedRotatingFileHandler)
    assert h.when == "MIDNIGHT" and h.backupCount == 7
    assert h.baseFilename == str(path)
    logging.getLogger("sarra.flow").info("hello")
    h.flush()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    m = LINE.match(path.read_text().strip())
    assert m and m["who"] == "sr_subscribe/dd_swob/02" and m["text"] == "hello"
    # a rotation keeps the old file and creates the new one 0600 as well
    os.umask(0o022)
    try:
        h.doRollover()
    finally:
        os.umask(old)
    logging.getLogger("sarra").info("after")
    h.flush()
    rotated = [p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")]
    assert len(rotated) == 1 and "hello" in rotated[0].read_text()
    assert path.read_text().strip().endswith("after")
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_custom_log_mode(home):
    log = logs.setup_logging("poll", "p", 1, log_mode=0o640)
    logging.getLogger("sarra").info("x")
    assert oct(os.stat(ours(log)[0].baseFilename).st_mode & 0o777) == "0o640"


def test_background_needs_instance(home):
    with pytest.raises(ValueError):
        logs.setup_logging("poll", "p", None)


@pytest.mark.parametrize("text,expected", [
    ("amqps://bob:s3cret@pump.example.com/", "amqps://bob:***@pump.example.com/"),
    ("get sftp://u:p@ss@host:22/x failed", "get sftp://u:***@host:22/x failed"),
    ("a ftp://x:1@h1 b http://y:2@h2/z", "a ftp://x:***@h1 b http://y:***@h2/z"),
    ("amqp://:pw@h/", "amqp://:***@h/"),
    ("http://host:8080/path user@example.com", "http://host:8080/path user@example.com"),
    ("no url here: a:b@c", "no url here: a:b@c"),
])
def test_redact(text, expected):
    assert logs.redact(text) == expected


def test_records_are_redacted(capsys):
    logs.setup_logging("sarra", "pump", 1, foreground=True)
    lg = logging.getLogger("sarra.broker")
    lg.info("connecting to %s", "amqp://feeder:TopSecret@localhost/")
    lg.info("direct amqp://feeder:TopSecret2@localhost/")
    try:
        raise OSError("cannot reach https://me:TopSecret3@h/x")
    except OSError:
        lg.exception("failed")
    err = capsys.readouterr().err
    assert "TopSecret" not in err
    assert err.count("feeder:***@localhost") == 2 and "me:***@h/x" in err
