"""Variants of issue 16's attacks found by a second look (red team): each is refused."""

import os

from sarra import config, components, download, message
from sarra.flow import Flow
from sarra.work import Outcome, Work
from tests.unit.test_flow import FakeReporter


def _flow(directory, extra=()):
    cfg = config.load("subscribe", None, [("broker", "amqp://u:p@localhost/"),
                                          ("directory", directory), ("mirror", "on")]
                      + list(extra))
    flow = Flow(cfg, components.preset("subscribe"))
    flow.reporter = FakeReporter()
    return flow


def _run(flow, relpath, headers):
    w = Work(message.make_post("20240101000000.0", "http://h/", relpath, headers))
    try:
        download.destination(flow, w)
        download.download(flow, w)
    except Outcome as e:
        return e.code, e.text
    return w.code, w.text


def test_source_header_with_a_path_cannot_move_the_directory(tmp_path):
    """directory .../${SOURCE} (the guide's form) and an upstream's source '../../victim':
    a removal post then deleted a file outside the tree."""
    victim = tmp_path / "victim" / "a"
    victim.mkdir(parents=True)
    (victim / "f").write_text("keep me")
    flow = _flow(str(tmp_path / "tree" / "${SOURCE}"))
    for source in ("../victim", "..", "x/../../victim"):
        code, text = _run(flow, "/a/f", {"sum": "R," + "0" * 128, "source": source})
        assert code == 403 and "not a plain name" in text, (source, code, text)
    assert (victim / "f").read_text() == "keep me"
    assert not os.path.exists(tmp_path / "tree")
    # a plain source name still works
    (tmp_path / "tree" / "alice" / "a").mkdir(parents=True)
    (tmp_path / "tree" / "alice" / "a" / "f").write_text("x")
    code, _ = _run(flow, "/a/f", {"sum": "R," + "0" * 128, "source": "alice"})
    assert code == 201 and not (tmp_path / "tree" / "alice" / "a" / "f").exists()
