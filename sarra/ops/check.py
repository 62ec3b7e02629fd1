"""`sr check`: the state of a host's configurations as a Nagios/Icinga plugin sees it
(issue 23, item 3).  Pure: the figures come in (commands/srmonitor.py gathers them from
the stats files, the supervisor and the broker), a code and one line go out.

Codes (the monitoring plugins' convention): 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
The line: ``SARRA <STATE> - <what is worst> | <performance data>``, the performance data
being ``'<label>'=<value>[<unit>];<warn>;<crit>`` per configuration and figure.

Figures and their thresholds (``--<name> WARN,CRIT``; ``--<name> off`` ignores one):

  queue     messages waiting in the configuration's queue (the broker's count)
  lag       seconds: age of the oldest waiting message (flow/monitor.py)
  idle      seconds since a message was last taken (configurations that run)
  failures  percent of the messages taken in the last 30 to 60 s that failed
  quota     percent of its bytes or files limit a source uses (sr_sarra's quota)

A configuration that should run and does not (down, hung, flapping, error) is CRITICAL,
one partly running is WARNING; no configuration at all, or a figure asked for that
cannot be read (a broker that does not answer), is UNKNOWN unless a WARNING or CRITICAL is found.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
#: figure -> (default warn, default crit, unit in the performance data)
FIGURES = {
    "queue": (1000.0, 10000.0, ""),
    "lag": (300.0, 900.0, "s"),
    "idle": (None, None, "s"),
    "failures": (5.0, 20.0, "%"),
    "quota": (80.0, 95.0, "%"),
}
CRITICAL_STATES = ("down", "hung", "flapping", "error")
WARNING_STATES = ("partial",)


@dataclasses.dataclass
class Threshold:
    warn: Optional[float]
    crit: Optional[float]

    def code(self, value: Optional[float]) -> int:
        if value is None:
            return OK
        if self.crit is not None and value >= self.crit:
            return CRITICAL
        if self.warn is not None and value >= self.warn:
            return WARNING
        return OK


def defaults() -> Dict[str, Threshold]:
    return {name: Threshold(w, c) for name, (w, c, _) in FIGURES.items()}


def parse_threshold(text: str) -> Threshold:
    """'WARN,CRIT', 'WARN' (no critical), ',CRIT', or 'off'; ValueError otherwise."""
    text = text.strip()
    if text.lower() in ("off", "none"):
        return Threshold(None, None)
    warn, _, crit = text.partition(",")

    def num(word):
        word = word.strip()
        if not word:
            return None
        value = float(word)
        if value < 0 or value != value:
            raise ValueError(f"bad threshold {text!r}")
        return value
    try:
        t = Threshold(num(warn), num(crit))
    except ValueError:
        raise ValueError(f"bad threshold {text!r} (use WARN,CRIT: numbers, or off)") from None
    if t.warn is not None and t.crit is not None and t.warn > t.crit:
        raise ValueError(f"bad threshold {text!r}: the warning is above the critical")
    return t


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def _label(text: str) -> str:
    return "'" + text.replace("'", "_").replace("=", "_") + "'"


def evaluate(rows: List[dict], limits: Dict[str, Threshold],
             unknown: Optional[List[str]] = None) -> Tuple[int, str]:
    """rows: one dict per configuration: label, state, and the figures (None: unknown or
    not applicable; quota: {source: percent}); unknown: why a figure could not be read.
    Returns (code, the one line)."""
    if not rows:
        why = "; ".join(unknown or ()) or "no configuration to check"
        return UNKNOWN, f"SARRA UNKNOWN - {why}".replace("|", "/").replace("\n", " ")
    worst, problems, perf = OK, [], []
    for row in rows:
        label = row["label"]
        if row.get("state") in CRITICAL_STATES:
            problems.append((CRITICAL, f"{label} {row['state']}"))
        elif row.get("state") in WARNING_STATES:
            problems.append((WARNING, f"{label} {row['state']}"))
        for name, (_, _, unit) in FIGURES.items():
            t = limits.get(name, Threshold(None, None))
            values = ({f"{label} {name} {src}": v for src, v in (row.get("quota") or {}).items()}
                      if name == "quota" else {f"{label} {name}": row.get(name)})
            for what, value in sorted(values.items()):
                if value is None:
                    continue
                code = t.code(value)
                if code != OK:
                    problems.append((code, f"{what} {_fmt(value)}{unit}"))
                perf.append(f"{_label(what.replace(' ', '_'))}={_fmt(value)}{unit};"
                            f"{_fmt(t.warn)};{_fmt(t.crit)}")
    for why in unknown or ():
        problems.append((UNKNOWN, why))
    if problems:
        order = {CRITICAL: 3, WARNING: 2, UNKNOWN: 1, OK: 0}
        problems.sort(key=lambda p: -order[p[0]])
        worst = problems[0][0]
        summary = "; ".join(text for code, text in problems if code == worst)
        others = len([p for p in problems if p[0] != worst])
        if others:
            summary += f" (and {others} more)"
    else:
        running = sum(1 for r in rows if r.get("state") in ("running", "standby"))
        summary = f"{len(rows)} configurations, {running} running"
    line = f"SARRA {NAMES[worst]} - {summary}".replace("|", "/").replace("\n", " ")
    if perf:
        line += " | " + " ".join(perf)
    return worst, line
