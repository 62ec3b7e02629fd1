"""Report messages made for the tests of the report summary (sarra/flow/tracking.py,
reportsummary.py, quotanote.py): rep() builds one, feed() records several."""

from sarra import message

PUB = "20261205180000.5"


def rep(relpath, code, user, host="ws.example.net", text="Downloaded", pub=PUB,
        base="http://pump.example.org/", source="alice", parts=None, **extra):
    headers = {"source": source, "from_cluster": "pumpA", "message": text,
               "sum": "d,d41d8cd98f00b204e9800998ecf8427e"}
    headers["parts"] = parts or "1,4,1,0,0"
    headers.update(extra)
    body = "%s %s %s %03d %s %s 0.010000" % (pub, base, relpath, code, host, user)
    return message.decode("v02.report" + relpath.rsplit("/", 1)[0].replace("/", "."),
                          body, headers, exchange="xr_alice")


def feed(store, *reports, t0=1000.0, step=1.0):
    for i, r in enumerate(reports):
        assert store.add(r, now=t0 + i * step)
