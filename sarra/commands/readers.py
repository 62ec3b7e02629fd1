"""sr_readers: a source says who may read a part of its data, on every pump of its route.

    sr_readers [-c config] [--post_broker URL] [--to CLUSTERS] <prefix> <user,user,...>
    sr_readers [...] <prefix> --private        (readable by the source alone)
    sr_readers [...] <prefix> --withdraw       (readable by all again)

Posts one adm message (sarra.flow.readers.declaration) on the source's own exchange
(post_exchange, default xs_<user>), waits for the broker's confirm and exits 0; the
pumps' sr_sarra record it and pass it on. Their reports come back like any other
(sr_report): 201 recorded, 403 refused.
"""

import sys
import time

from sarra.broker.client import Broker, BrokerError
from sarra.commands import common
from sarra.config import parser as config
from sarra.config.credentials import Credentials, CredentialsError
from sarra.flow import readers
from sarra.message import format_time

PROGRAM = "sr_readers"
OWN_OPTIONS = ("private", "withdraw")          # flags of this command, not options
SYNOPSIS = ("sr_readers [-c config] [--post_broker URL] [--to CLUSTERS] "
            "<prefix> (<user,user,...> | --private | --withdraw)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    early = common.version_or_help(argv, PROGRAM, "readers", SYNOPSIS)
    if early is not None:
        return early
    private, withdraw = "--private" in argv, "--withdraw" in argv
    argv = [a for a in argv if a not in ("--private", "--withdraw")]
    try:
        pairs, words, _ = common.split_argv(argv, actions=())
        name = None
        rest = []
        for k, v in pairs:
            if k in ("c", "config") and name is None:
                name = v
            else:
                rest.append((k, v))
        cfg = config.load("post", name, rest)
    except (config.ConfigError, common.UsageError) as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    want = 1 if (private or withdraw) else 2
    if len(words) != want or (private and withdraw):
        return common.fail(PROGRAM, "usage: " + SYNOPSIS, common.USAGE)
    if not cfg.post_broker:
        return common.fail(PROGRAM, "option post_broker is required", common.USAGE)
    try:
        who = None if withdraw else ([] if private else words[1].split(","))
        if who is not None:
            who = readers.check_readers(",".join(who))
        source = cfg.source or config_user(cfg)
        msg = readers.declaration(source, words[0], who, cfg.to or "", format_time(time.time()))
    except ValueError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    exchange = cfg.post_exchange or "xs_" + config_user(cfg)
    try:
        creds = Credentials.load()
        broker = Broker(cfg.post_broker, password_lookup=creds.password_for)
        broker.connect()
        try:
            topic, body, headers = msg.encode()
            broker.publish(exchange, topic, body, headers, persistent=True)
            broker.wait_confirms()
        finally:
            broker.close()
    except CredentialsError as e:
        return common.fail(PROGRAM, str(e), common.USAGE)
    except BrokerError as e:
        return common.fail(PROGRAM, str(e), common.BROKER)
    what = "withdrawn" if who is None else ("private" if not who else ",".join(who))
    print("%s: readers of %s:%s posted to %s: %s" % (PROGRAM, source, msg.relpath, exchange, what))
    return common.OK


def config_user(cfg) -> str:
    from sarra.broker.client import parse_url
    return parse_url(cfg.post_broker).user


if __name__ == "__main__":
    sys.exit(main())
