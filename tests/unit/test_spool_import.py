"""spool.wrap, which every consuming flow with a post broker calls, reads same_broker from
batchtx.py where it lives: it never loads sr_winnow's module (sarra/flow/winnow.py)."""

import subprocess
import sys
import textwrap


def test_wrap_does_not_load_winnow(tmp_path):
    code = textwrap.dedent("""
        import sys, types
        from sarra.flow import spool
        src = types.SimpleNamespace(consumes=True, one_shot=False)
        cfg = types.SimpleNamespace(broker="amqp://u@h/", post_broker="amqp://u@h/")
        flow = types.SimpleNamespace(source=src, cfg=cfg)
        b = object()
        assert spool.wrap(flow, b) is b         # same broker: no spool
        print("winnow" if "sarra.flow.winnow" in sys.modules else "clean")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


def test_same_broker_lives_in_batchtx():
    from sarra.flow import batchtx, winnow
    assert batchtx.same_broker("amqp://u:p@H:5672/", "amqp://u@h/")
    assert not hasattr(winnow, "same_broker")
