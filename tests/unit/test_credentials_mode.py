"""credentials.conf forced to 0600 (issue 19, item 2): a file of the user running the
command that others may read is set to 0600 with one warning naming it; refused (one line:
the file, what to run) only when that cannot be done. No password in any of it."""

import logging
import os

import pytest

from sarra import paths
from sarra.config import credentials
from sarra.config.credentials import Credentials, CredentialsError

SECRET = "Zq8-not-in-logs"
TEXT = "amqp://alice:%s@localhost/\nftp://ops:%s@ftp.example.org active\n" % (SECRET, SECRET)


def write_creds(mode):
    path = paths.credentials_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(TEXT)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o700 | 0o044])
def test_readable_by_others_is_set_to_0600_with_one_warning(home, caplog, mode):
    path = write_creds(mode)
    with caplog.at_level(logging.WARNING, logger="sarra"):
        creds = Credentials.load()
        assert creds.password_for("amqp://alice@localhost/") == SECRET
        Credentials.load()                  # again: already 0600, nothing more to say
    assert os.stat(path).st_mode & 0o7777 == 0o600
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert path in warnings[0] and "%04o" % mode in warnings[0] and "0600" in warnings[0]
    assert SECRET not in caplog.text


def test_0600_and_0400_say_nothing(home, caplog):
    for mode in (0o600, 0o400):
        path = write_creds(mode)
        with caplog.at_level(logging.WARNING, logger="sarra"):
            assert len(Credentials.load().entries) == 2
        assert os.stat(path).st_mode & 0o777 == mode
    assert not caplog.records


def test_another_users_file_is_refused(home, monkeypatch):
    path = write_creds(0o644)
    monkeypatch.setattr(credentials.os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(CredentialsError) as e:
        Credentials.load()
    text = str(e.value)
    assert text.startswith(path + ": ") and text.endswith("chmod 600 " + path)
    assert "owned by uid" in text and SECRET not in text and "\n" not in text
    assert e.value.exit_code == 2
    assert os.stat(path).st_mode & 0o777 == 0o644          # not ours to change


def test_refused_when_the_mode_cannot_be_changed(home, monkeypatch):
    path = write_creds(0o640)

    def refuse(fd, mode):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(credentials.os, "fchmod", refuse)
    with pytest.raises(CredentialsError) as e:
        Credentials.load()
    text = str(e.value)
    assert text.startswith(path + ": ") and "Operation not permitted" in text
    assert text.endswith("chmod 600 " + path) and SECRET not in text
