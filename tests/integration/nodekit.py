"""Helpers of the pump-node tests (issue 24): tests/integration/test_pump_nodes.py and
tests/cluster/test_pump_nodes_cluster.py. Two "hosts" on this machine, trees published
to a subscriber's exchange, on_file counts, the posts a tap received."""


import collections
import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from sarra import checksum, message
from tests.conftest import command_argv, command_env
from tests.integration.subkit import (  # noqa: F401  (fixtures)
    make_tree, md5, sub_env, wait_for)


FILES = 300          # the default suite; SARRA_NODES_FILES=5000 for the figure
SHARES = 8


def _files():
    return int(os.environ.get("SARRA_NODES_FILES", FILES))


def _second_host(env, tmp_path):
    """A second host: its own HOME (the same configuration copied), its own state."""
    home2 = tmp_path / "host2"
    shutil.copytree(env.home / ".config", home2 / ".config")
    return home2


def host_env(home):
    """The environment of a process of the "host" whose HOME is ``home``: the test's
    XDG_* variables point into the first HOME, so they are set to this one's too (its own
    configuration, state and log directories)."""
    h = str(home)
    return command_env({"HOME": h, "XDG_CONFIG_HOME": os.path.join(h, ".config"),
                        "XDG_CACHE_HOME": os.path.join(h, ".cache"),
                        "XDG_DATA_HOME": os.path.join(h, ".local", "share")})


def _run_node(env, home, tag, component="subscribe"):
    log = env.tmp / f"node-{tag}.log"
    fh = open(log, "wb")
    p = subprocess.Popen(command_argv(f"sr_{component}") + ["foreground", env.name],
                         stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                         env=host_env(home), cwd=str(home),
                         start_new_session=True)
    fh.close()
    env.procs.append(p)
    env.logs.append(log)
    return p


def _publish_tree(env, http_server, count, subdirs=30, seed=0):
    sub = f"n{env.uid}"
    tree = make_tree(http_server.root / sub, count, size=200, subdirs=subdirs)
    msgs = []
    for rel in tree:
        data = (http_server.root / sub / rel).read_bytes()
        msgs.append(message.make_post(message.now(), http_server.url, f"/{sub}/{rel}", {
            "sum": "d," + md5(http_server.root / sub / rel), "parts": f"1,{len(data)},1,0,0",
            "mtime": "20240315123456.5", "mode": "644"}))
    random.Random(seed).shuffle(msgs)
    for m in msgs:
        env.publish_msg(m)
    return {f"{sub}/{rel}": d for rel, d in tree.items()}


def _parted_posts(env, http_server, n, size=300_000, bsz=64 << 10):
    """n files in blocks served by http_server: ({rel: md5}, {rel: [its block posts]})."""
    sub = f"p{env.uid}"
    out, posts = {}, {}
    for k in range(n):
        rel = f"{sub}/d{k}/big{k}.bin"
        path = http_server.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        parts = checksum.plan_parts(size, bsz)
        sums = checksum.hash_parts(str(path), "d", parts)
        posts[rel] = [message.make_post(message.now(), http_server.url, "/" + rel, {
            "sum": "d," + s, "parts": str(p), "mtime": "20240315123456.5", "mode": "644"})
            for p, s in zip(parts, sums)]
        out[rel] = md5(path)
    return out, posts


def _publish_parted(env, http_server, n, size=300_000, bsz=64 << 10, seed=1):
    """n files in blocks, each file's blocks shuffled among all; {rel: md5}."""
    out, posts = _parted_posts(env, http_server, n, size, bsz)
    msgs = [m for rel in posts for m in posts[rel]]
    random.Random(seed).shuffle(msgs)
    for m in msgs:
        env.publish_msg(m)
    return out


def _on_file_counts(env):
    counts = collections.Counter(env.on_file_lines())
    return {os.path.relpath(p, env.dst): n for p, n in counts.items()}


def _config(env, prefetch=10, sleep=0.02):
    env.config(extra=f"node_shares {SHARES}\nprefetch {prefetch}\ncount_file_sleep {sleep}\n"
               "mirror on",
               report=False)


def _sarra_config(env, extra):
    """The sub_env's configuration run by sr_sarra, the pump's own component (its source
    checks: the source is the exchange's owner), in .config/sarra/sarra/; report_back off,
    on_file and on_part counted. Declare it with _component_cmd(env, "sarra", "setup")."""
    path = env.config(extra=extra, report=False, count_files="parts")
    d = env.home / ".config" / "sarra" / "sarra"
    d.mkdir(parents=True, exist_ok=True)
    os.replace(path, d / path.name)
    return d / path.name


def _component_cmd(env, component, *args, check=True):
    """`sr_<component> <args> <config>` under the test's HOME."""
    r = subprocess.run(command_argv(f"sr_{component}") + [*map(str, args), env.name],
                       capture_output=True, text=True, timeout=60, env=command_env(),
                       cwd=str(env.home), stdin=subprocess.DEVNULL)
    if check and r.returncode:
        raise AssertionError(f"sr_{component} {args}: {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def _posts(tap, quiet=1.5, by_part=False):
    """relpath (by_part: (relpath, parts header)) -> how many posts of it came out, read
    until quiet."""
    out = collections.Counter()
    while True:
        got = tap.get(1000, timeout=quiet)
        if not got:
            return out
        for _, body, headers in got:
            rel = body.split(" ")[2].lstrip("/")
            if by_part:
                parts = headers.get("parts", "")
                rel = (rel, parts.decode() if isinstance(parts, bytes) else parts)
            out[rel] += 1
