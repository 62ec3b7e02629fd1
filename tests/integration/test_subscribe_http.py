"""The consumers' HTTP fast path (sarra/transfer/http.py, HttpTransfer) against real servers on loopback:
one kept-alive connection, ranges, servers that ignore Range or drop the connection, 404,
authentication, and the hand-over to requests for redirects and proxies."""

import hashlib

import pytest

from sarra.transfer.http import HttpTransfer
from sarra.transfer import TransferError
from tests.integration import servers
from tests.integration.subkit import stub_http  # noqa: F401  (fixture)

DATA = bytes(range(256)) * 40          # 10,240 bytes


@pytest.fixture
def drv():
    d = HttpTransfer(timeout=10)
    try:
        yield d
    finally:
        d.close()


def test_many_gets_one_connection_with_ranges(stub_http, drv, tmp_path):
    stub = stub_http
    stub.files["/f.bin"] = DATA
    out = tmp_path / "o"
    for _ in range(20):
        assert drv.get(stub.url + "f.bin", str(out)) == len(DATA)
    assert out.read_bytes() == DATA
    h = hashlib.md5()

    class Hasher:
        def update(self, b):
            h.update(b)

    assert drv.get(stub.url + "f.bin", str(out), offset=1000, length=2000, hasher=Hasher()) == 2000
    assert out.read_bytes() == DATA[1000:3000]
    assert h.hexdigest() == hashlib.md5(DATA[1000:3000]).hexdigest()
    assert stub.headers["range"] == "bytes=1000-2999"
    # a block written in place at its offset of a bigger file
    big = tmp_path / "big"
    big.write_bytes(b"\0" * len(DATA))
    drv.get(stub.url + "f.bin", str(big), offset=5000, length=100, write_offset=5000)
    assert big.read_bytes()[5000:5100] == DATA[5000:5100]
    with pytest.raises(TransferError) as e:
        drv.get(stub.url + "missing", str(out))
    assert e.value.code == 404 and "missing" in str(e.value)
    assert drv.get(stub.url + "f.bin", str(out), length=0) == 0
    assert stub.connections == 1                  # 25 requests, 404 included, one connection
    assert stub.headers["accept-encoding"] == "identity"


def test_server_ignoring_range_and_dropping_connections(stub_http, drv, tmp_path):
    stub = stub_http
    stub.files["/f.bin"] = DATA
    out = tmp_path / "o"
    stub.ignore_range = True                      # 200 with the whole body
    assert drv.get(stub.url + "f.bin", str(out), offset=300, length=50) == 50
    assert out.read_bytes() == DATA[300:350]
    assert drv.get(stub.url + "f.bin", str(out)) == len(DATA)   # next one on a new connection
    stub.ignore_range = False
    stub.close_after = True                       # the server closes every kept-alive connection
    for _ in range(5):
        assert drv.get(stub.url + "f.bin", str(out)) == len(DATA)
    assert out.read_bytes() == DATA
    stub.close_after = False
    stub.short.add("/f.bin")                      # the body stops half-way
    with pytest.raises(TransferError) as e:
        drv.get(stub.url + "f.bin", str(out))
    assert e.value.code == 499 and "f.bin" in str(e.value)
    stub.short.clear()
    assert drv.get(stub.url + "f.bin", str(out)) == len(DATA)
    stub.chunked.add("/f.bin")                    # chunked body, a folded header line
    for _ in range(3):
        assert drv.get(stub.url + "f.bin", str(out)) == len(DATA)
        assert out.read_bytes() == DATA
    assert drv.get(stub.url + "f.bin", str(out), offset=100, length=10) == 10
    assert out.read_bytes() == DATA[100:110]


def test_escaped_names_and_redirects(stub_http, drv, tmp_path):
    stub = stub_http
    stub.files["/dir #1/é x.txt"] = b"odd name"
    out = tmp_path / "o"
    # v02 relpaths carry %20 and %23; the rest (here the accent) is quoted on the wire
    assert drv.get(stub.url + "dir%20%231/é%20x.txt", str(out)) == 8
    assert stub.requests[-1] == "/dir%20%231/%C3%A9%20x.txt"
    stub.files["/target.txt"] = b"moved here"
    stub.redirects["/old.txt"] = stub.url + "target.txt"
    assert drv.get(stub.url + "old.txt", str(out)) == 10       # requests follows it
    assert out.read_bytes() == b"moved here"


def test_basic_auth_from_credentials(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "secret.txt").write_bytes(b"for alice only")
    srv = servers.start_http(root, tmp_path, auth=("alice", "s3cret"))
    try:
        url = f"http://alice@127.0.0.1:{srv.port}/secret.txt"
        with HttpTransfer(credentials={"user": "alice", "password": "s3cret"},
                                   timeout=10) as d:
            assert d.get(url, str(tmp_path / "o")) == 14
        with HttpTransfer(credentials={"user": "alice", "password": "wrong"},
                                   timeout=10) as d:
            with pytest.raises(TransferError) as e:
                d.get(url, str(tmp_path / "o"))
        assert e.value.code == 499 and "401" in str(e.value)
        assert "wrong" not in str(e.value) and "s3cret" not in str(e.value)
    finally:
        srv.stop()


def test_proxy_in_the_environment_goes_through_requests(stub_http, tmp_path, monkeypatch):
    stub = stub_http
    stub.files["/f"] = b"x"
    dead = servers.free_port()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead}")
    with HttpTransfer(timeout=5) as d:
        with pytest.raises(TransferError) as e:       # requests tried the (dead) proxy
            d.get(stub.url + "f", str(tmp_path / "o"))
    assert "cannot connect" in str(e.value)
    assert stub.requests == []


def test_header_parser():
    import io

    from sarra.transfer.http import _read_headers
    fp = io.BytesIO(b"Content-Length: 5\r\nX-A: 1\r\nx-a: 2\r\nFold: a\r\n\tb\r\nbad line\r\n"
                    b"\r\nbody")
    h = _read_headers(fp)
    assert h.get("CONTENT-LENGTH") == "5" and h.get("x-a") == "1, 2" and h["fold"] == "a b"
    assert h.get_all("missing") is None and h.get_all("x-a") == ["1, 2"]
    assert fp.read() == b"body"
