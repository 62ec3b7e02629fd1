"""sr_report summary: a file that travels in parts (method p, each block its own
``.Part`` file, or method i, blocks in place) is ONE file, delivered when every block
is; a name whose suffix does not match its parts header is taken as it is."""

from sarra.flow import reportsummary, tracking
from tests.support.reportfakes import feed, rep


def parts_of(bno, method="p"):
    return "%s,4096,4,100,%d" % (method, bno)


def part_name(base, bno):
    return "%s.4096.4.100.%d.d.Part" % (base, bno)


def test_a_file_in_part_files_is_one_file(tmp_path):
    st = tracking.Store(str(tmp_path))
    path = "/20261205/alice/big/p0.bin"
    # the parts arrive last first, at a pump and at bob's
    feed(st, *[rep(part_name(path, b), 201, u, parts=parts_of(b))
               for b in (3, 2, 1) for u in ("feeder", "bob")])
    rows = reportsummary.summarize(st)
    assert [r["file"] for r in rows] == [path]
    assert rows[0]["delivered"] == [] and len(rows[0]["pending"]) == 2
    assert {p["blocks"] for p in rows[0]["pending"]} == {"3/4"}
    feed(st, rep(part_name(path, 0), 201, "bob", parts=parts_of(0)), t0=2000.0)
    rows = reportsummary.summarize(st)
    assert len(rows) == 1
    assert [d["consumer"].split("@")[0] for d in rows[0]["delivered"]] == ["bob"]
    # the journal read back says the same
    again = reportsummary.summarize(tracking.Store(str(tmp_path)).load())
    assert again == rows


def test_a_suffix_that_is_not_its_parts_header_stays_a_name(tmp_path):
    st = tracking.Store(str(tmp_path))
    path = "/d/x.bin"
    feed(st, rep(part_name(path, 1), 201, "bob", parts=parts_of(2)),     # another block
         rep(part_name(path, 1), 201, "bob", parts=parts_of(1, "i")),   # not method p
         rep("/d/..4096.4.100.1.d.Part", 201, "bob", parts=parts_of(1)))
    names = sorted(r["file"] for r in reportsummary.summarize(st))
    assert names == sorted([part_name(path, 1), "/d/..4096.4.100.1.d.Part"])
