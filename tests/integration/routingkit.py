"""Three pumps on the local broker, wired for routing (test_routing.py draws the chain): Pump
(a vhost with its users, permissions, exchanges, HTTP server), Chain, UserTap, build_chain
and start_chain. Shared by tests/integration/test_routing.py and bench/chain.py."""

import os
import secrets
import time
import urllib.parse
from pathlib import Path

from sarra.broker.admin import ManagementAPI
from sarra.flow import routing
from sarra.ops import audit
from tests.conftest import amqp_connect, parse_broker_url
from tests.integration import servers


class Pump:
    def __init__(self, chain, name):
        self.chain, self.name = chain, name
        self.vhost = "sarra_rt_%s_%s" % (chain.uid, name)
        self.tree = chain.tmp / ("tree_" + name)
        self.tree.mkdir(parents=True, exist_ok=True)
        self.users = {}           # role name in the test -> (user, role)
        self.http = None

    def url(self, who="feeder"):
        """amqp URL of a user on this pump (feeder: the broker's admin user)."""
        c = self.chain
        if who == "feeder":
            user, pw = c.admin, c.admin_pw
        else:
            user = self.users[who][0]
            pw = c.passwords[user]
        return "amqp://%s:%s@%s:%d/%s" % (user, pw, c.host, c.port,
                                         urllib.parse.quote(self.vhost, safe=""))

    def user(self, who):
        return self.users[who][0]

    @property
    def http_url(self):
        return "http://127.0.0.1:%d/" % self.http.port


class Chain:
    """Pumps A, B, C (vhosts), their users, trees and HTTP servers; the component configs."""

    def __init__(self, runner, uid, tmp, broker_url, names=("A", "B", "C")):
        self.runner, self.uid, self.tmp = runner, uid, Path(tmp)
        host, port, admin, admin_pw, _ = parse_broker_url(broker_url)
        self.host, self.port, self.admin, self.admin_pw = host, port, admin, admin_pw
        mgmt = os.environ.get("SARRA_TEST_MGMT", "http://%s:15672/" % host)
        self.api = ManagementAPI(mgmt, admin, admin_pw)
        self.pumps = {n: Pump(self, n) for n in names}
        self.passwords = {}
        self.made_users = []

    # ------------------------------------------------------------------ set-up
    def add_user(self, pump, who, role):
        user = "%s%s" % (who, self.uid)
        self.pumps[pump].users[who] = (user, role)
        self.passwords[user] = secrets.token_hex(8)
        return user

    def build(self):
        for p in self.pumps.values():
            self.api.put_vhost(p.vhost)
            self.api.put_permission(p.vhost, self.admin, ".*", ".*", ".*")
            users = {u: r for u, r in p.users.values()}
            for user, role in users.items():
                if user not in self.made_users:
                    self.api.put_user(user, self.passwords[user])
                    self.made_users.append(user)
                self.api.put_permission(p.vhost, user, *audit.role_permissions(user, role, users))
            for x in ["xpublic", "xreport"] + ["xs_" + u for u in users] + \
                     ["xr_" + u for u, r in users.items() if r == "source"]:
                self.api.put_exchange(p.vhost, x)
            p.http = servers.start_http(p.tree, self.tmp)
        # passwords in credentials.conf: the configs name users only, as in production
        self.runner.credentials(*[p.url(who) for p in self.pumps.values()
                                  for who in ["feeder"] + list(p.users)])

    def close(self):
        self.runner.stop_all()
        for p in self.pumps.values():
            if p.http is not None:
                p.http.stop()
        for user in self.made_users:
            try:
                self.api.delete_user(user)
            except Exception:
                pass
        for p in self.pumps.values():
            try:
                self.api.delete_vhost(p.vhost)
            except Exception:
                pass
        self.api.close()

    # ------------------------------------------------------------------ configs
    def sarra(self, name, pump, broker, exchange="xpublic", gateway_for="", extra=""):
        p = self.pumps[pump]
        return self.runner.config("sarra", name, """
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
            heartbeat 5
            %s
            accept .*
        """ % (broker, exchange, pump, ("gateway_for %s" % gateway_for) if gateway_for else "",
               p.tree, p.tree, p.http_url, p.url(), extra))

    def report_routes(self, pump, upstream, account, prefix):
        """On pump: reports about data from the clusters upstream of it go to
        ``upstream`` (as ``account`` there), and the upstream pump takes them in."""
        p, up = self.pumps[pump], self.pumps[upstream]
        names = []
        origins = [n for n in self.pumps if n < pump]        # A < B < C: clusters upstream
        routes = [(o, up.url(account), "xs_" + up.user(account)) for o in origins]
        for name, text in routing.report_shovels(p.url(), pump, routes).items():
            self.runner.config("shovel", prefix + name, text)
            names.append(prefix + name)
        name, text = routing.peer_shovel(up.url(), upstream, up.user(account))
        self.runner.config("shovel", prefix + name, text)
        names.append(prefix + name)
        return names

    def local_report_shovels(self, pump, prefix, peers=()):
        """rr_<user>2xreport for each user, one rr_xreport_route for the sources (as
        sr_police writes them); not for the accounts of downstream pumps (peers)."""
        p = self.pumps[pump]
        names, sources = [], []
        for who, (user, role) in p.users.items():
            if who in peers:
                continue
            n = "%srr_%s2xreport" % (prefix, user)
            self.runner.config("shovel", n, """
                broker %s
                exchange xs_%s
                topic_prefix v02.report
                subtopic #
                post_exchange xreport
                on_message msg_by_user
                msg_by_user %s
                report_back off
            """ % (p.url(), user, user))
            names.append(n)
            if role == "source":
                sources.append(user)
        if sources:
            n = "%srr_xreport_route" % prefix
            self.runner.config("shovel", n, """
                broker %s
                exchange xreport
                topic_prefix v02.report
                subtopic #
                post_exchange xr_
                post_exchange_by_source on
                on_message msg_by_source
                msg_by_source %s
                report_back off
            """ % (p.url(), ",".join(sources)))
            names.append(n)
        return names

    def start(self, component, names):
        procs = [self.runner.start(component, n) for n in names]
        for n, p in zip(names, procs):
            self.runner.wait_consuming(p, n, timeout=60)
        return procs


class UserTap:
    """A queue q_<user>.tap<n> of a pump user, bound to an exchange, read with no_ack."""

    def __init__(self, url, exchange, keys=("#",)):
        self.conn = amqp_connect(url)
        try:
            self.ch = self.conn.channel()
            user = urllib.parse.unquote(urllib.parse.urlparse(url).username)
            self.queue = "q_%s.tap%s" % (user, secrets.token_hex(3))
            self.ch.queue_declare(self.queue, durable=False, auto_delete=True)
            for k in keys:
                self.ch.queue_bind(self.queue, exchange, k)
        except Exception:
            self.conn.close()
            raise

    def get(self, count, timeout=30.0):
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            m = self.ch.basic_get(self.queue, no_ack=True)
            if m is None:
                time.sleep(0.05)
                continue
            body = m.body.decode() if isinstance(m.body, bytes) else m.body
            headers = {k: (v.decode() if isinstance(v, bytes) else v)
                       for k, v in (m.properties.get("application_headers") or {}).items()}
            got.append((m.delivery_info["routing_key"], body, headers))
        return got

    def close(self):
        try:
            self.ch.queue_delete(self.queue)
            self.conn.close()
        except Exception:
            pass


def build_chain(runner, uid, tmp, broker_url):
    chain = Chain(runner, uid, tmp, broker_url)
    chain.add_user("A", "alice", "source")
    chain.add_user("A", "b_on_a", "subscriber")
    chain.add_user("B", "eve", "source")
    chain.add_user("B", "c_on_b", "subscriber")
    chain.add_user("C", "bob", "subscriber")
    chain.build()
    return chain


def start_chain(chain, bob_dir, back_link=True):
    """Every component of the three-pump chain, running; returns the names of the sarras."""
    A, B, C = (chain.pumps[n] for n in "ABC")
    sarras = ["A_ingest", "B_from_A", "C_from_B"]
    # alice posts file: URLs of tmp/alice: the pump takes them from there only
    chain.sarra("A_ingest", "A", A.url(), exchange="xs_" + A.user("alice"), gateway_for="B,C",
                extra="source_from_exchange on\nfetch_schemes http,https,file\n"
                      "base_dir %s" % (chain.tmp / "alice"))
    chain.sarra("B_from_A", "B", A.url("b_on_a"), gateway_for="C")
    chain.sarra("C_from_B", "C", B.url("c_on_b"))
    if back_link:
        chain.sarra("A_from_B", "A", B.url("feeder"), gateway_for="B,C", extra="log_reject on")
        sarras.append("A_from_B")
    chain.runner.config("subscribe", "bob_C", """
        broker %s
        exchange xpublic
        expire 5m
        mirror on
        directory %s
        heartbeat 5
        accept .*
    """ % (C.url("bob"), bob_dir))
    shovels = (chain.local_report_shovels("C", "C_")
               + chain.local_report_shovels("A", "A_", peers=("b_on_a",))
               + chain.report_routes("C", "B", "c_on_b", "C_")
               + chain.report_routes("B", "A", "b_on_a", "B_"))
    chain.start("sarra", sarras)
    chain.start("subscribe", ["bob_C"])
    chain.start("shovel", shovels)
    return sarras
