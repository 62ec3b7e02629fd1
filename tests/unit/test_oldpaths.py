"""Import paths from before issue 18's subpackages keep working (plugins written before)."""
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sarra import _oldpaths, plugin

ROOT = Path(__file__).resolve().parents[2]

# The three old modules whose name a package took: the package hands on their names.
PACKAGE_HANDS_ON = {
    "sarra.config": ("sarra.config.parser", "Config"),
    "sarra.broker": ("sarra.broker.client", "Broker"),
    "sarra.flow": ("sarra.flow.engine", "Flow"),
}


@pytest.mark.parametrize("old, new", sorted(_oldpaths.OLD_PATHS.items()))
def test_old_path_is_the_new_module(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    parent, _, leaf = old.rpartition(".")
    assert getattr(importlib.import_module(parent), leaf) is importlib.import_module(new)


@pytest.mark.parametrize("old", sorted(PACKAGE_HANDS_ON))
def test_package_hands_on_the_old_module_names(old):
    new, name = PACKAGE_HANDS_ON[old]
    assert getattr(importlib.import_module(old), name) is \
        getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        getattr(importlib.import_module(old), "no_such_name_here")


def test_foundation_stays_where_it_was():
    for name in ("sarra.message", "sarra.plugin", "sarra.checksum", "sarra.paths",
                 "sarra.transfer", "sarra.plugins"):
        mod = importlib.import_module(name)
        assert Path(mod.__file__).resolve().is_relative_to(ROOT / "sarra")
        assert mod.__name__ == name


def test_a_plugin_written_before_loads_in_a_fresh_interpreter(tmp_path):
    """A v2-era plugin file importing the old flat paths, loaded as sarra loads plugins."""
    (tmp_path / "old_style.py").write_text(textwrap.dedent("""\
        import sarra.send
        from sarra import instances, reportguard
        from sarra.config import Config
        from sarra.broker import Broker
        from sarra.flow import Flow
        from sarra.routing import *   # noqa: F401,F403

        def on_message(parent):
            return all((sarra.send, instances, reportguard, Config, Broker, Flow))
        """))
    code = textwrap.dedent(f"""\
        from sarra import plugin
        f = plugin.load("old_style", "on_message", [{str(tmp_path)!r}])
        assert f(None) is True
        import sarra.send, sarra.flow.send
        assert sarra.send is sarra.flow.send
        print("ok")
        """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_module_colon_function_names_keep_working():
    """`on_message sarra.<old module>:function` in a configuration written before."""
    f = plugin.load("sarra.routing:on_message", "on_message")
    assert f is importlib.import_module("sarra.flow.routing").on_message
