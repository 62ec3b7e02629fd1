"""The pool of transfer drivers a flow keeps open (moved out of engine.py).

One driver, with its open connection, per scheme/host/port/user (``flow.transfers``,
keyed by transfer.split_url(url).key), found again by base URL (``flow._by_base``); at
most MAX_DRIVERS: one more closes them all, so that a source naming thousands of
endpoints cannot make an instance hold as many sockets. Credentials are looked up once per
scheme://user@host:port (``flow._creds``) and lent through fetchpolicy (a pump lends only
what the message may use).
"""

from typing import Optional

from sarra.flow import fetchpolicy, pacing

#: transfer drivers (each with its open connection) a flow keeps; one more closes them all
MAX_DRIVERS = 64


def transfer_for(flow, url: str, baseurl: Optional[str] = None):
    """The pooled transfer driver for url. Raises KeyError for a scheme no driver handles."""
    pacing.apply(flow)          # kbytes_ps: this process's transfers paced
    if baseurl is not None:
        t = flow._by_base.get(baseurl)
        if t is not None:
            return t
    from sarra import transfer
    scheme = url.split(":", 1)[0].lower()
    try:
        transfer.driver_class(scheme)       # its module imported on first use
    except transfer.TransferError:
        raise KeyError(scheme) from None
    if len(flow._by_base) >= 8 * MAX_DRIVERS:
        flow._by_base.clear()
    if len(flow.transfers) >= MAX_DRIVERS \
            and transfer.split_url(url).key not in flow.transfers:
        # one driver, and its open connection, per endpoint the messages name: a source
        # naming thousands (users, ports, host names of its own) would hold as many
        # sockets, until no instance could open a file for anyone (EMFILE)
        close_all(flow)
        flow._creds.clear()
    t = transfer.for_url(url, flow.transfers, credentials=flow._credential_for,
                         timeout=flow.cfg.timeout or 300, logger=flow.log)
    if baseurl is not None:
        flow._by_base[baseurl] = t
    return t


def credential_for(flow, url: str):
    """credentials.conf entry for a transfer URL, cached per scheme://user@host:port
    (entries never depend on the path); the drivers ask on every request."""
    key = url.split("/", 3)[:3]
    key = "/".join(key) if len(key) == 3 else url
    cache = flow._creds
    if key not in cache:
        cache[key] = flow.credentials.lookup(url)
    return fetchpolicy.lend(flow, url, cache[key])     # a pump: only what is lent


def close_all(flow) -> None:
    """Close every pooled driver (its connection) and forget them: at a stop, a reload,
    or when a flow holds too many."""
    for t in flow.transfers.values():
        try:
            t.close()
        except Exception:
            pass
    flow.transfers.clear()
    flow._by_base.clear()
