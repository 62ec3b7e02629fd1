"""Issue 22: alice on pump A declares bob the only reader of her data/ files; the data
goes A -> B -> C (three vhosts of the local broker, routingkit.py), each pump's tree
served by a real Apache over HTTPS (private CA) and fetched by the next pump as its
account there. bob gets the files on C; eve, a user of B and of C, sees no announcement
of them and is refused each of their URLs; eve's forged declaration changes nothing; once
alice withdraws the restriction, eve sees and reads the files posted afterwards.

    alice: sr_readers data/ bob --> A:xs_alice
    A: sr_sarra (ingest, downstream_accounts b_on_a) --> A:xp_b_on_a (declaration, data/)
    B: sr_sarra (account b_on_a on A; downstream_accounts c_on_b) --> B:xp_c_on_b
    C: sr_sarra (account c_on_b on B) --> C:xp_bob ; bob's sr_subscribe binds C:xp_bob
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import amqp
import pytest

from sarra.ops import webdoor
from tests.integration.routingkit import Chain, UserTap
from tests.integration.senderkit import Runner, make_files, md5, sr_post, wait_for
from tests.integration.servers import free_port

BIND_PRIVATE = """
    subtopic #
    exchange %s
    topic_prefix v02.adm
    subtopic #
    topic_prefix v02.post
    subtopic #
"""


@pytest.fixture
def runner(home, tmp_path):
    r = Runner(home, tmp_path)
    yield r
    r.stop_all()


@pytest.fixture
def web_top():
    """A directory Apache's user (www-data) can reach: not below the test's tmp_path."""
    top = Path(tempfile.mkdtemp(prefix="sarra_web_"))
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def chain(runner, uid, tmp_path, broker_url, web_top):
    need_apache()
    c = Chain(runner, uid, tmp_path, broker_url)
    for name, p in c.pumps.items():        # trees Apache serves
        p.tree = web_top / ("tree_" + name)
        p.tree.mkdir(mode=0o755)
        os.chmod(p.tree, 0o755)
    c.add_user("A", "alice", "source")
    c.add_user("A", "b_on_a", "subscriber")
    c.add_user("B", "eve", "source")
    c.add_user("B", "c_on_b", "subscriber")
    c.add_user("C", "bob", "subscriber")
    c.add_user("C", "eve", "subscriber")
    c.add_user("C", "carol", "subscriber")     # a reader the web refuses (no https line)
    c.build()
    for p in c.pumps.values():          # sr_police makes them: xp_<user> of every user
        for user, role in set(p.users.values()):
            c.api.put_exchange(p.vhost, "xp_" + user)
    try:
        yield c
    finally:
        c.close()


def rules(runner, config):
    found = [str(p) for p in Path(runner.home).rglob("readers.json")
             if p.parent.name == config and p.parent.parent.name == "sarra"]
    if not found:
        return {}
    with open(found[0]) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def web_chain(chain, top, monkeypatch):
    """An Apache site per pump (what sr_police web writes: htpasswd of the pump's users,
    HTTPS, AllowOverride AuthConfig); {pump: base URL}, the CA file, the Apache."""
    run = top / "run"
    run.mkdir()
    os.chmod(run, 0o777)
    ca, cert, key = private_ca(run)
    os.chmod(key, 0o644)             # read by the server's user (www-data) in this test
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)     # the pumps and bob trust the CA
    sites, urls = [], {}
    for name, p in chain.pumps.items():
        port = free_port()
        users = {u: chain.passwords[u] for u, _ in p.users.values()}
        web = top / ("web_" + name)
        webdoor.write_web(users, str(p.tree), "127.0.0.1:%d" % port, cert, key,
                          directory=str(web))
        sites.append((port, web / webdoor.SITE_NAME))
        urls[name] = "https://127.0.0.1:%d/" % port
    apache = Apache(run, sites)
    wait_for(lambda: all(fetch(u, ca)[0] for u in urls.values()), 20, "apache")
    # each account fetches from the pump it reads as itself
    chain.runner.credentials(*["https://%s:%s@%s" % (p.user(who), chain.passwords[p.user(who)],
                                                      urls[name][len("https://"):])
                               for name, p in chain.pumps.items() for who in p.users
                               if who != "carol"])
    return urls, ca, apache


def sarra(chain, name, pump, broker, base_url, exchange="xpublic", gateway_for="", extra=""):
    p = chain.pumps[pump]
    return chain.runner.config("sarra", name, """
        broker %s
        exchange %s
        expire 5m
        cluster %s
        %s
        cluster_routing on
        directory %s
        post_base_dir %s
        post_base_url %s
        post_broker %s
        post_exchange xpublic
        htaccess on
        heartbeat 5
        %s
        accept .*
    """ % (broker, exchange, pump, ("gateway_for %s" % gateway_for) if gateway_for else "",
           p.tree, p.tree, base_url, p.url(), extra))


def start(chain, bob_dir, urls):
    A, B, C = (chain.pumps[n] for n in "ABC")
    alice, eve = A.user("alice"), B.user("eve")
    ingest = ("source_from_exchange on\nfetch_schemes file\nbase_dir %s\n"
              "downstream_accounts %s\ntopic_prefix v02.adm\nsubtopic #\n"
              "topic_prefix v02.post\nsubtopic #")
    sarra(chain, "A_ingest", "A", A.url(), urls["A"], exchange="xs_" + alice,
          gateway_for="B,C", extra=ingest % (chain.tmp / "alice", A.user("b_on_a")))
    sarra(chain, "B_ingest", "B", B.url(), urls["B"], exchange="xs_" + eve, gateway_for="C",
          extra=ingest % (chain.tmp / "eve", B.user("c_on_b")))
    sarra(chain, "B_from_A", "B", A.url("b_on_a"), urls["B"], gateway_for="C",
          extra="downstream_accounts %s\n%s" % (
              B.user("c_on_b"), BIND_PRIVATE % ("xp_" + A.user("b_on_a"))))
    sarra(chain, "C_from_B", "C", B.url("c_on_b"), urls["C"],
          extra=BIND_PRIVATE % ("xp_" + B.user("c_on_b")))
    chain.runner.config("subscribe", "bob_C", """
        broker %s
        exchange xpublic
        subtopic #
        exchange xp_%s
        subtopic #
        expire 5m
        mirror on
        directory %s
        heartbeat 5
        accept .*
    """ % (C.url("bob"), C.user("bob"), bob_dir))
    chain.runner.config("subscribe", "carol_C", """
        broker %s
        exchange xp_%s
        subtopic #
        expire 5m
        directory %s
        accept .*
    """ % (C.url("carol"), C.user("carol"), chain.tmp / "carol"))
    shovels = (chain.local_report_shovels("C", "C_")
               + chain.local_report_shovels("A", "A_", peers=("b_on_a",))
               + chain.report_routes("C", "B", "c_on_b", "C_")
               + chain.report_routes("B", "A", "b_on_a", "B_"))
    chain.start("sarra", ["A_ingest", "B_ingest", "B_from_A", "C_from_B"])
    chain.start("subscribe", ["bob_C", "carol_C"])
    chain.start("shovel", shovels)


def test_private_data_across_three_pumps(chain, runner, tmp_path, web_top, monkeypatch):
    A, B, C = (chain.pumps[n] for n in "ABC")
    alice, bob, eve = A.user("alice"), C.user("bob"), B.user("eve")
    eve_pw = chain.passwords[eve]
    src, bob_dir = tmp_path / "alice", tmp_path / "bob"
    (tmp_path / "eve").mkdir()
    src.mkdir()
    bob_dir.mkdir()
    urls, ca, apache = web_chain(chain, web_top, monkeypatch)
    try:
        start(chain, bob_dir, urls)
        run_chain(chain, runner, src, bob_dir, urls, ca, apache, alice, bob, eve, eve_pw)
    finally:
        runner.stop_all()
        apache.stop()


def run_chain(chain, runner, src, bob_dir, urls, ca, apache, alice, bob, eve, eve_pw):
    A, B, C = (chain.pumps[n] for n in "ABC")

    def readers(*args):
        r = runner.run("sr_readers", *args)
        assert r.returncode == 0, r.stdout + r.stderr
    carol = C.user("carol")
    readers("--post_broker", A.url("alice"), "--post_exchange", "xs_" + alice, "--to", "C",
            "data/", bob + "," + carol)
    wait_for(lambda: rules(runner, "C_from_B").get(alice), 60, "the declaration on C")
    for config in ("A_ingest", "B_from_A", "C_from_B"):
        assert rules(runner, config)[alice]["data/"]["readers"] == sorted([bob, carol])

    # eve cannot bind where the restricted posts go, whatever the subtopic
    for pump, account in ((B, "c_on_b"), (C, "bob")):
        with pytest.raises(amqp.exceptions.AccessRefused):
            UserTap(pump.url("eve"), "xp_" + pump.user(account))
    taps = [UserTap(B.url("eve"), "xpublic"), UserTap(C.url("eve"), "xpublic")]
    alice_reports = UserTap(A.url("alice"), "xr_" + alice, ("v02.report.#",))
    try:
        post = lambda paths, *x: sr_post(runner, A.url("alice"), "xs_" + alice,
                                         "file:" + str(src), src, paths, "--to", "C",
                                         "--declare_exchange", "off", *x)
        files = make_files(src / "data", 10, prefix="s", subdirs=3)
        open_files = make_files(src / "pub", 1, prefix="p", subdirs=1)
        post([src / "data", src / "pub"])
        rels = ["data/" + r for r in files]
        pub = "pub/" + next(iter(open_files))
        wait_for(lambda: all((bob_dir / r).exists() for r in rels + [pub]), 60,
                 "bob's downloads on C " + apache.log())
        assert all(md5(bob_dir / r) == files[r.split("/", 1)[1]] for r in rels)
        # eve, on B and on C, sees the unrestricted neighbour and nothing of data/
        for tap in taps:
            seen = [b.split()[2] for _, b, _ in tap.get(1, timeout=30)]
            seen += [b.split()[2] for _, b, _ in tap.get(20, timeout=2)]
            assert "/" + pub in seen and not [s for s in seen if "data/" in s], seen
        # ... and is refused each URL, guessed from the neighbour's (same base URL)
        for name in "BC":
            assert fetch(urls[name] + pub, ca, (eve, eve_pw))[0] == 200
            for rel in rels:
                assert fetch(urls[name] + rel, ca)[0] == 401, rel
                assert fetch(urls[name] + rel, ca, (eve, eve_pw))[0] in (401, 403), rel
            assert fetch(urls[name] + "data/.htaccess", ca, (eve, eve_pw))[0] in (401, 403)
        status, body = fetch(urls["C"] + rels[0], ca, (bob, chain.passwords[bob]))
        assert status == 200 and md5_of(body) == files[rels[0].split("/", 1)[1]]
        # alice's reports: bob's downloads, and carol's reads the web server refused
        reports = []
        wait_for(lambda: reports.extend(alice_reports.get(1, timeout=0.2)) or (
            {"/" + r for r in rels} <= {b.split()[2] for _, b, _ in reports
                                        if b.split()[5] == bob and b.split()[3] == "201"}
            and any(b.split()[5] == carol and "401" in h.get("message", "")
                    for _, b, h in reports)), 40, "bob's and carol's reports")

        # a forged declaration from eve (claiming to be alice) changes nothing
        r = runner.run("sr_readers", "--post_broker", B.url("eve"), "--post_exchange",
                       "xs_" + eve, "--source", alice, "--to", "C", "data/", eve)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "claims source" in runner.log("B_ingest"), 30, "eve's refusal")
        for config in ("B_from_A", "C_from_B"):
            assert rules(runner, config)[alice]["data/"]["readers"] == sorted([bob, carol])
        assert alice not in rules(runner, "B_ingest")
        assert fetch(urls["C"] + rels[0], ca, (eve, eve_pw))[0] in (401, 403)

        # withdrawn: what alice posts afterwards is public again
        readers("--post_broker", A.url("alice"), "--post_exchange", "xs_" + alice, "--to",
                "C", "data/", "--withdraw")
        wait_for(lambda: not rules(runner, "C_from_B").get(alice), 60, "the withdrawal on C")
        late = make_files(src / "late", 2, prefix="l", subdirs=1)
        for rel in late:
            os.makedirs(src / "data" / "late", exist_ok=True)
            os.replace(src / "late" / rel, src / "data" / "late" / os.path.basename(rel))
        post([src / "data" / "late"])
        for tap in taps:
            seen = [b.split()[2] for _, b, _ in tap.get(2, timeout=30)]
            assert len(seen) == 2 and all(s.startswith("/data/late/") for s in seen), seen
        for name in "BC":
            wait_for(lambda: all((chain.pumps[name].tree / s.lstrip("/")).exists()
                                 for s in seen), 30, "the late files on " + name)
            for s in seen:
                assert fetch(urls[name] + s.lstrip("/"), ca, (eve, eve_pw))[0] == 200, s
    finally:
        for t in taps + [alice_reports]:
            t.close()


# ------------------------------------------------------------------ the web door: Apache

APACHE = "/usr/sbin/apache2"
MODULES = ("mpm_event", "authz_core", "authz_user", "authn_core", "authn_file",
           "auth_basic", "ssl")


def private_ca(where, host="127.0.0.1"):
    """A CA and a server certificate for host signed by it: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("sarra test CA")).issuer_name(
        name("sarra test CA")).public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name(host)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
                ipaddress.ip_address(host))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = []
    for fname, data in (("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
                        ("cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
                        ("key.pem", key.private_bytes(
                            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()))):
        (where / fname).write_bytes(data)
        out.append(str(where / fname))
    os.chmod(out[2], 0o600)
    return out


def need_apache():
    from tests.support.prereq import Missing, need_module
    if not os.access(APACHE, os.X_OK):
        raise Missing("apache2 not found: install apache2 (scripts/setup-host.sh does)")
    for m in MODULES:
        if not os.path.exists("/usr/lib/apache2/modules/mod_%s.so" % m):
            raise Missing("apache2 module %s missing: install apache2" % m)
    need_module("cryptography", "cryptography")


class Apache:
    """Debian's apache2 with a config of its own (modules, loopback ports, files in run),
    including the sites sr_police web wrote: [(port, site config)]."""

    def __init__(self, run, sites):
        import subprocess
        self.run = run
        lines = ["ServerRoot /etc/apache2", "ServerName 127.0.0.1",
                 "PidFile %s/httpd.pid" % run, "ErrorLog %s/error.log" % run,
                 "DefaultRuntimeDir %s" % run, "Mutex file:%s default" % run,
                 "LogLevel warn"]
        lines += ["Listen 127.0.0.1:%d" % port for port, _ in sites]
        lines += ["LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so" % (m, m)
                  for m in MODULES]
        if os.geteuid() == 0:
            lines += ["User www-data", "Group www-data"]
        lines += ["Include %s" % site for _, site in sites]
        conf = run / "httpd.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([APACHE, "-f", str(conf), "-DFOREGROUND"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(run / "stderr.log", "wb"))

    def log(self):
        return "".join(p.read_text(errors="replace") for p in
                       (self.run / "error.log", self.run / "stderr.log") if p.exists())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()


def fetch(url, ca, auth=None):
    """(status, body) of a GET over HTTPS checked against the private CA."""
    import base64
    import ssl
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(
            ("%s:%s" % auth).encode()).decode())
    ctx = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (urllib.error.URLError, OSError):     # not listening yet
        return 0, b""


def test_web_door_apache_https(runner, uid, tmp_path, broker_url):
    """One pump's tree behind a real Apache over HTTPS (private CA): alice restricts data/
    to bob; eve gets 401/403 for each of its URLs, guessed from the open pub/ file's; the
    .htaccess follows a withdrawal for the files already there."""
    import shutil
    import tempfile
    from tests.integration.servers import free_port
    need_apache()
    chain = Chain(runner, uid, tmp_path, broker_url, names=("A",))
    chain.add_user("A", "alice", "source")
    chain.add_user("A", "bob", "subscriber")
    chain.add_user("A", "eve", "subscriber")
    chain.build()
    A = chain.pumps["A"]
    alice, bob, eve = A.user("alice"), A.user("bob"), A.user("eve")
    # Apache's user (www-data) reaches the tree and its site: not below the test's tmp_path
    top = Path(tempfile.mkdtemp(prefix="sarra_web_"))
    apache = None
    try:
        os.chmod(top, 0o755)
        tree, web, run, src = top / "tree", top / "web", top / "run", tmp_path / "alice"
        for d in (tree, run, src):
            d.mkdir()
        os.chmod(tree, 0o755)
        os.chmod(run, 0o777)
        ca, cert, key = private_ca(run)
        os.chmod(key, 0o644)         # read by the server's user (www-data) in this test
        port = free_port()
        base_url = "https://127.0.0.1:%d/" % port
        (runner.cfgroot / "admin.conf").write_text(
            "admin %s\ndeclare source %s\ndeclare subscriber %s\ndeclare subscriber %s\n" % (
                A.url().replace(":%s@" % chain.admin_pw, "@"), alice, bob, eve))
        r = runner.run("sr_police", "web", "--web_root", str(tree), "--web_dir", str(web),
                       "--web_listen", "127.0.0.1:%d" % port, "--web_cert", cert,
                       "--web_key", key)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (web / "htpasswd").read_text().count("$2y$") == 3, r.stdout
        apache = Apache(run, [(port, web / "sarra-site.conf")])
        wait_for(lambda: fetch(base_url, ca)[0] in (200, 403, 404), 20, "apache " + apache.log())

        runner.config("sarra", "A_web", """
            broker %s
            exchange xs_%s
            topic_prefix v02.adm
            subtopic #
            topic_prefix v02.post
            subtopic #
            expire 5m
            source_from_exchange on
            fetch_schemes file
            base_dir %s
            directory %s
            post_base_dir %s
            post_base_url %s
            post_broker %s
            post_exchange xpublic
            htaccess on
            accept .*
        """ % (A.url(), alice, src, tree, tree, base_url, A.url()))
        chain.start("sarra", ["A_web"])
        out = runner.run("sr_readers", "--post_broker", A.url("alice"), "--post_exchange",
                         "xs_" + alice, "data/", bob)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: rules(runner, "A_web").get(alice), 30, "the declaration")
        files = make_files(src / "data", 10, prefix="w", subdirs=2)
        opened = make_files(src / "pub", 1, prefix="o", subdirs=1)
        post = lambda paths: sr_post(runner, A.url("alice"), "xs_" + alice, "file:" + str(src),
                                     src, paths, "--declare_exchange", "off")
        post([src / "data", src / "pub"])
        rels = ["data/" + r for r in files]
        pub = "pub/" + next(iter(opened))
        wait_for(lambda: all((tree / r).exists() for r in rels + [pub]), 30, "the pump's copies")
        status, body = fetch(base_url + pub, ca)
        assert status == 200 and md5_of(body) == md5(src / pub), apache.log()
        for rel in rels:
            # guessed from the neighbour's URL: same base, the names alice uses
            url = base_url + rel
            assert fetch(url, ca)[0] == 401, url
            assert fetch(url, ca, (eve, chain.passwords[eve]))[0] in (401, 403), url
            status, body = fetch(url, ca, (bob, chain.passwords[bob]))
            assert status == 200 and md5_of(body) == files[rel.split("/", 1)[1]], url
        assert fetch(base_url + "data/.htaccess", ca, (bob, chain.passwords[bob]))[0] == 403

        # withdrawn: the files already there open up too
        out = runner.run("sr_readers", "--post_broker", A.url("alice"), "--post_exchange",
                         "xs_" + alice, "data/", "--withdraw")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: not (tree / "data" / ".htaccess").exists(), 30, "the withdrawal")
        assert fetch(base_url + rels[0], ca, (eve, chain.passwords[eve]))[0] == 200
    finally:
        if apache is not None:
            apache.stop()
        runner.stop_all()
        chain.close()
        shutil.rmtree(top, ignore_errors=True)


def md5_of(data):
    import hashlib
    return hashlib.md5(data).hexdigest()
