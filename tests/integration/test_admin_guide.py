"""doc/admin-guide.rst, followed in order against the real broker, loses nothing.

The guide's own text is the script: its literal blocks are read in order; a block after a
``.. guide-test file <who> <path>`` comment is a file that <who> writes, and a line of any
other block that starts with a prompt (``#`` root, ``sarra$``, ``alice$``, ``carol$``) is a
command, run by bash as that user (own HOME each; sarra is the admin and the feeder).
Names are made unique to the test (alice -> alice<tag> ...), ``pump.example.org/pump``
becomes the test broker with a fresh vhost, the HTTP URLs the loopback servers below.

Substituted, because they need root or would harm the shared test broker:
* package installation and the ``sarra`` account (apt-get, python3 -m venv, pip, ln,
  adduser): the repository's code is run through small wrappers on PATH;
* ``rabbitmq-plugins enable``: the test broker has the management plugin;
* ``rabbitmqctl add_user/set_user_tags/set_permissions/add_vhost``: the same calls made
  through the management API (as the test broker's admin);
* ``rabbitmqctl delete_user guest``: skipped (the guide marks it destructive; the test
  broker's other users depend on guest);
* nginx (mkdir/chown of /var/www/pump, site files, systemctl) and alice's web server:
  HTTP servers of tests/integration/servers.py on loopback; ``curl -sI`` a HEAD request;
* ``systemctl enable --now sarra``: skipped (the guide's alternative to ``sr start``).

"Linking pumps" runs too: pumps B and C (prompts ``sarra@pumpb$``, ``sarra@pumpc$``, their
subscribers ``dave$`` and ``erin$``) are two more vhosts of the test broker
(``pumpb.example.org/pump`` ...), each with its own HOME, data tree and HTTP server (for
their nginx); their files go to their own HOME and tree. Its "Removing a pump" runs once
the chain of three delivered and reported: C is taken out as the guide says, and what the
guide promises is checked (the link's processes, configurations, queues, account and
exchanges gone on B, A no longer routing to C, A and B still a working pair).
"""

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest
import requests

from tests.conftest import COMMANDS, REPO, parse_broker_url
from tests.integration import servers
from tests.support import guidetext

GUIDE = REPO / "doc" / "admin-guide.rst"
MARK = re.compile(r"^\.\. guide-test file (\w+) (\S+)\s*$")
PROMPT = re.compile(r"^(#|sarra\$|alice\$|carol\$|sarra@pump[bc]\$|dave\$|erin\$) (.*)$")
NAMES = ("bunnymaster", "feeder", "alice", "bob", "carol", "anonymous", "dave", "erin",
         "pumpA", "pumpB", "pumpC")
#: a prompt -> the HOME it runs in; the pumps of "Linking pumps" (their vhost and tree)
WHO = {"sarra@pumpb": "sarrab", "sarra@pumpc": "sarrac"}
PUMPS = {"sarra": "pump", "sarrab": "pumpb", "sarrac": "pumpc"}
#: the heading of the section that takes pump C out of the chain
REMOVAL = "\nRemoving a pump, and mistakes\n"
SKIPPED_ROOT = ("apt-get", "python3", "/opt/sarra/bin/pip", "ln", "adduser",
                "rabbitmq-plugins", "chown", "rm", "systemctl")


# ------------------------------------------------------------------ reading the guide

def literal_blocks(text):
    """[(marker or None, [lines])] of the guide's literal blocks, in order."""
    return guidetext.literal_blocks(text, MARK)


def guide_steps(text):
    """[('file', who, path, content) | ('run', who, command)] in the guide's order."""
    steps = []
    for marker, block in literal_blocks(text):
        if marker:
            steps.append(("file", marker[0], marker[1], "\n".join(block) + "\n"))
            continue
        for line in block:
            m = PROMPT.match(line)
            if m:
                who = "root" if m.group(1) == "#" else m.group(1)[:-1]
                steps.append(("run", WHO.get(who, who), m.group(2).strip()))
    return steps


def test_guide_steps_are_read():
    steps = guide_steps(GUIDE.read_text())
    files = [(s[1], s[2]) for s in steps if s[0] == "file"]
    runs = [(s[1], s[2].split()[0]) for s in steps if s[0] == "run"]
    assert ("sarra", "~/.config/sarra/admin.conf") in files
    assert ("carol", "~/.config/sarra/subscribe/feed.conf") in files
    assert ("sarra", "sr_police") in runs and ("alice", "sr_post") in runs


def test_queues_are_made_before_the_first_post():
    """In the guide's order, the pump's, carol's and alice's report queues are declared
    (setup) before alice's first sr_post."""
    runs = [(s[1], s[2]) for s in guide_steps(GUIDE.read_text()) if s[0] == "run"]
    first_post = next(i for i, (who, c) in enumerate(runs) if c.startswith("sr_post"))
    before = runs[:first_post]
    assert ("sarra", "sr setup") in [(w, c.split("#")[0].strip()) for w, c in before]
    assert any(w == "carol" and c.startswith("sr_subscribe setup") for w, c in before)
    assert any(w == "alice" and c.startswith("sr_report setup") for w, c in before)


# ------------------------------------------------------------------ running it

class Guide:
    def __init__(self, tmp, broker_url, tag, sftp=None):
        host, port, admin, admin_pw, _ = parse_broker_url(broker_url)
        self.sftp = sftp            # alice's SFTP server of the data-less pump (S=0)
        self.tmp, self.tag = tmp, tag
        self.amqp = "%s:%d" % (host, port)
        self.mgmt = os.environ.get("SARRA_TEST_MGMT", "http://%s:15672/" % host)
        self.api = self.mgmt + "api/"
        self.session = requests.Session()
        self.session.auth = (admin, admin_pw)
        self.homes = {w: tmp / ("home_" + w) for w in ("sarra", "alice", "carol", "sarrab",
                                                       "sarrac", "dave", "erin")}
        self.vhosts = {host: "sarra_guide_%s_%s" % (tag, host) for host in PUMPS.values()}
        self.vhosts["pump"] = self.vhost = "sarra_guide_%s" % tag
        self.trees = {host: tmp / "www" / host for host in PUMPS.values()}
        for h in self.homes.values():
            (h / ".config" / "sarra").mkdir(parents=True)
        self.tree = tmp / "www" / "pump"
        self.alice_out = self.homes["alice"] / "out"
        self.alice_out.mkdir()
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, module in COMMANDS.items():
            w = self.bin / name
            w.write_text("#!/bin/sh\nexec %s -c \"import sys; sys.argv[0] = '%s'; from "
                         "sarra.commands.%s import main; sys.exit(main())\" \"$@\"\n"
                         % (shlex.quote(sys.executable), name, module))
            w.chmod(0o755)
        self.http = {"pump": None, "alice": servers.start_http(self.alice_out, self.logs)}
        for host in ("pumpb", "pumpc"):     # their nginx, made as for the guide's pump
            self.trees[host].mkdir(parents=True)
            self.http[host] = servers.start_http(self.trees[host], self.logs)
        self.users_pw = {}              # rabbitmqctl add_user, for set_user_tags
        self.background = []
        self.outputs = []               # (who, command, CompletedProcess)

    def name(self, n):
        return n + self.tag

    def sub(self, text, who="sarra"):
        """The guide's names and places -> the test's (``/var/www/pump``: the tree of the
        pump whose admin ``who`` is)."""
        alice = self.http["alice"]
        if self.sftp is not None:       # before the names: alice's server, carol's key
            text = text.replace("sftp://alice@files.alice.example.org", "sftp://%s@%s:%d" % (
                self.sftp.user, self.sftp.host, self.sftp.port))
            text = text.replace("/home/alice/sftp", str(self.sftp.root))
            text = text.replace("/home/carol/.ssh/alice_sftp", str(self.sftp.keyfile))
        for host, vhost in self.vhosts.items():
            text = re.sub(r"@%s\.example\.org/pump\b" % host, "@%s/%s" % (self.amqp, vhost),
                          text)
        text = text.replace("http://alice.example.org:8000/",
                            "http://%s:%d/" % (alice.host, alice.port))
        for host, p in self.http.items():
            if p and host.startswith("pump"):
                text = text.replace("http://%s.example.org/" % host,
                                    "http://%s:%d/" % (p.host, p.port))
        text = text.replace("/var/www/pump", "@@TREE@@")
        for w in ("alice", "carol", "dave", "erin"):
            text = text.replace("/home/" + w, "@@%s@@" % w)
        # the link configurations named after a cluster: ln_reports2pumpC, ln_pumpC2xreport
        text = re.sub(r"(?<=reports2)(pump[ABC])(?![A-Za-z0-9])|(pump[ABC])(?=2xreport)",
                      lambda m: (m.group(1) or m.group(2)) + self.tag, text)
        # a name, not an option word at the start of a line (feeder amqp://...)
        text = re.sub(r"(?<=[^A-Za-z0-9@\n])(%s)(?![A-Za-z0-9])" % "|".join(NAMES),
                      lambda m: m.group(1) + self.tag, text)
        text = text.replace("@@TREE@@", str(self.trees[PUMPS.get(who, "pump")]))
        for w in ("alice", "carol", "dave", "erin"):
            text = text.replace("@@%s@@" % w, str(self.homes[w]))
        return text

    def env(self, who):
        env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        env.update(HOME=str(self.homes[who]), PATH="%s:%s" % (self.bin, env["PATH"]),
                   PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH"))
                                              if p),
                   PYTHONUNBUFFERED="1")
        return env

    # -------------------------------------------------------------- steps
    def write(self, who, path, content):
        path = Path(self.sub(path, who).replace("~", str(self.homes[who]), 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.sub(content, who))
        if path.name == "credentials.conf":
            path.chmod(0o600)
        if path.name == "audit.conf" and "SARRA_TEST_MGMT" in os.environ:
            with path.open("a") as f:
                f.write("management_url %s\n" % self.mgmt)

    def root(self, command):
        argv = shlex.split(command, comments=True)
        if argv[0] == "rabbitmqctl":
            return self.rabbitmqctl(argv[1:])
        if argv[0] == "mkdir":
            self.tree.mkdir(parents=True, exist_ok=True)
            return
        if argv[0] == "curl":
            r = requests.head(self.sub(argv[-1]), timeout=10)
            assert r.status_code == 200, (command, r.status_code)
            return
        if argv[0] == "systemctl" and "reload" in argv:          # nginx serves the tree
            self.http["pump"] = servers.start_http(self.tree, self.logs)
            return
        assert argv[0] in SKIPPED_ROOT, "root command the test cannot stand in for: " + command

    def rabbitmqctl(self, argv):
        s, api = self.session, self.api
        if argv[0] == "delete_user":
            assert argv[1] == "guest", argv     # destructive on a shared broker: skipped
            return
        if argv[0] == "add_user":
            user, pw = self.name(argv[1]), argv[2]
            self.users_pw[user] = pw
            r = s.put(api + "users/" + quote(user, safe=""), json={"password": pw, "tags": ""})
        elif argv[0] == "set_user_tags":
            user = self.name(argv[1])
            r = s.put(api + "users/" + quote(user, safe=""),
                      json={"password": self.users_pw[user], "tags": ",".join(argv[2:])})
        elif argv[0] == "add_vhost":
            r = s.put(api + "vhosts/" + quote(self.vhost, safe=""))
        else:
            raise AssertionError("rabbitmqctl %s: not stood in for" % " ".join(argv))
        assert r.status_code in (201, 204), (argv, r.status_code, r.text)

    def run(self, who, command):
        command = self.sub(command, who)
        if re.search(r"\bforeground\b", command):
            p = subprocess.Popen(["bash", "-c", command], env=self.env(who),
                                 cwd=self.homes[who], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
            os.set_blocking(p.stdout.fileno(), False)
            self.background.append((who, command, p))
            return None
        r = subprocess.run(["bash", "-c", command], env=self.env(who), cwd=self.homes[who],
                           capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        self.outputs.append((who, command, r))
        # a command the guide says exits otherwise: "...  # exit status 1: ..."
        status = re.search(r"#.*\bexit status (\d+)", command)
        assert r.returncode == (int(status.group(1)) if status else 0), \
            "%s$ %s\nexit %d\n%s%s\n%s" % (who, command, r.returncode, r.stdout, r.stderr,
                                           self.log_tail())
        return r

    def follow(self, steps):
        for step in steps:
            if step[0] == "file":
                self.write(step[1], step[2], step[3])
            elif step[1] == "root":
                self.root(step[2])
            else:
                self.run(step[1], step[2])

    # -------------------------------------------------------------- looking
    def output_of(self, who, prefix):
        return [r for w, c, r in self.outputs if w == who and c.startswith(prefix)]

    def read_background(self):
        out = {}
        for who, command, p in self.background:
            try:
                chunk = p.stdout.read() or ""
            except (TypeError, BlockingIOError):
                chunk = ""
            out.setdefault(command, "")
            out[command] += chunk
        return out

    def log_tail(self, n=12):
        parts = []
        for who, h in self.homes.items():
            for f in sorted((h / ".cache" / "sarra" / "log").glob("*.log")):
                lines = f.read_text(errors="replace").splitlines()[-n:]
                parts.append("--- %s %s\n%s" % (who, f.name, "\n".join(lines)))
        return "\n".join(parts)

    def close(self):
        for who, stop in (("sarra", "sr stop"), ("sarra", "sr_police stop"),
                          ("sarrab", "sr stop"), ("sarrac", "sr stop"), ("dave", "sr stop"),
                          ("erin", "sr stop"), ("carol", "sr stop"), ("alice", "sr stop")):
            subprocess.run(["bash", "-c", stop], env=self.env(who), cwd=self.homes[who],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        for _, _, p in self.background:
            if p.poll() is None:
                os.killpg(p.pid, 15)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
                    p.wait(10)
        for s in self.http.values():
            if s:
                s.stop()
        for n in NAMES:
            self.session.delete(self.api + "users/" + self.name(n))
        for vhost in self.vhosts.values():
            self.session.delete(self.api + "vhosts/" + quote(vhost, safe=""))


@pytest.fixture
def guide(tmp_path, broker_url, sftp_server):
    g = Guide(tmp_path, broker_url, secrets.token_hex(4), sftp_server)
    yield g
    g.close()


def _changes(out):
    m = re.search(r"(?:would make|made) (\d+) change", out)
    assert m, out
    return int(m.group(1))


def _what(out):
    """The 'what: problem' part of sr_police's change lines, dry-run or not."""
    found = re.findall(r"^(?:dry-run|fixed) +(.*?) -> ", out, re.M)
    return found


def test_the_guide_in_order_loses_nothing(guide):
    text = GUIDE.read_text()
    # "Removing a pump" runs once the chain of three is checked, the sections after it then
    cut = text.index(REMOVAL)
    end = cut + re.compile(r"\n[^\n]+\n=+\n").search(text, cut).start()
    guide.follow(guide_steps(text[:cut]))
    check_linked_pumps(guide)
    before = removal_before(guide)
    guide.follow(guide_steps(text[cut:end]))
    check_removal(guide, before)
    guide.follow(guide_steps(text[end:]))

    # sr_police --dry-run setup on the fresh vhost said what the real run then did
    dry = guide.output_of("sarra", "sr_police --dry-run setup")[0].stdout
    real = guide.output_of("sarra", "sr_police setup")
    assert _changes(dry) == _changes(real[0].stdout) > 20, dry + real[0].stdout
    assert _what(dry) == _what(real[0].stdout)
    assert "no change" in real[1].stdout

    # alice's first post reaches carol, and carol's report reaches alice
    want = (guide.alice_out / "obs" / "2026-11-27.txt").read_bytes()
    carol_data = guide.homes["carol"] / "data"
    report = "%s@" % guide.name("carol")
    deadline = time.monotonic() + 90
    got, seen = [], ""
    while time.monotonic() < deadline:
        got = list(carol_data.glob("*/%s/obs/2026-11-27.txt" % guide.name("alice")))
        seen += "".join(guide.read_background().values())
        if got and got[0].read_bytes() == want and re.search(
                r"%s\S*  201 Downloaded .*/obs/2026-11-27\.txt" % re.escape(report), seen):
            break
        time.sleep(0.5)
    assert got and got[0].read_bytes() == want, "no file at carol's\n" + guide.log_tail()
    assert re.search(r"%s\S*  201 Downloaded .*/obs/2026-11-27\.txt" % re.escape(report),
                     seen), "no report of carol's at alice's:\n%s\n%s" % (seen,
                                                                            guide.log_tail())

    # the pump's validation hooks (step 6): an empty file fetched then refused (on_file), a
    # name refused before any fetch (on_message); neither reached xpublic nor carol
    ingest = "".join(f.read_text(errors="replace") for f in (
        guide.homes["sarra"] / ".cache" / "sarra" / "log").glob("sr_sarra_ingest_*.log"))
    deadline = time.monotonic() + 30
    while not ("empty_check: refused empty" in ingest and "name_check: refused" in ingest) \
            and time.monotonic() < deadline:
        time.sleep(0.3)
        ingest = "".join(f.read_text(errors="replace") for f in (
            guide.homes["sarra"] / ".cache" / "sarra" / "log").glob("sr_sarra_ingest_*.log"))
    assert "empty_check: refused empty" in ingest and "bad name.txt" in ingest, ingest[-3000:]
    for top in (guide.tree, carol_data):
        assert not list(top.glob("**/empty.txt")) and not list(top.glob("**/bad name.txt"))

    # the data-less pump (S=0): carol fetched alice's file from alice's SFTP server, the
    # pump stored nothing
    s0 = carol_data / "obs" / "s0.txt"
    deadline = time.monotonic() + 30
    while not s0.exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert s0.exists() and s0.read_bytes() == (guide.sftp.root / "obs" / "s0.txt").read_bytes(), \
        "carol: no obs/s0.txt from alice's sftp server\n" + guide.log_tail()
    assert not list(guide.tree.glob("**/s0.txt"))


def check_linked_pumps(guide):
    """Linking pumps: dave on B got the file for pumpB, erin on C the one for pumpC
    (through B), and their reports came home to alice: her summary counts them."""
    day = time.strftime("%Y%m%d", time.gmtime())
    for who, name in (("dave", "for-b.txt"), ("erin", "for-c.txt")):
        want = (guide.alice_out / "obs" / name).read_bytes()
        path = guide.homes[who] / "data" / day / guide.name("alice") / "obs" / name
        deadline = time.monotonic() + 60
        while not (path.exists() and path.read_bytes() == want) and \
                time.monotonic() < deadline:
            time.sleep(0.3)
        assert path.exists() and path.read_bytes() == want, \
            "%s: no %s\n%s" % (who, name, guide.log_tail())

    def summary():
        r = guide.run("alice", "sr_report summary mine --json")
        return {f["file"]: f for f in json.loads(r.stdout)["files"]}

    def consumers(row):
        return {d["consumer"].split("@")[0] for d in row.get("delivered", [])}
    far = {guide.name("dave"), guide.name("erin")}
    deadline = time.monotonic() + 30
    rows = summary()
    while not (guide.name("dave") in consumers(rows.get("/obs/for-b.txt", {}))
               and far <= consumers(rows.get("/obs/for-c.txt", {}))) and \
            time.monotonic() < deadline:
        time.sleep(0.5)
        rows = summary()
    assert guide.name("dave") in consumers(rows.get("/obs/for-b.txt", {})), rows
    assert far <= consumers(rows.get("/obs/for-c.txt", {})), rows
    text = guide.run("alice", "sr_report summary mine").stdout
    assert re.search(r"  delivered (\d+)/\1  /obs/for-c\.txt\n", text), text


def _arrived(guide, who, name, timeout=60):
    """alice's obs/<name> whole in <who>'s data directory (waits up to timeout)."""
    day = time.strftime("%Y%m%d", time.gmtime())
    want = (guide.alice_out / "obs" / name).read_bytes()
    path = guide.homes[who] / "data" / day / guide.name("alice") / "obs" / name
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_bytes() == want) and time.monotonic() < deadline:
        time.sleep(0.3)
    return path.exists() and path.read_bytes() == want


def _pids(home, pattern):
    return [int(f.read_text().split()[0]) for f in
            (home / ".cache" / "sarra").glob("*/%s/*.pid" % pattern)]


def _alive(pids):
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]


def removal_before(guide):
    """What runs on B for the link to C before the guide removes it (its pids)."""
    pids = _pids(guide.homes["sarrab"], "ln_*%s*" % guide.name("pumpC"))
    assert len(_alive(pids)) == 3, (pids, guide.log_tail())
    return pids


def check_removal(guide, pids):
    """C taken out as "Removing a pump" says: on B, the link's three processes stopped,
    their configurations deleted, their queues (B's two, ln_from_pumpC's on C) deleted,
    the account pumpC and its exchanges deleted, ln_from_pumpA rewritten without C; on A,
    no configuration routes to C any more; B's sr_police check finds nothing left to fix;
    alice's next file for B reaches dave."""
    pc, pb = guide.name("pumpC"), guide.name("pumpB")
    b_cfg, a_cfg = (guide.homes[w] / ".config" / "sarra" for w in ("sarrab", "sarra"))
    assert not _alive(pids), pids
    assert not list(b_cfg.glob("*/ln_*%s*.conf" % pc))
    from_a = b_cfg / "sarra" / ("ln_from_%s.conf" % guide.name("pumpA"))
    assert from_a.exists() and pc not in from_a.read_text(), from_a.read_text()
    for f in a_cfg.glob("*/ln_*.conf"):
        assert pc not in f.read_text(), (f, f.read_text())

    def get(path):
        return guide.session.get(guide.api + path, timeout=10)
    vb, vc = (quote(guide.vhosts[h], safe="") for h in ("pumpb", "pumpc"))
    assert not [q["name"] for q in get("queues/" + vb).json() if pc in q["name"]]
    assert not [q["name"] for q in get("queues/" + vc).json()
                if q["name"].startswith("q_%s." % pb)]
    assert get("users/" + pc).status_code == 404
    for x in ("xs_", "xp_"):
        assert get("exchanges/%s/%s%s" % (vb, x, pc)).status_code == 404, x + pc
    r = guide.run("sarrab", "sr_police check")
    assert "pumpC" not in r.stdout, r.stdout
    assert _arrived(guide, "dave", "after-c.txt"), \
        "dave: no after-c.txt once C left\n" + guide.log_tail()
