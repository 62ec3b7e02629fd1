"""Active/passive by address (option ``vip``): a component works only while this node
holds the address on one of its interfaces, so two nodes can stand by for each other.

Facts: doc/spec/config.md (``vip`` / ``interface``), doc/spec/pump-topology.md.
"""
import ipaddress
import logging
import time

import psutil

log = logging.getLogger(__name__)

CHECK_EVERY = 5.0     # seconds between two looks at the interfaces while idle or active


def _parse(address):
    """The address as an ip_address, or None when it is not one (a zone id is dropped)."""
    text = str(address or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0].split("/", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def valid(address):
    """True when ``address`` is an IPv4 or IPv6 address (what ``vip`` takes)."""
    return _parse(address) is not None


def holds(address, interface=None):
    """True when ``address`` is on a local interface (on ``interface`` only, when given).

    An address that is not an IP address is never held.  Reading the interfaces may fail
    (a container without /proc): then the address is not held either, and it says so once
    at debug level; the caller checks again later."""
    want = _parse(address)
    if want is None:
        return False
    try:
        table = psutil.net_if_addrs()
    except Exception as e:   # noqa: BLE001 - an unreadable table means "not held now"
        log.debug("vip: cannot read the interfaces: %s", e)
        return False
    for name, addrs in table.items():
        if interface and name != interface:
            continue
        for a in addrs:
            if _parse(a.address) == want:
                return True
    return False


class Gate:
    """The engine's view of ``vip``: ``active()`` says whether to work now.

    Without an address it is always active.  With one, it looks at the interfaces at
    most every ``every`` seconds and logs once each time the node becomes active or
    passive."""

    def __init__(self, address=None, interface=None, every=CHECK_EVERY, logger=None,
                 clock=time.monotonic, probe=holds):
        self.address = address or None
        self.interface = interface or None
        self.every = every
        self.log = logger or log
        self.clock = clock
        self.probe = probe
        self.state = None          # None until the first look, then True/False
        self.next_check = 0.0

    def active(self):
        if not self.address:
            return True
        now = self.clock()
        if self.state is None or now >= self.next_check:
            self.next_check = now + self.every
            held = bool(self.probe(self.address, self.interface))
            if held != self.state:
                where = f" on {self.interface}" if self.interface else ""
                if held:
                    self.log.info("vip %s is here%s: active", self.address, where)
                else:
                    self.log.info("vip %s is not here%s: standby (passive), "
                                  "checking every %gs", self.address, where, self.every)
            self.state = held
        return self.state

    @property
    def standby(self):
        return self.address is not None and self.state is False
