"""What every posting component does to a post on its way out, as v2 does it.

* ``header name=value``: added to every posted message that has no such header yet;
  ``header name=None`` removes it (v2 adds, never replaces; the names that would change
  what the message says about the file are refused at start: config/v2refuse.py).
* ``post_base_url`` with several comma separated URLs: posts take them in turn (round
  robin), so that subscribers spread over servers that hold the same tree. Whatever
  builds a post uses the first URL (:func:`first_url`); :meth:`Outbound.prepare` swaps it.
* ``post_exchange_split N``: a post goes to ``<post_exchange>NN``, NN = the sum of the
  bytes of its ``sum`` header modulo N, two digits (pump-topology.md §6): every post of
  one checksum lands on the same shard, which one sr_winnow instance with
  ``exchange_split`` reads.
* ``post_exchange_by_source on``: a post goes to ``<post_exchange><source>``, its ``source``
  header appended (sr_police's one report routing shovel: xreport to ``xr_<source>``, one
  read per report). A missing, empty or unsafe name (``/ # *``, blanks, control characters)
  is refused (Outcome 403: acked, never posted), so no report lands on another exchange;
  which sources may pass is the shovel's ``msg_by_source`` list.

Core: the flow engine's one post step (flow.engine, every component) calls it; no I/O.
"""

import itertools
import re
from typing import List, Optional

from sarra.flow.poster import public_base_url
from sarra.flow.work import Outcome

#: a source name that may end an exchange name (no AMQP topic characters, no path)
_SOURCE_NAME = re.compile(r"[^\s/#*\x00-\x1f\x7f]{1,200}")


def first_url(value: Optional[str]) -> Optional[str]:
    """The first URL of a post_base_url value (a comma list for round robin)."""
    if not value or "," not in value:
        return value
    return value.split(",")[0].strip()


def base_urls(value: Optional[str]) -> List[str]:
    return [u.strip() for u in (value or "").split(",") if u.strip()]


def shard(sumstr: str, split: int) -> int:
    """The post_exchange_split shard of a post whose sum header is ``sumstr``."""
    return sum(sumstr.encode("utf-8", "surrogateescape")) % split


class Outbound:
    """The per-configuration state of the steps above (the round robin's position)."""

    def __init__(self, cfg, log=None):
        self.exchange = cfg.post_exchange
        self.split = int(getattr(cfg, "post_exchange_split", 0) or 0)
        self.by_source = bool(getattr(cfg, "post_exchange_by_source", False))
        urls = base_urls(getattr(cfg, "post_base_url", None))
        self._rr = None
        if len(urls) > 1:
            public = [public_base_url(u, log) for u in urls]
            # a post's baseurl is the first URL as its builder wrote it: with or without
            # the trailing '/' (the sender strips it); the same form of the next is used
            self._firsts = {public[0]: public, public[0].rstrip("/"):
                            [u.rstrip("/") for u in public]}
            self._rr = itertools.cycle(range(len(public)))
        headers = getattr(cfg, "headers", None) or {}
        self.add = [(k, v) for k, v in headers.items() if v not in (None, "None")]
        self.drop = [k for k, v in headers.items() if v in (None, "None")]

    @classmethod
    def of(cls, cfg, log=None) -> "Outbound":
        """The one Outbound of a configuration object (made on first use)."""
        d = getattr(cfg, "__dict__", None)
        ob = d.get("_sarra_outbound") if d is not None else None
        if ob is None:
            ob = cls(cfg, log)
            if d is not None:
                d["_sarra_outbound"] = ob
        return ob

    def prepare(self, msg) -> None:
        """Apply the header options and the base URL round robin to a post."""
        if self.add or self.drop:
            h = msg.headers
            for k in self.drop:
                h.pop(k, None)
            for k, v in self.add:
                if k not in h:
                    h[k] = v
        if self._rr is not None:
            forms = self._firsts.get(msg.baseurl)
            if forms is not None:
                msg.baseurl = forms[next(self._rr)]

    def exchange_for(self, headers, exchange: Optional[str] = None) -> str:
        """The exchange a post goes to: post_exchange, or its shard with post_exchange_split."""
        x = exchange or self.exchange
        if self.by_source:
            x += source_suffix(headers)
        if self.split <= 0:
            return x
        return "%s%02d" % (x, shard(str(headers.get("sum", "")), self.split))



def source_suffix(headers) -> str:
    """The ``source`` header as the end of an exchange name; Outcome 403 when unusable."""
    src = headers.get("source")
    if not isinstance(src, str) or not _SOURCE_NAME.fullmatch(src) or src in (".", ".."):
        raise Outcome(403, "Forbidden: no usable source header to route by (%r)"
                      % (src if not isinstance(src, str) else src[:40],))
    return src
