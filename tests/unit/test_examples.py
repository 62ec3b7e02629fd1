"""The packaged example configurations (sarra/examples/<component>/*.conf): `list` shows
them, `add` copies one, and each loads without a warning, an unknown option, an option
the component ignores, or a missing required one; URLs carry no password."""

import logging
import re
from pathlib import Path

import pytest

from sarra import config, paths
from sarra.commands import actions, consumer
from sarra.config import options as O

EXAMPLES = Path(actions.__file__).resolve().parents[1] / "examples"
ALL = sorted(p for p in EXAMPLES.glob("*/*.conf"))


def test_every_consuming_component_has_examples():
    comps = {p.parent.name for p in ALL}
    assert {"subscribe", "post", "watch", "sender", "sarra", "report", "poll"} <= comps
    assert comps <= set(paths.COMPONENTS), comps - set(paths.COMPONENTS)


@pytest.mark.parametrize("example", ALL, ids=lambda p: "%s/%s" % (p.parent.name, p.stem))
def test_example_loads_without_a_warning(example, home, caplog, capsys):
    comp, name = example.parent.name, example.stem
    assert actions.add(comp, name) == 0          # found among the packaged examples
    copied = home / ".config" / "sarra" / comp / example.name
    assert copied.read_text() == example.read_text()
    caplog.set_level(logging.DEBUG)
    cfg = config.load(comp, name)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warned, warned
    assert not cfg.unknown, cfg.unknown
    ignored = [o.name for o in O.OPTIONS if cfg.origin(o.name).startswith(str(copied))
               and not O.acted_on(o.name, comp)]
    assert not ignored, "%s: options not acted on: %s" % (example, ignored)
    if comp in ("subscribe", "sender", "sarra", "shovel", "winnow", "report"):
        assert consumer._missing_option(comp, cfg) is None
    lines = [ln for ln in example.read_text().splitlines() if not ln.startswith("#")]
    for url in re.findall(r"\b[a-z]+s?://\S+", "\n".join(lines)):
        assert not re.match(r"[a-z]+s?://[^/@]*:[^/@]*@", url), "password in " + url


def test_list_shows_the_examples(home, capsys):
    assert actions.list_action("subscribe") == 0
    out = capsys.readouterr().out
    assert "examples in " in out and "dd_mirror" in out and "cron_mirror" in out
    assert actions.list_action("sender") == 0
    assert "sftp_push" in capsys.readouterr().out
