#!/usr/bin/env python3
"""sr_sender pushing one big file over sftp, next to scp of the same file (the limit).

    python bench/sender_sftp.py [--mib 1024] [--runs 3] [--parts]

A private OpenSSH sshd on loopback (tests/integration/servers.py: its own host and client
keys, internal-sftp rooted in a temporary directory) receives, in the same run:

* scp (OpenSSH 9: the SFTP protocol) of the file: wall time of the command;
* `sr_sender foreground` (already connected to the broker and bound): the file is
  announced (sarra.flow.poster, one whole-file post; --parts: 64 MiB blocks, sent as blocks),
  and the time runs from the announcement to the file's final name at full size on the
  server (inflight .tmp renamed; with --parts every block written).

Files live in /dev/shm when it exists. MB/s = 1e6 bytes/s; medians of --runs runs.
Target: sr_sender >= 70 % of scp.
"""

import argparse
import getpass
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (also puts the repository on sys.path)

TARGET = 0.70


def make_file(path: Path, mib: int):
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(chunk[:-8] + i.to_bytes(8, "big"))


def wait_size(path: Path, size: int, timeout: float, proc=None) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.stat().st_size == size:
                return time.time()
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            raise SystemExit("sr_sender exited with %s" % proc.returncode)
        time.sleep(0.005)
    raise SystemExit("sender_sftp: %s did not reach %d bytes in %ds" % (path, size, timeout))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parts", action="store_true", help="announce 64 MiB blocks")
    args = ap.parse_args(argv)

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    base = Path(tempfile.mkdtemp(prefix="sarra-bench-sender-", dir=shm))
    home = base / "home"
    for d in (".config/sarra/sender", ".cache"):
        (home / d).mkdir(parents=True)
    os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                      XDG_CACHE_HOME=str(home / ".cache"))
    from sarra.broker.client import Broker
    from sarra.flow.poster import PostOptions, posts_for_path
    from tests.integration import servers
    from tests.conftest import command_argv, command_env

    root, work, src = base / "root", base / "ssh", base / "src"
    for d in (root, work, src):
        d.mkdir()
    user = getpass.getuser()
    sshd, key, _ = servers.start_sshd(root.resolve(), work, user)
    uid = uuid.uuid4().hex[:8]
    broker = common.broker_url()
    exchange = "xs_guest_sndbench%s" % uid
    b = Broker(broker, reconnect=False)
    b.connect()
    b.declare_exchange(exchange, durable=False)
    proc = None
    try:
        big = src / "big.bin"
        make_file(big, args.mib)
        size = big.stat().st_size
        host = "%s@127.0.0.1:%d" % (user, sshd.port)
        (home / ".config/sarra/credentials.conf").write_text(
            "sftp://%s ssh_keyfile=%s\n" % (host, key))
        os.chmod(home / ".config/sarra/credentials.conf", 0o600)
        (home / ".config/sarra/sender/bench.conf").write_text("\n".join([
            "broker %s" % broker, "exchange %s" % exchange, "expire 5m",
            "destination sftp://%s/" % host, "directory sent", "base_dir %s" % src,
            "report_back off", "accept .*", ""]))
        log = open(base / "sender.log", "wb")
        proc = subprocess.Popen(command_argv("sr_sender") + ["foreground", "bench"],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env=command_env(), cwd=str(home), start_new_session=True)
        deadline = time.monotonic() + 30
        while " started, queue " not in (base / "sender.log").read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("sr_sender did not start:\n" + (base / "sender.log").read_text())
            time.sleep(0.05)
        opts = PostOptions(post_base_url="http://pump.invalid/", post_base_dir=str(src),
                           blocksize=(64 << 20) if args.parts else (size + 1), use_xattr=False)
        msgs = posts_for_path(str(big), opts)
        scp_rates, snd_rates = [], []
        for k in range(args.runs):
            dest = root / "scp.bin"
            t0 = time.time()
            r = subprocess.run(["scp", "-q", "-i", str(key), "-P", str(sshd.port),
                                "-o", "StrictHostKeyChecking=no",
                                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                                str(big), "%s@127.0.0.1:scp.bin" % user],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
            t1 = time.time()
            if r.returncode != 0 or dest.stat().st_size != size:
                raise SystemExit("scp failed: %s" % r.stderr.strip())
            scp_rates.append(size / (t1 - t0) / 1e6)
            dest.unlink()
            sent = root / "sent" / "big.bin"
            if sent.exists():
                sent.unlink()
            t0 = time.time()
            for m in msgs:
                topic, body, headers = m.encode()
                b.publish(exchange, topic, body, headers)
            b.wait_confirms()
            if args.parts:
                # blocks are written in place: done when the last block's log line is there
                want = len(msgs) * (k + 1)
                while (base / "sender.log").read_text().count("downloaded ") < want:
                    if proc.poll() is not None:
                        raise SystemExit("sr_sender exited")
                    time.sleep(0.005)
                t1 = time.time()
            else:
                t1 = wait_size(sent, size, 600, proc)
            snd_rates.append(size / (t1 - t0) / 1e6)
            print("run %d: scp %7.1f MB/s, sr_sender %7.1f MB/s" % (k + 1, scp_rates[-1],
                                                                  snd_rates[-1]), flush=True)
        m = statistics.median
        common.ratio_line("sr_sender sftp %d MiB%s" % (args.mib, " (64 MiB parts)"
                                                       if args.parts else ""),
                          m(snd_rates), m(scp_rates), "MB/s", TARGET)
        sessions = (work / "sshd.log").read_text(errors="replace").count("Accepted publickey")
        print("ssh sessions: %d (scp: %d, sr_sender: %d)" % (sessions, args.runs,
                                                              sessions - args.runs))
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(command_argv("sr_sender") + ["cleanup", "bench"], env=command_env(),
                       cwd=str(home), capture_output=True, stdin=subprocess.DEVNULL)
        try:
            b.delete_exchange(exchange)
        finally:
            b.close()
        sshd.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
