"""Issue 18, item 4: one of each concept; a test on each remaining implementation.

(The URL redaction has its own module: test_redaction.py.)
"""
import ast
from pathlib import Path

import pytest

from sarra.config.credentials import Credentials, CredentialsError

ROOT = Path(__file__).resolve().parents[2]

CREDS = """\
amqp://feeder:pw@localhost:5672/
sftp://bob:sftppw@data.example.org
amqps://alice:S3cr%3At@pump.example.org/
"""


# ------------------------------------------------------------------ the password lookup
@pytest.mark.parametrize("url, password", [
    ("amqp://feeder@localhost/", "pw"),                   # from the matching entry
    ("amqp://feeder:inurl@localhost/", "inurl"),          # written in the URL: it wins
    ("amqps://alice@pump.example.org/", "S3cr:t"),        # %-decoded
    ("sftp://bob@data.example.org/x", "sftppw"),
    ("sftp://carol@data.example.org/x", None),            # no entry for this user
    ("amqp://localhost/", "anonymous"),                    # AMQP without a user
])
def test_password_for(url, password):
    assert Credentials(Credentials.parse(CREDS)).password_for(url) == password


def test_password_for_a_non_url_says_so_without_the_secret():
    with pytest.raises(CredentialsError) as e:
        Credentials(Credentials.parse(CREDS)).password_for("amqp://u:hunter2@h:99999999/")
    assert "hunter2" not in str(e.value)


def test_one_password_lookup():
    """Nobody but credentials.py turns a Credential into a password for a login."""
    bad = []
    for path in sorted((ROOT / "sarra").rglob("*.py")):
        if path.name == "credentials.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr == "password"
                    and isinstance(node.value, ast.Call)
                    and ast.unparse(node.value.func).endswith(".lookup")):
                bad.append("%s:%d" % (path.relative_to(ROOT), node.lineno))
            if (isinstance(node, ast.IfExp) and ast.unparse(node.body).endswith(".password")):
                bad.append("%s:%d" % (path.relative_to(ROOT), node.lineno))
    assert not bad, "password lookups of their own (use Credentials.password_for): %s" % bad


# ------------------------------------------------------------------ the list of components
def test_one_list_of_components():
    """paths.COMPONENTS is the one list: setup.py installs exactly sr_<each> (plus the 2016
    names and sr), each has its command module, the supervisor runs all but sr_post, and
    the test suite's table of commands is setup.py's."""
    from sarra import paths
    from sarra.flow import presets
    from sarra.ops import supervisor
    from tests.conftest import COMMANDS, setup_commands
    assert COMMANDS == setup_commands()
    want = {paths.program_name(c): c for c in paths.COMPONENTS}
    want.update({"sr_" + old: new for old, new in paths.COMPONENT_ALIASES.items()})
    want["sr"] = "sr"
    assert COMMANDS == want
    for module in set(COMMANDS.values()):
        assert (ROOT / "sarra" / "commands" / (module + ".py")).is_file(), module
    assert supervisor.RUNNABLE == tuple(c for c in paths.COMPONENTS if c != "post")
    assert set(presets.PRESETS) <= set(paths.COMPONENTS)
