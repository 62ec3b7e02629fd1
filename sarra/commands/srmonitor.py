"""What `sr status` shows beyond the states (issue 23, item 3): bytes/s, lag and the figures
of each instance, `sr status --json`, and `sr check` (a Nagios/Icinga plugin: the rules in
sarra/ops/check.py).

    sr status [--json] [names...]
    sr check [--queue W,C] [--lag W,C] [--idle W,C] [--failures W,C] [--quota W,C] [names...]
"""

import json
import time
from typing import List, Optional

from sarra.ops import check, health, instances, supervisor

#: sr's flags (status --json; check's thresholds: ops/check.py FIGURES)
OWN_OPTIONS = ("json", "queue", "lag", "idle", "failures", "quota")
SIZE_UNITS = (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))
RATE_WINDOW_S = 60.0      # failures: the stats file's window (30 to 60 s)


def _human_rate(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit, size in SIZE_UNITS:
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= 2 * size:
            return f"{s / size:.0f}{unit}"
    return f"{s:.1f}s" if s < 10 else f"{s:.0f}s"


def instance_figures(component: str, name: str, now: float) -> List[dict]:
    """The live instances' figures from their stats files (health.rate for the rates)."""
    out = []
    for n, pid in instances.status(component, name).running:
        s = instances.read_stats(component, name, n)
        if not s or s.get("pid") != pid:
            out.append({"instance": n, "pid": pid})
            continue
        out.append(_figures(n, pid, s, now))
    return out


def failure_pct(s: dict) -> float:
    """Percent of the messages taken (new and retried) that failed, over the stats file's
    window; since the start when nothing came in the window and it began at the
    process's first write (what came before that write counts then)."""
    def delta(key):
        return (s.get(key) or 0) - (s.get("prev_" + key) or 0)
    taken, failed = delta("received") + delta("retried"), delta("failed")
    if taken <= 0 and s.get("window_from_start"):
        taken = (s.get("received") or 0) + (s.get("retried") or 0)
        failed = s.get("failed") or 0
    return min(100.0, 100.0 * failed / taken) if taken > 0 else 0.0


def _figures(n: int, pid: int, s: dict, now: float) -> dict:
    """One live instance's figures from its stats file."""
    return {
        "instance": n, "pid": pid,
        "msg_per_s": health.rate(s, now), "bytes_per_s": health.rate(s, now, "bytes"),
        "lag": s.get("lag"), "lag_at": s.get("lag_at"),
        "retry": int(s.get("retry_queue") or 0), "unacked": int(s.get("unacked") or 0),
        "last_activity": s.get("last_activity"),
        "failure_pct": failure_pct(s),
        "quota": s.get("quota") or {},
    }


def _lag(figs: List[dict], queue: Optional[int], now: float) -> Optional[float]:
    """Age of the oldest waiting message: nothing waits (queue empty, nothing in hand): 0;
    else the last batch's oldest message's age, grown since it was taken while messages
    still wait in the queue."""
    known = [f for f in figs if f.get("lag") is not None]
    if not known:
        return None if queue else (0.0 if queue == 0 and figs else None)
    if queue == 0 and not any(f.get("unacked") for f in figs):
        return 0.0
    f = max(known, key=lambda f: f.get("lag_at") or 0)
    lag = float(f["lag"])
    if queue:
        lag += max(0.0, now - float(f.get("lag_at") or now))
    return lag


def _quota_pct(figs: List[dict]) -> dict:
    """{source: percent of its bytes or files limit used} from the freshest instance."""
    out = {}
    for f in figs:
        for source, q in (f.get("quota") or {}).items():
            pct = []
            if q.get("max_bytes"):
                pct.append(100.0 * q.get("bytes", 0) / q["max_bytes"])
            if q.get("max_files"):
                pct.append(100.0 * q.get("files", 0) / q["max_files"])
            if pct:
                out[source] = max(out.get(source, 0.0), max(pct))
    return out


def add_figures(rows: List[dict], now: Optional[float] = None) -> None:
    """Complete sr.status_rows' rows: bytes/s, lag, the instances and numbers for --json."""
    now = time.time() if now is None else now
    for row in rows:
        figs = instance_figures(row["component"], row["config"], now)
        queue = int(row["queue"]) if str(row.get("queue", "-")).isdigit() else None
        brates = [f["bytes_per_s"] for f in figs if f.get("bytes_per_s") is not None]
        mrates = [f["msg_per_s"] for f in figs if f.get("msg_per_s") is not None]
        lag = _lag(figs, queue, now)
        last = [float(f["last_activity"]) for f in figs if f.get("last_activity")]
        received_any = any(f.get("msg_per_s") is not None for f in figs)
        row["bytes/s"] = _human_rate(sum(brates)) if brates else "-"
        row["lag"] = _age(lag) if lag is not None else "-"
        row["figures"] = {
            "queue": queue, "lag": lag, "msg_per_s": sum(mrates) if mrates else None,
            "bytes_per_s": sum(brates) if brates else None,
            "idle": now - max(last) if last else None,
            "failures": max((f["failure_pct"] for f in figs if "failure_pct" in f),
                            default=None) if received_any else None,
            "retry": sum(f.get("retry", 0) for f in figs),
            "quota": _quota_pct(figs),
        }
        row["instances"] = figs


def instance_lines(rows: List[dict]) -> List[str]:
    """The instances' block of `sr status` (after the table and a blank line)."""
    lines = []
    for row in rows:
        for f in row.get("instances") or ():
            head = f"  {row['component']}/{row['config']} #{f['instance']:02d} pid {f['pid']}"
            if "msg_per_s" not in f:
                lines.append(head + ": no figures yet")
                continue
            rate = f["msg_per_s"]
            lines.append(f"{head}: {'-' if rate is None else f'{rate:.1f}'} msg/s "
                         f"{_human_rate(f['bytes_per_s'])}B/s lag "
                         f"{_age(f['lag']) if f['lag'] is not None else '-'} "
                         f"retry {f['retry']} in hand {f['unacked']}")
        for source, q in sorted((row.get("figures") or {}).get("quota", {}).items()):
            lines.append(f"  {row['component']}/{row['config']} quota {source}: {q:.0f}% used")
    return ["instances:"] + lines if lines else []


def status_json(rows: List[dict], notes: List[str]) -> str:
    sup = supervisor.state()
    out = {"supervisor": {"state": sup, "pid": supervisor.read_pid() if sup == "running"
                          else None}, "configurations": [], "notes": notes}
    for r in rows:
        run, _, exp = r["run/exp"].partition("/")
        out["configurations"].append({
            "component": r["component"], "config": r["config"], "state": r["state"],
            "running": int(run), "expected": int(exp), "problem": r["problem"],
            "restarts": int(r["restarts"]), **(r.get("figures") or {}),
            "instances": r.get("instances") or []})
    return json.dumps(out, indent=1, default=str)


def check_rows(rows: List[dict]) -> List[dict]:
    out = []
    for r in rows:
        f = dict(r.get("figures") or {})
        if r["state"] not in ("running", "partial", "standby", "hung"):
            f["idle"] = None
        if r["component"] in ("post",):
            f["idle"] = None
        out.append({"label": f"{r['component']}/{r['config']}", "state": r["state"], **f})
    return out


def _parse_args(argv: List[str], action: str):
    """(names, --json, thresholds); ValueError for what is wrong."""
    limits, as_json, words = check.defaults(), False, []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == action:
            continue
        if a == "--json" and action == "status":
            as_json = True
        elif action == "check" and a.startswith("--") and a[2:].partition("=")[0] in check.FIGURES:
            name, eq, value = a[2:].partition("=")
            if not eq:
                if not args:
                    raise ValueError(f"{a} needs WARN,CRIT")
                value = args.pop(0)
            limits[name] = check.parse_threshold(value)
        elif a.startswith("-"):
            raise ValueError(f"unknown option {a} (see sr --help)")
        else:
            words.append(a)
    return words, as_json, limits


def run(argv: List[str]) -> int:
    """`sr check ...` and `sr status --json ...` (sr.run sends them here)."""
    from sarra.commands import common, sr
    from sarra.config import parser as config
    from sarra.ops import logs
    action = "check" if "check" in argv else "status"
    usage = check.UNKNOWN if action == "check" else common.USAGE
    try:
        words, as_json, limits = _parse_args(argv, action)
        config.use_default_state_host()
    except (ValueError, config.ConfigError) as e:
        if action == "check":
            print(f"SARRA UNKNOWN - {e}")
            return usage
        return common.fail(sr.PROG, str(e), usage)
    logs.setup_named_logging(sr.PROG, None, level="warning")
    common.quiet_third_party()
    try:
        items, errors = sr.select(words, "status")
        rows, notes = sr.status_rows(items)
    except Exception as e:          # a check never ends without its one line
        if action != "check":
            raise
        print(f"SARRA UNKNOWN - {e}".replace("\n", " ")[:400])
        return check.UNKNOWN
    if action == "status":
        for e in errors:
            print(f"{sr.PROG}: {e}", file=__import__("sys").stderr)
        print(status_json(rows, notes))
        problem = any(r["problem"] for r in rows) or supervisor.state() == "dead"
        return common.USAGE if errors else (common.SOME_FAILED if problem else common.OK)
    unknown = list(errors) + [n for n in notes if n.startswith("queue depth unknown")]
    code, line = check.evaluate(check_rows(rows), limits, unknown)
    print(line)
    return code
