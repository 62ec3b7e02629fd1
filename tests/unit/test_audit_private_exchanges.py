"""sr_police and the users' private exchanges (xp_<user>, readers.py): one of a user no
longer declared (a removed user, a neighbour pump whose link is gone) belongs to nobody,
like its xs_ exchange, and `sr_police --fix check` deletes it (admin guide, "Remove a
user" and "Removing a pump")."""

from sarra.ops.audit import Police, Pump

ADMIN = "amqp://boss@pump.example.org/"


def pump():
    return Pump(ADMIN, "amqp://feeder@pump.example.org/",
                {"boss": "admin", "feeder": "feeder", "alice": "source",
                 "carol": "subscriber", "pumpB": "subscriber"}, [], "http://x:15672/",
                peers=["pumpB"])


def test_a_declared_users_private_exchange_is_owned():
    p = pump()
    for name in ("xp_alice", "xp_carol", "xp_pumpB"):
        assert p.owns_exchange(name), name


def test_a_gone_users_private_exchange_is_owned_by_nobody():
    p = pump()
    assert not p.owns_exchange("xp_pumpC")
    assert not p.owns_exchange("xp_mallory")
    assert not p.owns_exchange("xp_")


class Api:
    """What survey reads of a vhost holding the exchanges of a removed neighbour."""

    def vhost(self, vhost):
        return {"name": vhost}

    def users(self):
        return []

    def permissions(self, vhost):
        return []

    def user_permissions(self, name):
        return []

    def exchanges(self, vhost):
        return [{"name": n, "type": "topic", "durable": True, "auto_delete": False}
                for n in pump().expected_exchanges() + ["xs_pumpC", "xp_pumpC"]]

    def queues(self, vhost):
        return []

    def bindings(self, vhost):
        return []

    def __getattr__(self, name):            # put_*, delete_*: the fixes, not run here
        if name.startswith(("put_", "delete_")):
            return lambda *a, **k: None
        raise AttributeError(name)


def test_check_deletes_a_gone_neighbours_exchanges():
    found = Police(pump(), Api(), lambda u: None).survey()
    gone = sorted(f.what for f in found if "belongs to no declared user" in f.problem)
    assert gone == ["exchange 'xp_pumpC'", "exchange 'xs_pumpC'"], [
        (f.what, f.problem) for f in found]
