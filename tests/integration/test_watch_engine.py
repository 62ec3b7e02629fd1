"""sr_watch and sr_post run on the flow engine (issue 18 item 3): the stats file `sr status`
reads follows sr_watch's posts within seconds (the engine's stats_tick, not only at each
heartbeat), on_heartbeat runs on the engine's heartbeat, and the plugins of sr_watch and
sr_post see the same PluginParent adapter as every other component's."""

import json
import time

from sarra.ops import health
from tests.integration.watchkit import watch_env  # noqa: F401  (fixture watch_env)
from tests.integration.senderkit import wait_for


def plugin(path, hook, extra=""):
    """A plugin file whose ``hook`` appends one JSON line (its parent's class, ...) to
    <path>.out and returns True."""
    path.write_text(
        "import json\n"
        f"def {hook}(parent):\n"
        f"    msg = getattr(parent, 'msg', None)\n"
        f"    line = {{'hook': {hook!r}, 'parent': type(parent).__name__,\n"
        f"            'exchange': parent.post_exchange,\n"
        f"            'relpath': getattr(msg, 'relpath', None){extra}}}\n"
        f"    with open({str(path) + '.out'!r}, 'a') as f:\n"
        f"        f.write(json.dumps(line) + '\\n')\n"
        f"    return True\n")
    return path


def records(path):
    out = path.parent / (path.name + ".out")
    if not out.exists():
        return []
    return [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]


def test_watch_stats_follow_its_posts_and_sr_status_shows_the_rate(watch_env, run_cmd):
    """heartbeat 300: the stats file is rewritten within seconds of the posts all the same
    (before, sr_watch wrote it at start and at each heartbeat only)."""
    env, root = watch_env, watch_env.root
    name = f"e{env.uid}"
    cdir = env.home / ".config" / "sarra" / "watch"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / f"{name}.conf").write_text("\n".join(env.lines(["heartbeat 300"])) + "\n")
    stats = env.home / ".cache" / "sarra" / "watch" / name / f"sr_watch_{name}_01.stats"
    try:
        run_cmd(["sr_watch", "start", name], check=True)
        wait_for(stats.exists, 15, "the stats file written at start")
        for i in range(3):
            (root / f"f{i}").write_text(str(i))
        assert len(env.msgs.get(3, timeout=15)) == 3

        def counted():
            try:
                return json.loads(stats.read_text())["received"] >= 3
            except (OSError, ValueError, KeyError):
                return False
        wait_for(counted, 10, "the stats file counting the 3 posts")
        data = json.loads(stats.read_text())
        assert data["posted"] >= 3 and data["watched"] >= 3 and data["unacked"] == 0
        assert health.rate(data) > 0
        out = run_cmd(["sr", "status"]).stdout
        header = next(ln for ln in out.splitlines() if "MSG/S" in ln).split()
        row = next(ln for ln in out.splitlines() if f" {name} " in f" {ln} ").split()
        shown = dict(zip(header, row))
        assert shown["COMPONENT"] == "watch" and shown["STATE"] == "running", out
        assert float(shown["MSG/S"]) > 0 and shown["LAST"] not in ("-", "never"), out
    finally:
        run_cmd(["sr_watch", "stop", name])


def test_watch_on_heartbeat_and_on_post_see_the_plugin_parent(watch_env, tmp_path):
    env, root = watch_env, watch_env.root
    hb = plugin(tmp_path / "hb.py", "on_heartbeat")
    op = plugin(tmp_path / "op.py", "on_post")
    env.start(["heartbeat 1", f"on_heartbeat {hb}", f"on_post {op}"])
    (root / "x.txt").write_text("x")
    m, = env.msgs.get(1, timeout=15)
    wait_for(lambda: records(hb), 10, "on_heartbeat to run")
    (beat,), (posted,) = records(hb)[:1], records(op)
    assert beat["parent"] == posted["parent"] == "PluginParent"
    assert beat["exchange"] == posted["exchange"] == env.exchange
    assert posted["relpath"] == m.relpath == "/watched/x.txt"


def test_sr_post_runs_on_start_on_post_on_stop_with_the_plugin_parent(
        tmp_path, run_cmd, broker_url, amqp_exchange, amqp_tap, uid):
    exchange = amqp_exchange(f"xs_guest_p{uid}", durable=True)
    tap = amqp_tap(exchange)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    hooks = {h: plugin(tmp_path / f"{h}.py", h) for h in ("on_start", "on_post", "on_stop")}
    args = ["-pb", broker_url, "-pbu", "http://h/", "-pbd", str(data), "-px", exchange,
            "-ll", "warning"]
    for h, p in hooks.items():
        args += [f"--{h}", str(p)]
    r = run_cmd(["sr_post", *args, str(data / "a.txt")])
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ""
    assert [b.split()[2] for _, b, _ in tap.get(1, timeout=10)] == ["/a.txt"]
    seen = {h: records(p) for h, p in hooks.items()}
    assert [len(v) for v in seen.values()] == [1, 1, 1]
    assert {v[0]["parent"] for v in seen.values()} == {"PluginParent"}
    assert seen["on_post"][0]["relpath"] == "/a.txt"
    assert seen["on_post"][0]["exchange"] == exchange
