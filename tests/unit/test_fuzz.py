"""Fuzzing the v02 decoder and the checksum parsers with hypothesis.

The contract: decode() returns a Message or raises MessageError -- never anything else;
Parts.parse / parse_sum / parse_time raise only ValueError; parse_part_suffix returns
None or a tuple.
"""

import decimal
import datetime
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sarra import checksum
from sarra.message import Message, MessageError, decode, parse_time

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "samples"
REAL = []
if SAMPLES_DIR.is_dir():
    for p in sorted(SAMPLES_DIR.glob("*.json")):
        s = json.loads(p.read_text(encoding="utf-8"))
        for m in s["messages"] + s.get("input_posts", []):
            REAL.append((m["routing_key"], m["body"], m["headers"]))
if not REAL:   # keep the mutation fuzz meaningful without the spec directory
    REAL = [("v02.post.sub.dir", "20260102030405.5 http://h/ /sub/dir/f.txt",
             {"to_clusters": "h", "parts": "1,12,1,0,0", "sum": "d,8a5a86c37a35b8c7dd0686aeecad6499"}),
            ("v02.report.a", "20260102030405.5 http://h/ /a/f 201 h u 0.1",
             {"sum": "R,x", "message": "Downloaded"})]


class Weird:
    """An object whose str() fails (its repr works: hypothesis needs it for reporting)."""

    def __str__(self):
        raise RuntimeError("no str for you")

    def __repr__(self):
        return "<Weird>"


class Hostile:
    """Neither str() nor repr() works."""

    def __str__(self):
        raise RuntimeError("no str for you")

    def __repr__(self):
        raise RuntimeError("no repr either")


class Cyclic(dict):
    pass


_cyc = Cyclic()
_cyc["self"] = _cyc

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=300),
    st.binary(max_size=300), st.decimals(allow_nan=True), st.datetimes(),
    st.just(Weird()), st.just(_cyc), st.just(object()), st.just(float("inf")),
    st.builds(bytearray, st.binary(max_size=20)), st.builds(memoryview, st.binary(max_size=20)),
    st.just(decimal.Decimal("1.5")), st.just(datetime.date(2026, 1, 2)),
)
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=5), kids, max_size=4),
    st.tuples(kids, kids), st.dictionaries(st.integers(), kids, max_size=2)), max_leaves=12)
keys = st.one_of(st.sampled_from(["sum", "parts", "mtime", "message", "link", "oldname"]),
                 st.text(max_size=20), st.binary(max_size=10), st.integers(), st.none())
header_tables = st.one_of(st.dictionaries(keys, values, max_size=8), st.none(), values)

texts_or_bytes = st.one_of(st.text(max_size=400), st.binary(max_size=400), st.none(), st.integers(),
                           st.just(Weird()), st.builds(bytearray, st.binary(max_size=50)))

topic_words = st.sampled_from(["v02", "v03", "v00", "x", "", "post", "report", "log", "pulse", "tick",
                               "message", "a b", "%23", "é日本", "#", "*"])
routing_keys = st.one_of(
    st.lists(topic_words, min_size=0, max_size=6).map(".".join),
    st.lists(topic_words, min_size=0, max_size=6).map(lambda w: ".".join(w).encode("utf-8", "surrogatepass")),
    texts_or_bytes)

body_words = st.one_of(
    st.sampled_from(["20260102030405.5", "20260102T030405", "2026", "http://h/", "/f", "f%20g",
                     "201", "2x1", "host", "0.5", "nan", "inf", "-1", "99999", "{", "[", "\n", "\x00",
                     "\u3000", "\x85", "é", "20261302030405"]),
    st.text(max_size=30))
bodies = st.one_of(st.lists(body_words, max_size=10).map(" ".join),
                   st.lists(body_words, max_size=10).map(lambda w: " ".join(w).encode("utf-8", "surrogatepass")),
                   texts_or_bytes)


def check_decode(rk, body, headers):
    try:
        msg = decode(rk, body, headers, "xs_fuzz")
    except MessageError as e:
        assert str(e) and "\n" not in str(e)     # one line
        return None
    assert isinstance(msg, Message)
    assert msg.kind in ("post", "report", "pulse")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in msg.headers.items())
    # what decodes must re-encode or be refused with MessageError only
    try:
        out = msg.encode()
    except MessageError:
        return msg
    again = decode(*out)
    assert (again.pubtime, again.baseurl, again.relpath, again.kind) == \
        (msg.pubtime, msg.baseurl, msg.relpath, msg.kind)
    return msg


@FUZZ
@given(rk=routing_keys, body=bodies, headers=header_tables)
def test_decode_never_raises_other_errors(rk, body, headers):
    check_decode(rk, body, headers)


@FUZZ
@given(rk=routing_keys, body=bodies,
       headers=st.dictionaries(st.sampled_from(["sum", "parts", "x"]),
                               st.one_of(st.sampled_from(["d,8a5a86c37a35b8c7dd0686aeecad6499", "R,1", "L,2",
                                                          "n", "0", "z,d", "1,12,1,0,0", "i,10,3,5,2",
                                                          "p,10,3,0,3", "1,x", "d,", ","]),
                                         st.text(max_size=20)), max_size=3))
def test_decode_mostly_valid_headers(rk, body, headers):
    check_decode(rk, body, headers)


@pytest.mark.parametrize("where", ["rk", "body", "value", "key", "nested"])
def test_decode_hostile_objects(where):
    rk, body, headers = "v02.post", "20260102030405.5 http://h/ /f", {"sum": "R,1"}
    if where == "rk":
        rk = Hostile()
    elif where == "body":
        body = Hostile()
    elif where == "value":
        headers["x"] = Hostile()
    elif where == "key":
        headers[Hostile()] = "v"
    else:
        headers["x"] = {"a": [1, Hostile()]}
    with pytest.raises(MessageError):
        decode(rk, body, headers)


# ---------------------------------------------------------------- mutations of real messages

def _mutate(data, draw_int, draw_bytes, kind):
    if kind == "truncate":
        return data[:draw_int(0, len(data))]
    if kind == "insert":
        k = draw_int(0, len(data))
        return data[:k] + draw_bytes + data[k:]
    if kind == "flip":
        if not data:
            return data
        k = draw_int(0, len(data) - 1)
        return data[:k] + bytes([data[k] ^ (1 << draw_int(0, 7))]) + data[k + 1:]
    if kind == "drop_field":
        words = data.split(b" ")
        if words:
            del words[draw_int(0, len(words) - 1)]
        return b" ".join(words)
    if kind == "dup_field":
        words = data.split(b" ")
        k = draw_int(0, len(words) - 1)
        return b" ".join(words[:k + 1] + words[k:])
    return data


mutations = st.sampled_from(["truncate", "insert", "flip", "drop_field", "dup_field", "none"])


@FUZZ
@given(idx=st.integers(0, len(REAL) - 1), body_mut=mutations, rk_mut=mutations,
       junk=st.binary(min_size=1, max_size=8), data=st.data())
def test_mutated_real_messages(idx, body_mut, rk_mut, junk, data):
    rk, body, headers = REAL[idx]

    def draw_int(lo, hi):
        return data.draw(st.integers(lo, hi))
    body_b = _mutate(body.encode("utf-8"), draw_int, junk, body_mut)
    rk_b = _mutate(rk.encode("utf-8"), draw_int, junk, rk_mut)
    hdrs = dict(headers)
    action = data.draw(st.sampled_from(["keep", "drop", "replace", "mutate"]))
    if hdrs and action != "keep":
        key = data.draw(st.sampled_from(sorted(hdrs)))
        if action == "drop":
            del hdrs[key]
        elif action == "replace":
            hdrs[key] = data.draw(values)
        else:
            hdrs[key] = _mutate(hdrs[key].encode("utf-8"), draw_int, junk,
                                data.draw(mutations))
    as_text = data.draw(st.booleans())
    if as_text:
        body_b = body_b.decode("utf-8", "replace")
        rk_b = rk_b.decode("utf-8", "replace")
    msg = check_decode(rk_b, body_b, hdrs)
    if body_mut == rk_mut == "none" and action == "keep":
        assert msg is not None      # an untouched real message always decodes


def test_real_messages_specific_mutations():
    """Deterministic breakages of a real post name the right field."""
    rk, body, headers = REAL[0]
    cases = [
        (rk, body, {k: v for k, v in headers.items() if k != "sum"}, "header sum"),
        (rk, " ".join(body.split(" ")[:2]), headers, "body"),
        (rk, "x" + body, headers, "pubtime"),
        ("v9x.post", body, headers, "topic"),
        (rk, body.encode("utf-8") + b"\xff", headers, "body"),
    ]
    if "parts" in headers:
        cases.append((rk, body, {k: v for k, v in headers.items() if k != "parts"}, "header parts"))
        cases.append((rk, body, dict(headers, parts="i,1,1,0,1"), "header parts"))
    for r, b, h, field in cases:
        with pytest.raises(MessageError) as e:
            decode(r, b, h)
        assert e.value.field == field, (r, b, h)


# ---------------------------------------------------------------- checksum parsers

any_input = st.one_of(st.text(max_size=60), st.binary(max_size=30), st.none(), st.integers(),
                      st.lists(st.integers(), max_size=3), st.floats())
parts_like = st.lists(st.one_of(st.sampled_from(["1", "i", "p", "0", "-1", "10", "", " 1", "1_0", "²", "１"]),
                                st.text(max_size=6)), max_size=7).map(",".join)
sum_like = st.builds(lambda a, b: a + b,
                     st.sampled_from(["d,", "s,", "n,", "0,", "z,", "a,", "R,", "L,", "", "d", "z", ","]),
                     st.text(alphabet="0123456789abcdefABCDEFxyz,. ", max_size=130))


@FUZZ
@given(text=st.one_of(any_input, parts_like))
def test_parts_parse_only_value_error(text):
    try:
        p = checksum.Parts.parse(text)
    except ValueError:
        return
    assert p.method in ("1", "i", "p")
    assert min(p.bsz, p.blktot, p.brem, p.bno) >= 0
    if p.method != "1":
        assert p.bno < p.blktot and p.bsz > 0
        assert p.offset >= 0 and p.length > 0
    assert checksum.Parts.parse(str(p)) == p


@FUZZ
@given(text=st.one_of(any_input, sum_like))
def test_parse_sum_only_value_error(text):
    try:
        s = checksum.parse_sum(text)
    except ValueError:
        return
    assert s.algo and isinstance(s.value, str)
    assert checksum.parse_sum(str(s)).algo == s.algo


@FUZZ
@given(text=st.one_of(any_input, st.from_regex(r"\A\d{8}T?\d{6}(\.\S{0,12})?\Z")))
def test_parse_time_only_value_error(text):
    try:
        t = parse_time(text)
    except ValueError:
        return
    assert isinstance(t, float)


@FUZZ
@given(name=st.one_of(st.text(max_size=60),
                      st.lists(st.one_of(st.sampled_from(["x", "10", "2", "0", "1", "d", "Part", "-1", ""]),
                                         st.text(max_size=4)), max_size=9).map(".".join)))
def test_parse_part_suffix_never_raises(name):
    r = checksum.parse_part_suffix(name)
    assert r is None or (isinstance(r, tuple) and len(r) == 3)
