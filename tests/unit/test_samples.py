"""Golden v02 wire samples (tests/data/samples/*.json) against our codec, poster and reports.

For every captured message: decode it, check every field against the sample text and its
``inputs`` (computed here independently of sarra), and re-encode it byte for byte.
For the v2 post/watch samples: rebuild the files in tmp_path and re-create the messages
with sarra.flow.poster.  For the report samples: rebuild the reports with Message.to_report().
"""

import calendar
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from sarra import checksum, message
from sarra.message import MessageError, decode, parse_time
from sarra.flow.poster import PostOptions, file_posts, posts_for_path, relpath_of, remove_post

#: copied from the spec's samples folder, so that a clone of the repository alone tests them
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "samples"

SAMPLES = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SAMPLES_DIR.glob("*.json"))}

#: (file, section, index) of every message of every sample, input posts included
ALL_MESSAGES = [(name, section, i)
                for name, s in SAMPLES.items()
                for section in ("messages", "input_posts")
                for i in range(len(s.get(section, [])))]


def _id(entry):
    name, section, i = entry
    return f"{name[:-5]}:{'in' if section == 'input_posts' else ''}{i}"


def big_content(size: int) -> bytes:
    """Big-file content of the samples: byte at offset k is k mod 251."""
    pattern = bytes(range(251))
    return (pattern * (size // 251 + 1))[:size]


_BIG = big_content(10485760)   # ten_million.bin is a prefix of ten_mib.bin


def unescape_ref(text: str) -> str:
    """Independent reference for the v02 un-escaping: only %20 and %23, left to right."""
    out, i = [], 0
    while i < len(text):
        if text[i:i + 3] == "%20":
            out.append(" ")
            i += 3
        elif text[i:i + 3] == "%23":
            out.append("#")
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parts_ref(header: str):
    """(method, bsz, blktot, brem, bno, offset, length, filesize) with the spec's formulas."""
    f = header.split(",")
    method = f[0]
    bsz, blktot, brem, bno = (int(x) for x in f[1:])
    if method == "1":
        return method, bsz, blktot, brem, bno, 0, bsz, bsz
    offset = bno * bsz
    length = brem if (bno == blktot - 1 and 0 < brem <= bsz) else bsz
    filesize = (blktot - 1) * bsz + (brem if 0 < brem <= bsz else bsz)
    return method, bsz, blktot, brem, bno, offset, length, filesize


def input_file(sample, path: str):
    """The inputs.files entry a message path refers to (also for '<name>.<suffix>.Part')."""
    rel = path.lstrip("/")
    for f in sample.get("inputs", {}).get("files", []):
        if rel == f["relpath"] or (rel.startswith(f["relpath"] + ".") and rel.endswith(".Part")):
            return f
    return None


def file_size(f):
    if "size" in f:
        return f["size"]
    return len((f.get("content") or f.get("content_when_posted")).encode("utf-8"))


def file_contents(f):
    """All plausible contents of an input file (the mismatch sample has two)."""
    if "size" in f:
        return [_BIG[:f["size"]]]
    return [f[k].encode("utf-8") for k in ("content", "content_when_posted", "content_when_downloaded") if k in f]


# ---------------------------------------------------------------- sanity of the sample set

def test_sample_set_is_complete():
    assert len(SAMPLES) >= 36
    assert sum(len(s["messages"]) for s in SAMPLES.values()) >= 127
    for name, s in SAMPLES.items():
        for m in s["messages"] + s.get("input_posts", []):
            assert list(m["header_types"]) == list(m["headers"]), name
            assert m["body_bytes"] == len(m["body"].encode("utf-8")), name
            if "body_hex" in m:
                assert bytes.fromhex(m["body_hex"]) == m["body"].encode("utf-8")
        if "routing_key_utf8_hex" in s:
            assert bytes.fromhex(s["routing_key_utf8_hex"]) == s["messages"][0]["routing_key"].encode()


# ---------------------------------------------------------------- decode every message

@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
@pytest.mark.parametrize("entry", ALL_MESSAGES, ids=_id)
def test_decode(entry, as_bytes):
    name, section, i = entry
    sample = SAMPLES[name]
    m = sample[section][i]
    rk, body, headers = m["routing_key"], m["body"], dict(m["headers"])
    if as_bytes:   # a client that hands over raw bytes everywhere
        rk, body = rk.encode("utf-8"), body.encode("utf-8")
        headers = {k: v.encode("utf-8") for k, v in headers.items()}
    msg = decode(rk, body, headers, m["exchange"])

    fields = m["body"].split(" ")
    assert msg.topic == m["routing_key"]
    assert msg.exchange == m["exchange"]
    assert msg.pubtime == fields[0]
    assert msg.baseurl == fields[1]
    assert msg.relpath == fields[2]              # still escaped, as on the wire
    assert msg.path == unescape_ref(fields[2])
    assert msg.url == fields[1] + fields[2]      # plain concatenation, '//' kept
    assert msg.headers == m["headers"]
    assert list(msg.headers) == list(m["headers"])
    assert abs(msg.pubtime_epoch - _epoch(fields[0])) < 1e-6

    # the path against the inputs: v2 keeps a leading '/', sr3 does not
    f = input_file(sample, msg.path)
    if f is not None and not msg.path.endswith(".Part"):
        assert msg.path == ("" if name.startswith("sr3_") else "/") + f["relpath"]
    if name == "v2_post_special_chars.json":
        assert msg.path == "/dir a#b+c é日本/name x#y+z é日本.txt"

    # kind and report fields
    if len(fields) == 7:
        assert msg.kind == "report"
        assert msg.report.code == int(fields[3])
        assert msg.report.host == fields[4]
        assert msg.report.user == fields[5]
        assert msg.report.duration == float(fields[6])
        assert "message" in msg.headers
    else:
        assert len(fields) == 3
        assert msg.kind == "post"
        assert msg.report is None

    # sum
    algo, _, value = m["headers"]["sum"].partition(",")
    assert msg.sum.algo == algo
    assert msg.sum.value == value
    _check_sum_value(name, sample, msg, algo, value)

    # parts
    if "parts" in m["headers"]:
        method, bsz, blktot, brem, bno, offset, length, filesize = parts_ref(m["headers"]["parts"])
        p = msg.parts
        assert (p.method, p.bsz, p.blktot, p.brem, p.bno) == (method, bsz, blktot, brem, bno)
        assert (p.offset, p.length, p.filesize) == (offset, length, filesize)
        assert p.last == (method == "1" or bno == blktot - 1)
        assert str(p) == m["headers"]["parts"]
        if f is not None:
            size = file_size(f)
            trusted = not name.startswith("sr3_") or p.last   # sr3: brem is this block's length
            if trusted:
                assert p.filesize == size
            assert p.offset + p.length <= size
        if name.startswith("v2_") and method != "1" and p.last:
            # exact multiple: the last block is a full block, never an empty 11th one
            assert p.length == (brem or bsz)
    else:
        assert algo in ("R", "L")
        assert msg.parts is None


def _epoch(text):
    whole, _, frac = text.partition(".")
    return calendar.timegm(tuple(int(x) for x in (whole[:4], whole[4:6], whole[6:8], whole[8:10],
                                                    whole[10:12], whole[12:14])) + (0, 0, 0)) \
        + (float("0." + frac) if frac else 0.0)


def _check_sum_value(name, sample, msg, algo, value):
    """The sum value of every sample against data we know (computed with hashlib here)."""
    base = msg.path.rsplit("/", 1)[-1]
    if algo in ("d", "s"):
        f = input_file(sample, msg.path)
        if f is None or (name.startswith("sr3_") and msg.parts and not msg.parts.whole):
            return   # unknown content, or sr3 block sums (they match no byte range)
        _, _, _, _, _, offset, length, _ = parts_ref(msg.headers["parts"])
        h = hashlib.md5 if algo == "d" else hashlib.sha512
        want = {h(data[offset:offset + length]).hexdigest() for data in file_contents(f)}
        assert value in want
    elif algo == "n":
        # bare 'n' is the v2 quirk for partitioned posts (sample v2_post_parts_bare_sum_n_0)
        assert value == hashlib.md5(base.encode()).hexdigest() or \
            (value == "" and name == "v2_post_parts_bare_sum_n_0.json")
    elif algo == "0":
        assert re.fullmatch(r"\d{4}", value) or (value == "" and name == "v2_post_parts_bare_sum_n_0.json")
    elif algo == "z":
        assert value in ("d", "s")
    elif algo == "R":
        assert value == hashlib.sha512(base.encode()).hexdigest()
    elif algo == "L":
        if "link" in msg.headers:   # sr3 sends no link header
            assert value == hashlib.sha512(msg.headers["link"].encode()).hexdigest()
    else:
        pytest.fail(f"unexpected sum {algo!r} in {name}")


# ---------------------------------------------------------------- re-encode byte for byte

@pytest.mark.parametrize("entry", ALL_MESSAGES, ids=_id)
def test_reencode_is_byte_identical(entry):
    name, section, i = entry
    m = SAMPLES[name][section][i]
    msg = decode(m["routing_key"], m["body"].encode("utf-8"), dict(m["headers"]), m["exchange"])
    rk, body, headers = msg.encode()
    assert rk == m["routing_key"]
    assert rk.encode("utf-8") == m["routing_key"].encode("utf-8")
    assert body == m["body"]
    assert body.encode("utf-8") == bytes.fromhex(m["body_hex"]) if "body_hex" in m else True
    assert len(body.encode("utf-8")) == m["body_bytes"]
    assert not body.endswith("\n")
    assert list(headers.items()) == list(m["headers"].items())
    assert all(isinstance(v, str) for v in headers.values())   # every v02 header is an 'S'
    # and the copy is independent of the decoded message
    c = msg.copy()
    c.headers["extra"] = "x"
    assert "extra" not in msg.headers


# ---------------------------------------------------------------- encode from inputs

POST_SAMPLES = sorted(n for n in SAMPLES if n.startswith(("v2_post_", "v2_watch_")))

#: samples whose events are described in the 'case' text rather than in inputs.files
EVENTS = {
    "v2_post_symlink.json": [("symlink", "postlink", "sub/dir/nested.txt")],
    "v2_watch_symlink.json": [("symlink", "watched/link1", "file1.txt"),
                              ("symlink", "watched/sub/toplink", "../../top.txt")],
    "v2_watch_remove.json": [("remove", "watched/renamed.txt"), ("remove", "watched/link1")],
    "v2_watch_rename.json": [("rename", "watched/file1.txt", "watched/renamed.txt")],
    # the same partitioned file posted with 'sum n' then 'sum 0'
    "v2_post_parts_bare_sum_n_0.json": [("post", "big/ten_million.bin", "n"),
                                        ("post", "big/ten_million.bin", "0")],
}

_MTIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")


def _mtime_ns(text):
    m = _MTIME_RE.match(text)
    assert m, text
    secs = calendar.timegm(tuple(int(x) for x in m.groups()[:6]) + (0, 0, 0))
    return secs * 10**9 + int((m.group(7) or "0").ljust(9, "0"))


def _sum_option(sample):
    for line in sample.get("config") or []:
        if line.startswith("sum "):
            return line.split()[1]
    if "sum" in sample.get("inputs", {}):
        return sample["inputs"]["sum"].split()[0]
    return "d"


def _blocksize(sample):
    text = sample.get("inputs", {}).get("blocksize")
    if not text:
        return PostOptions(post_base_url="x").blocksize   # the poster's default
    m = re.search(r"\(=(\d+)\)", text)
    if m:
        return int(m.group(1))
    m = re.fullmatch(r"(\d+)([KMG]?)", text.split()[0])
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def _varying_headers(sample):
    out = set()
    for v in sample["varies"]:
        m = re.match(r"headers\.(\w+)", v)
        if m:
            out.add(m.group(1))
    return out


def _make_files(src: Path, sample):
    first = sample["messages"][0]["headers"]
    for f in sample["inputs"].get("files", []):
        path = src / f["relpath"]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = big_content(f["size"]) if "size" in f else f["content"].encode("utf-8")
        path.write_bytes(data)
        os.chmod(path, int(f.get("mode", "644"), 8))
        if "mtime_set" in f:
            ns = _mtime_ns(f["mtime_set"])
        elif "mtime" not in _varying_headers(sample) and "mtime" in first:
            ns = int(round(parse_time(first["mtime"]) * 1e9))   # fixed value not stated in inputs
        else:
            ns = None    # mtime varies: we copy the sample's value after a format check
        if ns is not None:
            os.utime(path, ns=(ns, ns))


def test_post_samples_all_covered():
    covered = set(POST_SAMPLES)
    assert {n for n in SAMPLES if re.match(r"v2_(post|watch)_", n)} == covered
    for name, events in EVENTS.items():
        for ev in events:
            for word in ev[1:]:
                if name != "v2_post_parts_bare_sum_n_0.json":
                    assert word in SAMPLES[name]["case"], (name, word)


@pytest.mark.parametrize("name", POST_SAMPLES, ids=lambda n: n[:-5])
def test_encode_from_inputs(name, tmp_path):
    sample = SAMPLES[name]
    src = tmp_path / "src"
    src.mkdir()
    _make_files(src, sample)
    inputs = sample["inputs"]
    opts = PostOptions(post_base_url=inputs["post_base_url"], post_base_dir=str(src),
                       to_clusters="127.0.0.1", sum=_sum_option(sample),
                       blocksize=_blocksize(sample), use_xattr=False)
    wanted = sample["messages"]
    pubtimes = iter([m["body"].split(" ")[0] for m in wanted])
    events = EVENTS.get(name) or [("post", f["relpath"]) for f in inputs["files"]]

    ours = []
    for ev in events:
        kind = ev[0]
        if kind == "post":
            if len(ev) > 2:
                opts.sum = ev[2]
            path = src / ev[1]
            n = len(checksum.plan_parts(path.stat().st_size, opts.blocksize))
            pt = next(pubtimes)
            for _ in range(n - 1):
                assert next(pubtimes) == pt       # the sample agrees: one pubtime per file
            ours += posts_for_path(str(path), opts, pubtime=pt)
        elif kind == "symlink":
            path = src / ev[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(ev[2], path)
            ours += posts_for_path(str(path), opts, pubtime=next(pubtimes))
        elif kind == "remove":
            ours.append(remove_post(str(src / ev[1]), opts, pubtime=next(pubtimes)))
        elif kind == "rename":
            old, new = src / ev[1], src / ev[2]
            ours.append(remove_post(str(old), opts, newname=relpath_of(str(new), str(src)),
                                    pubtime=next(pubtimes)))
            ours += file_posts(str(new), opts, pubtime=next(pubtimes),
                               oldname=relpath_of(str(old), str(src)))
    assert len(ours) == len(wanted)

    varying = _varying_headers(sample)
    for k, (msg, want) in enumerate(zip(ours, wanted)):
        rk, body, headers = msg.encode()
        assert rk == want["routing_key"], k
        assert body == want["body"], k
        headers = dict(headers)
        for h in varying:
            if h == "sum":
                assert re.fullmatch(r"0,\d{4}", headers["sum"]), headers["sum"]
            elif h in ("atime", "mtime") and h in headers:
                assert parse_time(headers[h]) > 0
                assert message.format_time(parse_time(headers[h])) == headers[h]
            if h in want["headers"] and h in headers:
                headers[h] = want["headers"][h]
        if name == "v2_post_parts_bare_sum_n_0.json":
            # Reference BUG recorded by this sample: v2 emits the bare flag (sum=n / sum=0) on
            # partitioned posts.  We must always emit '<algo>,<value>'.
            assert want["headers"]["sum"] in ("n", "0")
            if want["headers"]["sum"] == "n":
                assert headers["sum"] == "n," + hashlib.md5(b"ten_million.bin").hexdigest()
            else:
                assert re.fullmatch(r"0,\d{4}", headers["sum"])
            headers["sum"] = want["headers"]["sum"]
            # ... while the decoder accepts the bare form
            assert decode(want["routing_key"], want["body"], want["headers"]).sum.value == ""
        assert list(headers.items()) == list(want["headers"].items()), k


# ---------------------------------------------------------------- reports

REPORT_MESSAGES = [(n, i) for n, s in SAMPLES.items() if n.startswith("v2_report_")
                   for i in range(len(s["messages"]))]


def _report_parts(m):
    f = m["body"].split(" ")
    return f[:3], int(f[3]), f[4], f[5], float(f[6])


def _check_report(ours, want):
    rk, body, headers = ours.encode()
    assert body == want["body"]
    assert list(headers.items()) == list(want["headers"].items())
    words = want["routing_key"].split(".")
    if words[1] == "post":
        # reference BUG (root-level post): v2 kept 'v02.post'; we replace the second word
        words[1] = "report"
        assert rk == ".".join(words)
        assert rk.split(".")[:2] == ["v02", "report"]
    else:
        assert rk == want["routing_key"]
    again = decode(rk, body, headers)
    assert again.kind == "report"


@pytest.mark.parametrize("entry", REPORT_MESSAGES, ids=lambda e: f"{e[0][:-5]}:{e[1]}")
def test_report_from_reconstructed_post(entry):
    """Remove the 4 report fields and 'message' from the report, then to_report() it again."""
    name, i = entry
    want = SAMPLES[name]["messages"][i]
    post_fields, code, host, user, duration = _report_parts(want)
    words = want["routing_key"].split(".")
    words[1] = "post"
    headers = {k: v for k, v in want["headers"].items() if k != "message"}
    post = decode(".".join(words), " ".join(post_fields), headers, want["exchange"])
    assert post.kind == "post"
    ours = post.to_report(code, want["headers"]["message"], host, user, duration)
    assert ours.kind == "report" and ours.report.code == code
    _check_report(ours, want)


@pytest.mark.parametrize("entry", REPORT_MESSAGES, ids=lambda e: f"{e[0][:-5]}:{e[1]}")
def test_report_from_input_post(entry):
    """The consumed post (input_posts) plus what the consumer filled in gives the report."""
    name, i = entry
    sample = SAMPLES[name]
    want = sample["messages"][i]
    post_fields, code, host, user, duration = _report_parts(want)
    matching = [p for p in sample["input_posts"] if p["body"] == " ".join(post_fields)
                and p["headers"].get("parts") == want["headers"].get("parts")]
    if not matching:
        # sr_sarra's second report is about its own re-post (pump baseurl): no input post
        assert want["headers"]["message"] == "Published"
        return
    src = matching[0]
    post = decode(src["routing_key"], src["body"], dict(src["headers"]), src["exchange"])
    assert "message" not in post.headers
    # filled in by the consumer on receipt: source/from_cluster when absent, and after a
    # checksum mismatch the recomputed sum (reports.md §2)
    for k in ("source", "from_cluster"):
        if k not in post.headers:
            post.headers[k] = want["headers"][k]
    post.headers["sum"] = want["headers"]["sum"]
    post.headers["content"] = '{"encoding": "utf-8", "value": "x"}'   # never in a report
    ours = post.to_report(code, want["headers"]["message"], host, user, duration)
    _check_report(ours, want)
    assert "content" not in ours.headers


def test_report_samples_have_reports_and_inputs():
    assert len(REPORT_MESSAGES) == 15
    for name in {n for n, _ in REPORT_MESSAGES}:
        assert SAMPLES[name]["input_posts"]


# ---------------------------------------------------------------- sarra / winnow re-posts

@pytest.mark.parametrize("name", ["v2_sarra_repost.json", "v2_sarra_inplace_repost.json",
                                  "v2_winnow.json"])
def test_pump_repost_from_input(name):
    """Output = first matching input with the pump's baseurl and source/from_cluster appended."""
    sample = SAMPLES[name]
    for want in sample["messages"]:
        out = decode(want["routing_key"], want["body"], want["headers"], want["exchange"])
        ins = [decode(p["routing_key"], p["body"], p["headers"], p["exchange"])
               for p in sample["input_posts"]]
        src = next(p for p in ins if p.pubtime == out.pubtime and p.relpath == out.relpath
                   and p.headers["sum"] == out.headers["sum"] and p.headers.get("parts") == out.headers.get("parts"))
        ours = src.copy()
        ours.baseurl = out.baseurl
        for k in ("source", "from_cluster"):
            ours.headers.setdefault(k, want["headers"][k])
        assert src.headers.get("source") is None       # the copy did not touch the input
        assert ours.encode() == (want["routing_key"], want["body"], want["headers"])
        assert list(ours.encode()[2]) == list(want["headers"])


def test_sarra_part_file_reposts():
    """inplace off: each block becomes '<name><suffix>' with method p (sample v2_sarra_repost_parts)."""
    sample = SAMPLES["v2_sarra_repost_parts.json"]
    ins = [decode(p["routing_key"], p["body"], p["headers"]) for p in sample["input_posts"]]
    got_blocks = set()
    for want in sample["messages"]:
        out = decode(want["routing_key"], want["body"], want["headers"])
        parsed = checksum.parse_part_suffix(out.path.rsplit("/", 1)[-1])
        assert parsed is not None
        target, p, algo = parsed
        assert str(p) == out.headers["parts"] and p.method == "p"
        assert algo == out.sum.algo
        src = next(m for m in ins if m.relpath + m.parts.suffix(algo) == out.relpath)
        assert (src.parts.bsz, src.parts.blktot, src.parts.brem, src.parts.bno) == \
            (p.bsz, p.blktot, p.brem, p.bno)
        ours = src.copy()
        ours.baseurl = out.baseurl
        ours.relpath = src.relpath + src.parts.suffix(algo)
        ours.headers["parts"] = str(checksum.Parts("p", p.bsz, p.blktot, p.brem, p.bno))
        for k in ("mtime", "atime"):          # the pump's own file times (vary)
            ours.headers[k] = out.headers[k]
        for k in ("source", "from_cluster"):
            ours.headers.setdefault(k, out.headers[k])
        assert ours.encode() == (want["routing_key"], want["body"], want["headers"])
        got_blocks.add((target, p.bno))
    # the reference lost the last block of the exact-multiple file (zero-length Range bug)
    assert ("ten_mib.bin", 9) not in got_blocks
    assert ("ten_million.bin", 9) in got_blocks
    assert len(got_blocks) == 19


def test_sr3_quirks_parse():
    """sr3 v02: raw space in the topic, no leading '/', brem == bsz on non-last blocks."""
    m = SAMPLES["sr3_v02_post_special_chars.json"]["messages"][0]
    msg = decode(m["routing_key"], m["body"], m["headers"])
    assert " " in msg.topic
    assert msg.path == "dir a#b+c é日本/name x#y+z é日本.txt"
    parts = [decode(x["routing_key"], x["body"], x["headers"]).parts
             for x in SAMPLES["sr3_v02_post_parts_10485760_bs1M.json"]["messages"]]
    assert [p.length for p in parts] == [1000000] * 10 + [485760]
    assert parts[-1].filesize == 10485760
    assert sum(p.length for p in parts) == 10485760
    parts = [decode(x["routing_key"], x["body"], x["headers"]).parts
             for x in SAMPLES["sr3_v02_post_parts_10000000_bs1M.json"]["messages"]]
    assert all(p.length == 1000000 for p in parts)       # brem == bsz treated like 0
    assert parts[-1].filesize == 10000000
    assert [p.offset for p in parts] == [k * 1000000 for k in range(10)]


def test_v2_block_ranges_cover_the_file():
    for name, size in (("v2_post_parts_10000000_bs1M.json", 10000000),
                       ("v2_post_parts_10485760_bs1M.json", 10485760)):
        parts = [decode(x["routing_key"], x["body"], x["headers"]).parts for x in SAMPLES[name]["messages"]]
        assert [p.offset for p in parts] == [k * 1048576 for k in range(10)]
        assert sum(p.length for p in parts) == size
        assert all(p.filesize == size for p in parts)
        assert [str(p) for p in checksum.plan_parts(size, 1048576)] == \
            [x["headers"]["parts"] for x in SAMPLES[name]["messages"]]


def test_decoder_rejects_sample_without_sum():
    m = SAMPLES["v2_post_sum_d.json"]["messages"][0]
    headers = {k: v for k, v in m["headers"].items() if k != "sum"}
    with pytest.raises(MessageError) as e:
        decode(m["routing_key"], m["body"], headers)
    assert e.value.field == "header sum"
