"""The HTTP fast path (sarra/transfer/http.py) reads response headers itself instead of through
http.client's email parser: over many header shapes it must read exactly the bytes the standard
library reads (the body starts at the same byte), give the same values, raise the same errors,
and its response must frame the body as http.client.HTTPResponse does."""

import http.client
import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarra.transfer.http import _read_headers, _Response

BODY = b"0123456789-the-body-and-whatever-follows"


def norm(value):
    """A header value with folding and optional whitespace as HTTP reads them."""
    return re.sub(r"[ \t\r\n]+", " ", value).strip(" ")


def std_headers(data):
    """{lower-case name: values joined by ', '} and the bytes consumed, by http.client."""
    fp = io.BytesIO(data)
    msg = http.client.parse_headers(fp)
    out = {}
    for name in msg.keys():
        out.setdefault(name.lower(), norm(", ".join(norm(v) for v in msg.get_all(name))))
    return out, fp.tell(), msg


def our_headers(data):
    fp = io.BytesIO(data)
    headers = _read_headers(fp)
    return {k: norm(v) for k, v in headers.items()}, fp.tell(), headers


# well-formed shapes (RFC 9112 field lines, obsolete folding included): identical results
SHAPES = [
    b"",
    b"Content-Length: 5\r\n",
    b"content-length:5\r\n",
    b"CONTENT-LENGTH:    5   \r\n",
    b"Content-Length:\t5\t\r\n",
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: CHUNKED\r\nConnection: keep-alive\r\n",
    b"Connection: close\r\n",
    b"Keep-Alive: timeout=5, max=100\r\n",
    b"Proxy-Connection: keep-alive\r\n",
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nset-cookie: c=3\r\n",
    b"Via: 1.1 a\r\nX-Other: y\r\nVia: 1.1 b\r\n",
    b"X-Fold: a\r\n  b\r\n\tc\r\n",
    b"X-Fold: a   \r\n \t b\r\nContent-Length: 3\r\n",
    b"X-Empty:\r\n",
    b"X-Empty:   \r\n",
    b"X-Colons: a:b:c\r\n",
    b"X-Latin1: caf\xe9 \xff\xfe\r\n",
    b"X-Utf8: \xc3\xa9\xe6\x97\xa5\r\n",
    b"Date: Sat, 05 Dec 2026 16:00:00 GMT\r\nETag: \"abc\"\r\n",
    b"Content-Range: bytes 0-4/10\r\nAccept-Ranges: bytes\r\n",
    b"Location: http://127.0.0.1:1/a%20b?x=1#f\r\n",
    b"Content-Length: 5\n",                               # bare LF line ends
    b"A: 1\nB: 2\r\nC: 3\n",
    b"X-Long: " + b"v" * 8000 + b"\r\n",
    b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(99)),   # the most http.client takes
    b"!#$%&'*+-.^_`|~09azAZ: tokens\r\n",
    b"X-Quote: \"a, b\", c\r\n",
]
ENDINGS = [b"\r\n", b"\n"]


def _block(shape, end):
    return shape + end + BODY


@pytest.mark.parametrize("end", ENDINGS, ids=["crlf", "lf"])
@pytest.mark.parametrize("shape", SHAPES, ids=range(len(SHAPES)))
def test_headers_match_the_standard_library(shape, end):
    data = _block(shape, end)
    ours, our_pos, _ = our_headers(data)
    std, std_pos, msg = std_headers(data)
    assert not msg.defects, msg.defects               # the shape is well-formed
    assert our_pos == std_pos, "the body would start at another byte"
    assert data[our_pos:] == BODY
    assert ours == std


def test_a_block_without_its_blank_line_stops_at_eof_like_the_standard_library():
    data = b"Content-Length: 3\r\nX: y\r\n"
    ours, our_pos, _ = our_headers(data)
    std, std_pos, _ = std_headers(data)
    assert (ours, our_pos) == (std, std_pos) == ({"content-length": "3", "x": "y"}, len(data))


@pytest.mark.parametrize("data", [
    b"X-Long: " + b"v" * http.client._MAXLINE + b"\r\n\r\n",
    # http.client counts the blank line: _MAXHEADERS lines in all, 99 fields
    b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(http.client._MAXHEADERS)) + b"\r\n",
    b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(http.client._MAXHEADERS)),
    b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(5000)) + b"\r\n",
], ids=["line-too-long", "one-header-too-many", "too-many-then-eof", "header-flood"])
def test_over_the_limits_both_raise_the_same_error(data):
    with pytest.raises(http.client.HTTPException) as std:
        http.client.parse_headers(io.BytesIO(data))
    with pytest.raises(http.client.HTTPException) as ours:
        _read_headers(io.BytesIO(data))
    assert type(ours.value) is type(std.value)
    assert str(ours.value) == str(std.value)


# malformed shapes where the fast path deliberately reads differently from email.parser; the
# bytes consumed stay the same. Pinned so that a change of either side is noticed.
DIFFERENT = [
    # email.parser drops every header after a line without a colon; the fast path skips it
    (b"NoColon\r\nX: y\r\n", {"x": "y"}, {}),
    # a space before the colon: email.parser gives up on the block; the name is trimmed here
    (b"X : y\r\n", {"x": "y"}, {}),
    # a first line that looks folded: email.parser drops it, the fast path keeps it
    (b" Lead: x\r\nX: y\r\n", {"lead": "x", "x": "y"}, {"x": "y"}),
    # a bare CR inside a line: email.parser splits the line there, the fast path does not
    (b"X: y\rZ: w\r\n", {"x": "y Z: w"}, {"x": "y", "z": "w"}),
]


@pytest.mark.parametrize("shape,ours_expected,std_expected", DIFFERENT,
                         ids=["no-colon", "space-before-colon", "leading-fold", "bare-cr"])
def test_malformed_shapes_pinned(shape, ours_expected, std_expected):
    data = _block(shape, b"\r\n")
    ours, our_pos, _ = our_headers(data)
    std, std_pos, _ = std_headers(data)
    assert our_pos == std_pos and data[our_pos:] == BODY
    assert ours == ours_expected
    assert std == std_expected


def test_duplicate_framing_headers_are_joined_not_first_wins():
    """Two Content-Length fields: http.client takes the first, the fast path joins them,
    which is no number, so the body runs to the end of the connection (never a length a
    second field contradicts)."""
    data = b"Content-Length: 5\r\nContent-Length: 7\r\n\r\n" + BODY
    _, _, headers = our_headers(data)
    assert headers.get("Content-Length") == "5, 7"
    assert http.client.parse_headers(io.BytesIO(data)).get("Content-Length") == "5"


# ------------------------------------------------------------------ the whole response


class _Sock:
    def __init__(self, data):
        self.data = data

    def makefile(self, mode):
        assert mode == "rb"
        return io.BufferedReader(io.BytesIO(self.data))


def _begin(cls, data, method="GET"):
    resp = cls(_Sock(data), method=method)
    resp.begin()
    rest = resp.fp.read() if resp.fp is not None else b""
    return (resp.status, resp.reason, resp.version, resp.length, resp.chunked,
            resp.will_close, rest)


STATUS = [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 206 Partial Content\r\n",
          b"HTTP/1.1 204 No Content\r\n", b"HTTP/1.1 304 Not Modified\r\n",
          b"HTTP/1.1 404 Not Found\r\n", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"]


@pytest.mark.parametrize("status", STATUS, ids=range(len(STATUS)))
@pytest.mark.parametrize("shape", SHAPES[:20], ids=range(20))
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_response_frames_the_body_as_http_client(status, shape, method):
    data = status + shape + b"\r\n" + BODY
    assert _begin(_Response, data, method) == _begin(http.client.HTTPResponse, data, method)


# ------------------------------------------------------------------ generated shapes

_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
                min_size=1, max_size=20)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xff,
                                        blacklist_characters="\x7f"), max_size=40)
_OWS = st.sampled_from(["", " ", "  ", "\t", " \t "])
_FIELD = st.tuples(st.one_of(_NAME, st.sampled_from(
    ["Content-Length", "content-length", "Transfer-Encoding", "Connection", "Keep-Alive"])),
    _OWS, _VALUE, _OWS, st.lists(_VALUE.filter(lambda v: v.strip()), max_size=2),
    st.sampled_from(["\r\n", "\n"]))


def _encode(fields):
    lines = []
    for name, ows1, value, ows2, folds, end in fields:
        line = "%s:%s%s%s%s" % (name, ows1, value, ows2, end)
        for fold in folds:
            line += " %s%s" % (fold, end)
        lines.append(line)
    return "".join(lines).encode("iso-8859-1")


@settings(max_examples=400, deadline=None)
@given(st.lists(_FIELD, max_size=12), st.sampled_from(ENDINGS))
def test_generated_headers_match_the_standard_library(fields, end):
    data = _encode(fields) + end + BODY
    std, std_pos, msg = std_headers(data)
    ours, our_pos, _ = our_headers(data)
    assert our_pos == std_pos
    if not msg.defects:
        assert ours == std
