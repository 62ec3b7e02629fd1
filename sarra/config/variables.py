"""``${...}`` variables of configuration values (config.md §2).

* At load time (:class:`LoadVars`, used by the parser of sarra.config.parser): ${HOSTNAME},
  ${PROGRAM}, ${CONFIG}, ${RANDID}, ${BROKER_USER} (deferred until the broker is known:
  :func:`expand_broker_user`) and environment variables; per-message variables are left
  as they are.
* Per message (:func:`expand_message_vars`): dates (UTC, with offsets like
  ${YYYYMMDD-1D}), ${SOURCE}, ${BD}/${PBD}/${PDR}/${DR} and the Sundew file name fields
  (:func:`sundew_vars`).
* :data:`RANDID` and :func:`random_queue_suffix`: the random parts of generated names.
"""

import datetime
import os
import random
import re
import socket
import time
from typing import Any, Dict, Optional

RANDID = "%04x" % random.SystemRandom().randint(0, 0xFFFF)

_VAR_RE = re.compile(r"\$\{([^}]*)\}")
_DATE_VAR_RE = re.compile(r"^(YYYYMMDD|YYYY|MM|DD|HH|JJJ)(?:([+-])(\d+)([smhdwSMHDW]))?$")
PER_MESSAGE_VARS = frozenset((
    "YYYYMMDD", "YYYY", "MM", "DD", "HH", "JJJ", "SOURCE", "BD", "PBD", "PDR", "DR",
    "T1", "T2", "A1", "A2", "ii", "CCCC", "YY", "GG", "Gg", "BBB",
    "RYYYY", "RMM", "RDD", "RHH", "RMN", "RSS",
))


def random_queue_suffix() -> str:
    """'<r1>.<r2>': two random integers 0-100000000, zero padded to 8 digits."""
    r = random.SystemRandom()
    return "%08d.%08d" % (r.randint(0, 100000000), r.randint(0, 100000000))


def is_per_message_var(name: str) -> bool:
    return name in PER_MESSAGE_VARS or _DATE_VAR_RE.match(name) is not None


# ------------------------------------------------------------------ at load time

class LoadVars:
    """Expands the load-time variables in option values of one Config being read."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._hostname: Optional[str] = None

    def expand(self, text: str) -> str:
        if "${" not in text:
            return text
        return _VAR_RE.sub(self._var, text)

    def _var(self, m: "re.Match") -> str:
        name = m.group(1)
        if is_per_message_var(name):
            return m.group(0)
        if name == "HOSTNAME":
            if self._hostname is None:
                self._hostname = socket.getfqdn()
            return self._hostname
        if name == "PROGRAM":
            return self.cfg.program
        if name == "CONFIG":
            return self.cfg.name if self.cfg.name else m.group(0)
        if name == "RANDID":
            return RANDID
        if name == "BROKER_USER":  # deferred to finalize if broker is not known yet
            return self.cfg.broker_user() if self.cfg.is_set("broker") else m.group(0)
        return os.environ.get(name, m.group(0))


def expand_broker_user(cfg, buser: str) -> None:
    """Replace the ${BROKER_USER} left in every value of cfg, once the broker is known."""
    tag = "${BROKER_USER}"

    def fix(s):
        return s.replace(tag, buser) if isinstance(s, str) else s
    for k, val in cfg._values.items():
        if isinstance(val, str) and tag in val:
            cfg._values[k] = fix(val)
    for m in cfg.masks:
        m.directory = fix(m.directory)
    for b in cfg.bindings:
        b.exchange, b.subtopic = fix(b.exchange), fix(b.subtopic)
    cfg.paths[:] = [fix(p) for p in cfg.paths]
    for k in cfg.unknown:
        cfg.unknown[k] = [fix(s) for s in cfg.unknown[k]]
    for k in cfg.headers:
        cfg.headers[k] = fix(cfg.headers[k])


# ------------------------------------------------------------------ per message

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE_FORMATS = {"YYYYMMDD": "%Y%m%d", "YYYY": "%Y", "MM": "%m", "DD": "%d", "HH": "%H",
                 "JJJ": "%j"}


def _epoch(now) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime.datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=datetime.timezone.utc)
        return now.timestamp()
    return float(now)


def expand_message_vars(text: str, msg_source: Optional[str] = None, now=None,
                        extra: Optional[Dict[str, Any]] = None) -> str:
    """Expand the per-message variables of config.md §2.1 in `text`.

    Dates are UTC at `now` (epoch seconds or datetime; default: current time), with
    offset forms like ${YYYYMMDD-1D}. ${SOURCE} is msg_source; `extra` supplies BD, PBD,
    PDR, DR and Sundew fields (see sundew_vars). Unknown variables are left as is.
    """
    if "${" not in text:
        return text
    base = _epoch(now)
    extra = extra or {}

    def repl(m: "re.Match") -> str:
        name = m.group(1)
        d = _DATE_VAR_RE.match(name)
        if d:
            t = base
            if d.group(2):
                delta = int(d.group(3)) * _UNIT_SECONDS[d.group(4).lower()]
                t += delta if d.group(2) == "+" else -delta
            when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
            return when.strftime(_DATE_FORMATS[d.group(1)])
        if name == "SOURCE" and msg_source:
            return msg_source
        if extra.get(name) is not None:
            return str(extra[name])
        return m.group(0)

    return _VAR_RE.sub(repl, text)


def sundew_vars(filename: str) -> Dict[str, str]:
    """Fields of a Sundew/WMO style name 'TTAAii_CCCC_YYGGgg_BBB_...:...:YYYYMMDDhhmmss'."""
    fields = os.path.basename(filename).split(":")
    head = fields[0].split("_")
    out: Dict[str, str] = {}
    if len(head[0]) >= 6:
        t = head[0]
        out.update(T1=t[0], T2=t[1], A1=t[2], A2=t[3], ii=t[4:6])
    if len(head) > 1 and head[1]:
        out["CCCC"] = head[1]
    if len(head) > 2 and len(head[2]) >= 6:
        out.update(YY=head[2][0:2], GG=head[2][2:4], Gg=head[2][4:6])
    if len(head) > 3 and head[3]:
        out["BBB"] = head[3]
    if len(fields) > 1 and re.match(r"^\d{14}$", fields[-1]):
        r = fields[-1]
        out.update(RYYYY=r[0:4], RMM=r[4:6], RDD=r[6:8], RHH=r[8:10], RMN=r[10:12],
                   RSS=r[12:14])
    return out
