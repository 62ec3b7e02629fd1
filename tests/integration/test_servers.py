"""The test servers are real and behave as the transfer tests expect."""

import ftplib
import http.client
import io
import os
import socket

import paramiko
import pytest
import requests
import urllib3.connection

from tests.integration import servers


# ------------------------------------------------------------------ HTTP

@pytest.fixture(scope="module")
def http_files(http_server):
    data = bytes(range(256)) * 40  # 10240 bytes
    (http_server.root / "blob.bin").write_bytes(data)
    sub = http_server.root / "dir with space"
    sub.mkdir()
    for i in range(50):
        (sub / ("f%03d.txt" % i)).write_text("file %d\n" % i)
    return data


def test_http_whole_file(http_server, http_files):
    r = requests.get(http_server.url + "blob.bin", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(http_files))
    assert r.content == http_files


def test_http_range_206(http_server, http_files):
    url = http_server.url + "blob.bin"
    r = requests.get(url, headers={"Range": "bytes=100-1123"}, timeout=10)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 100-1123/%d" % len(http_files)
    assert r.content == http_files[100:1124]
    r = requests.get(url, headers={"Range": "bytes=10000-"}, timeout=10)
    assert r.status_code == 206 and r.content == http_files[10000:]
    r = requests.get(url, headers={"Range": "bytes=-5"}, timeout=10)
    assert r.status_code == 206 and r.content == http_files[-5:]
    r = requests.get(url, headers={"Range": "bytes=10000-99999"}, timeout=10)
    assert r.status_code == 206 and r.content == http_files[10000:]


def test_http_unsatisfiable_range_416(http_server, http_files):
    r = requests.get(http_server.url + "blob.bin",
                     headers={"Range": "bytes=%d-" % len(http_files)}, timeout=10)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */%d" % len(http_files)


def test_http_missing_file_404(http_server, http_files):
    r = requests.get(http_server.url + "nope.bin", timeout=10)
    assert r.status_code == 404
    r = requests.get(http_server.url + "nope.bin", headers={"Range": "bytes=0-1"},
                     timeout=10)
    assert r.status_code == 404


def test_http_keepalive_reuses_one_connection(http_server, http_files, monkeypatch):
    connects = []
    real_connect = urllib3.connection.HTTPConnection.connect

    def counting_connect(self):
        connects.append(1)
        return real_connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting_connect)
    with requests.Session() as s:
        for i in range(50):
            url = http_server.url + "dir%%20with%%20space/f%03d.txt" % i
            r = s.get(url, timeout=10)
            assert r.status_code == 200 and r.text == "file %d\n" % i
        r = s.get(http_server.url + "blob.bin", headers={"Range": "bytes=0-9"}, timeout=10)
        assert r.content == http_files[:10]
    assert len(connects) == 1  # 51 requests over one TCP connection


def test_http_same_socket_for_sequential_requests(http_server, http_files):
    conn = http.client.HTTPConnection(http_server.host, http_server.port, timeout=10)
    try:
        conn.request("GET", "/blob.bin")
        first = conn.getresponse()
        assert first.read() == http_files
        sock = conn.sock
        assert sock is not None  # server did not close after the response
        conn.request("HEAD", "/blob.bin")
        head = conn.getresponse()
        head.read()
        assert head.status == 200
        assert conn.sock is sock
    finally:
        conn.close()


def test_http_basic_auth(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "secret.txt").write_text("s3cret\n")
    proc = servers.start_http(tmp_path / "root", tmp_path, auth=("alice", "pw"))
    try:
        url = "http://%s:%d/secret.txt" % (proc.host, proc.port)
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, auth=("alice", "bad"), timeout=10).status_code == 401
        r = requests.get(url, auth=("alice", "pw"), timeout=10)
        assert r.status_code == 200 and r.text == "s3cret\n"
    finally:
        proc.stop()
    assert proc.proc.poll() is not None


# ------------------------------------------------------------------ SFTP

def _sftp(server):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(server.host, port=server.port, username=server.user,
                   key_filename=str(server.keyfile), look_for_keys=False,
                   allow_agent=False, timeout=10)
    return client


def test_sftp_put_get_listdir(sftp_server, tmp_path):
    payload = os.urandom(70000)
    src = tmp_path / "up.bin"
    src.write_bytes(payload)
    client = _sftp(sftp_server)
    try:
        sftp = client.open_sftp()
        assert sftp.normalize(".") == str(sftp_server.root)  # sessions start in root
        sftp.mkdir("incoming")
        sftp.put(str(src), "incoming/up.bin")
        assert sftp.listdir("incoming") == ["up.bin"]
        assert sftp.stat("incoming/up.bin").st_size == len(payload)
        assert (sftp_server.root / "incoming" / "up.bin").read_bytes() == payload
        back = tmp_path / "down.bin"
        sftp.get(str(sftp_server.root / "incoming" / "up.bin"), str(back))
        assert back.read_bytes() == payload
        with sftp.open("incoming/up.bin", "rb") as f:  # ranged read
            f.seek(1000)
            assert f.read(10) == payload[1000:1010]
        sftp.close()
    finally:
        client.close()


def test_sftp_host_key_matches(sftp_server):
    client = _sftp(sftp_server)
    try:
        offered = client.get_transport().get_remote_server_key().get_base64()
    finally:
        client.close()
    assert offered == sftp_server.host_pubkey.read_text().split()[1]


def test_sftp_rejects_other_key(sftp_server, tmp_path):
    servers.make_ssh_keys(tmp_path)  # creates tmp_path/id_ed25519, not authorized
    other = tmp_path / "id_ed25519"
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(sftp_server.host, port=sftp_server.port,
                       username=sftp_server.user, key_filename=str(other),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


# ------------------------------------------------------------------ FTP

def test_ftp_login_upload_download(ftp_server):
    ftp = ftplib.FTP()
    ftp.connect(ftp_server.host, ftp_server.port, timeout=10)
    try:
        ftp.login(ftp_server.user, ftp_server.password)
        ftp.mkd("pub")
        payload = os.urandom(50000)
        ftp.storbinary("STOR pub/data.bin", io.BytesIO(payload))
        assert (ftp_server.root / "pub" / "data.bin").read_bytes() == payload
        assert ftp.nlst("pub") in (["data.bin"], ["pub/data.bin"])
        got = io.BytesIO()
        ftp.retrbinary("RETR pub/data.bin", got.write)
        assert got.getvalue() == payload
        got = io.BytesIO()
        ftp.retrbinary("RETR pub/data.bin", got.write, rest=49990)
        assert got.getvalue() == payload[49990:]
    finally:
        ftp.close()


def test_ftp_bad_password_refused(ftp_server):
    ftp = ftplib.FTP()
    ftp.connect(ftp_server.host, ftp_server.port, timeout=10)
    try:
        with pytest.raises(ftplib.error_perm) as e:
            ftp.login(ftp_server.user, "wrong")
        assert str(e.value).startswith("530")
    finally:
        ftp.close()


# ------------------------------------------------------------------ lifecycle

def test_server_stops_by_pid(tmp_path):
    (tmp_path / "root").mkdir()
    proc = servers.start_ftp(tmp_path / "root", tmp_path, "u", "p")
    assert servers.port_open(proc.host, proc.port)
    proc.stop()
    assert proc.proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection((proc.host, proc.port), timeout=1).close()


# ------------------------------------------------------------------ broker

def test_broker_tap_sees_published_message(amqp_channel, amqp_exchange, amqp_tap, uid):
    import amqp

    exchange = amqp_exchange("xs_guest_test_%s" % uid)
    tap = amqp_tap(exchange, "v02.post.#")
    body = "20240101120000.000 http://example.invalid/ a/b.txt"
    amqp_channel.basic_publish(
        amqp.Message(body, application_headers={"sum": "d,abc"}),
        exchange=exchange, routing_key="v02.post.a")
    amqp_channel.basic_publish(amqp.Message("other"), exchange=exchange,
                               routing_key="v02.report.a")
    assert tap.get(1, timeout=5) == [("v02.post.a", body, {"sum": "d,abc"})]
    assert tap.get(1, timeout=0.3) == []  # the report topic is not bound
