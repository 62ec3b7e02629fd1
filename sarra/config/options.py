"""The table of configuration options (config.md §5) and value conversion.

One row per option: canonical name, aliases (short forms and 2016 names), value type,
defaults per component ({component or '*': value}), the components that use it, help.
Component presets of config.md §3 are expressed as per-component defaults here;
defaults that depend on other options (post_exchange, to, report_exchange, ...) are
derived in sarra.config.parser after all files are read. Numeric options carry their allowed
range (lo, hi), checked by convert(). The command line and --help text: sarra.config.cli.
"""

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

# Value types.
STR = "str"
BOOL = "bool"
INT = "int"
SIZE = "size"            # 10M, powers of 1024
DURATION = "duration"    # seconds (float); units s m h d w
OCTAL = "octal"
LIST = "list"            # comma separated list of str
URL = "url"              # scheme://... (comma list allowed: round robin)
BROKER = "broker"        # amqp:// or amqps:// URL
WORDS = "words"          # set of event words
PLUGINS = "plugins"      # repeatable plugin names; None/off clears
CHOICE = "choice"
CACHE = "cache"          # suppress_duplicates: off | on (=300 s) | duration
STRIP = "strip"          # int or regex
INFLIGHT = "inflight"    # NONE -> None, number -> seconds, else a string
PARTS = "parts"          # v2 developer form of blocksize: 0 | 1 | i,<size>
# Types handled by the parser itself (repeatable and/or order sensitive).
MASK = "mask"            # accept / reject
SUBTOPIC = "subtopic"
PATH = "path"
HEADER = "header"
DECLARE = "declare"
INCLUDE = "include"

SPECIAL_TYPES = (MASK, SUBTOPIC, PATH, HEADER, DECLARE, INCLUDE)
#: Types with a number (or a number form): each option of these types has a minimum `lo`.
NUMERIC_TYPES = (INT, SIZE, DURATION, CACHE, STRIP, PARTS)

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0", "none")
BOOL_WORDS = TRUE_WORDS + FALSE_WORDS

EVENT_WORDS = ("create", "delete", "link", "modify", "move")
EVENT_ALIASES = {"created": "create", "deleted": "delete", "linked": "link",
                 "modified": "modify", "moved": "move"}

# Component groups (config.md §5 legend).
CONSUMERS = ("subscribe", "sarra", "sender", "shovel", "winnow", "report")
TRANSFER = ("subscribe", "sarra", "sender")
POSTERS = ("post", "watch", "poll")
PUBLISHERS = POSTERS + ("subscribe", "sarra", "sender", "shovel", "winnow")
ALL = ("*",)

HOOKS = (
    "on_message", "on_file", "on_part", "on_post", "on_heartbeat", "on_start", "on_stop",
    "on_report", "on_data", "on_watch", "on_line", "on_html_page", "do_download",
    "do_get", "do_send", "do_put", "do_poll", "do_task", "destfn_script", "plugin",
)


@dataclass(frozen=True)
class Option:
    name: str
    aliases: Tuple[str, ...]
    type: str
    default: Dict[str, Any]
    components: Tuple[str, ...]
    help: str
    choices: Tuple[str, ...] = field(default=())
    order_sensitive: bool = False
    lo: Optional[float] = None      # smallest value allowed (numeric types)
    hi: Optional[float] = None      # largest value allowed (None: no limit)

    def default_for(self, component: str) -> Any:
        value = self.default.get(component, self.default.get("*"))
        return copy.deepcopy(value)

    def used_by(self, component: str) -> bool:
        return "*" in self.components or component in self.components


def _o(name, aliases, type_, default, components, help_, choices=(), order=False, lo=None,
       hi=None):
    if not isinstance(default, dict):
        default = {"*": default}
    return Option(name, tuple(aliases), type_, default, tuple(components), help_,
                  tuple(choices), order, lo, hi)


_C, _S, _P = CONSUMERS, TRANSFER, POSTERS
_ROUTERS = ("sarra", "sender", "shovel", "winnow")
_K = 1024
_HOOK_HELP = "plugin hook (repeatable; None/off clears the list)"
_HOOK_USERS = dict(
    {h: CONSUMERS for h in ("on_message", "on_report", "do_task")},
    **{h: TRANSFER for h in ("on_file", "on_data", "do_download", "destfn_script")},
    on_part=TRANSFER + ("watch", "post"), on_post=PUBLISHERS, on_watch=("watch",),
    on_line=("poll",), on_html_page=("poll",), do_poll=("poll",), do_send=("sender",))

OPTIONS: Tuple[Option, ...] = (
    # --- structure of the configuration ---
    _o("include", ("config", "c"), INCLUDE, None, ALL, "read another configuration file here"),
    _o("declare", ("role",), DECLARE, None, ALL,
       "declare env NAME=value | source <u> | subscriber <u> | exchange <x>"),
    _o("header", (), HEADER, None, PUBLISHERS,
       "name=value added to every post that has no such header (name=None deletes it)"),
    _o("help", ("h",), BOOL, False, ALL, "print this help"),
    _o("no", (), INT, 0, ALL, "instance number (set by the instance launcher)", lo=0),
    # --- consuming ---
    _o("broker", ("b",), BROKER, None, _C + ("audit",),
       "AMQP URL to consume from; amqp://u@h1:5672,h2:5673/ names the nodes of a broker "
       "cluster, tried in turn (failover)"),
    _o("exchange", ("ex",), STR, {"*": "xpublic", "report": None}, _C,
       "exchange for the following subtopic lines", order=True),
    _o("exchange_suffix", (), STR, None, _C, "exchange := xs_<brokeruser>_<suffix>"),
    _o("exchange_split", (), BOOL, False, ("winnow",), "instance k binds <exchange>%02d(k-1)"),
    _o("topic_prefix", ("tp",), STR, {"*": "v02.post", "report": "v02.report"}, _C,
       "topic prefix for the following subtopic lines", order=True),
    _o("subtopic", ("sub",), SUBTOPIC, None, _C + _P,
       "binding key suffix (repeatable); posters: overrides the computed topic"),
    _o("queue_name", ("queue", "qn"), STR, None, _C, "queue to declare/consume"),
    _o("queue_suffix", (), STR, None, _C, "inserted in the generated queue name"),
    _o("queue_share", (), BOOL, True, _C, "2016 option, always true now (ignored)"),
    _o("node_shares", (), INT, 0, _C,
       "pump nodes: spread the work on N shard queues behind a consistent-hash exchange "
       "(a file's directory picks its shard), each consumed by one node at a time "
       "(single active consumer); 0 = one queue", lo=0, hi=1000),
    _o("nodes_state_dir", (), STR, None, ("winnow",),
       "with node_shares: a directory all the pump nodes share (NFS): the claims of each "
       "shard are kept there too, so that they follow the shard to the next node; default "
       "none (claims kept per host)"),
    _o("durable", (), BOOL, True, _C, "declare a durable queue"),
    _o("expire", ("expiry",), DURATION, 300.0, _C,
       "queue x-expires (seconds here; 0 = never)", lo=0),
    _o("message_ttl", ("message-ttl",), DURATION, None, _C,
       "queue x-message-ttl (seconds here; 0 = none)", lo=0),
    _o("queue_type", (), CHOICE, "classic", _C,
       "classic | quorum: quorum declares a replicated queue (x-queue-type quorum, always "
       "durable) that survives the loss of a broker node of a cluster",
       choices=("classic", "quorum")),
    _o("prefetch", (), INT, {"*": 25, "winnow": 100}, _C,
       "basic.qos prefetch count; messages are handled and acked in batches of that size "
       "when the component posts, of half of it when not; a batch's reports, posts to the "
       "broker consumed from, and acks are one AMQP transaction",
       lo=1, hi=65535),
    _o("declare_queue", ("dq",), BOOL, True, _C, "declare the queue"),
    _o("bind_queue", ("bq",), BOOL, True, _C, "bind the queue"),
    _o("declare_exchange", ("dx",), BOOL, True, _C, "declare exchanges"),
    _o("reset", (), BOOL, False, _C + _P + ("audit",),
       "at start, start afresh: a consumer deletes its queue (declared again, empty) and "
       "empties its duplicate cache and retry queue; sr_post/sr_watch/sr_poll empty their "
       "duplicate cache and forget what they announced; sr_police: reset users"),
    _o("persistent", (), BOOL, True, PUBLISHERS, "publish with delivery_mode 2"),
    # --- filtering ---
    _o("accept", ("get",), MASK, None, _C + _P,
       "accept <regex> [filename-option]: download/post matching URLs"),
    _o("reject", (), MASK, None, _C + _P, "reject <regex>: skip matching URLs"),
    _o("accept_unmatch", ("accept_unmatched", "au"), BOOL,
       {"*": True, "subscribe": False, "sender": False, "poll": False}, _C + _P,
       "accept URLs that match no accept/reject clause"),
    _o("log_reject", (), BOOL, False, _C + _P, "log each rejection"),
    # --- destination ---
    _o("directory", (), STR, ".", _S + ("poll",), "destination dir for the following accepts",
       order=True),
    _o("mirror", (), BOOL, {"*": False, "sarra": True, "sender": True}, _S,
       "keep the relpath tree under directory", order=True),
    _o("strip", (), STRIP, 0, _S + _P,
       "drop n leading path components (or the first regex match)", order=True, lo=0),
    _o("flatten", (), STR, "/", _S, "join path components with this string", order=True),
    _o("filename", (), STR, None, ("sender", "poll", "subscribe"),
       "Sundew destination name rules for the following accepts, ':'-separated: WHATFN, "
       "HEADFN, SENDER, NONE, NONESENDER, TIME, DESTFN=<name>, DESTFNSCRIPT=<plugin>, "
       "SATNET=<...> (an accept's third word wins)", order=True),
    _o("rename", ("rn",), STR, None, _P, "add a rename header (a dir if it ends with /)"),
    _o("base_dir", ("bd",), STR, None, _S + _P, "local root of file: relpaths / source files"),
    # --- posting ---
    _o("post_broker", ("pb",), BROKER, None, PUBLISHERS + ("readers",), "broker to post to"),
    _o("post_exchange", ("pe", "px"), STR, None, PUBLISHERS + ("readers",),
       "exchange to post to"),
    _o("post_exchange_suffix", (), STR, None, PUBLISHERS, "post_exchange := xs_<user>_<suffix>"),
    _o("post_exchange_split", ("pes", "pxs"), INT, 0, PUBLISHERS,
       "post to N exchanges <post_exchange>00..NN-1: the sum of the bytes of the sum header "
       "modulo N picks one (what sr_winnow's exchange_split reads)", lo=0, hi=100),
    _o("post_exchange_by_source", (), BOOL, False, ("shovel",),
       "post each message to <post_exchange><its source header> (post_exchange xr_: the "
       "source's xr_<source>); one with no usable source header, or whose exchange does "
       "not exist (asked first), is not posted (refused, acked)"),
    _o("post_topic_prefix", ("ptp",), STR, "v02.post", PUBLISHERS, "prefix of posted topics"),
    _o("post_base_url", ("pbu", "url", "u", "post_url"), URL, None, PUBLISHERS,
       "baseurl in posts; a comma list: posts take its URLs in turn (v2 round robin)"),
    _o("post_base_dir", ("pbd", "document_root", "dr", "post_document_root", "pdr"), STR,
       None, PUBLISHERS, "local prefix removed from paths to form the relpath"),
    _o("post_on_start", ("pos",), BOOL, True, ("watch",), "post every existing file at start"),
    _o("blocksize", (), SIZE, {"*": 0, "post": 200 * _K * _K, "watch": 200 * _K * _K}, _P,
       "partition size (0 = automatic, 1 = never partition)", lo=0),
    _o("parts", (), PARTS, None, _P,
       "v2 developer form of blocksize (sets it): 1 = never partition, i,<size>, "
       "0 = automatic", lo=0),
    _o("sum", (), STR, {"*": "d", "poll": "z,d"}, _P, "checksum algorithm"),
    _o("randomize", ("r",), BOOL, False, _P,
       "v2 test aid: random sum algorithm and block order (refused when on)"),
    _o("path", ("p",), PATH, None, ("post", "watch"), "file or directory to post/watch"),
    _o("pipe", (), BOOL, False, ("post",), "read paths from stdin"),
    _o("events", ("e",), WORDS, frozenset(("create", "delete", "link", "modify")),
       ("watch", "post", "subscribe", "sarra", "sender"),
       "file events to post: create|delete|link|modify (sr_post: with delete, a path that "
       "does not exist is announced as removed)"),
    _o("sleep", (), DURATION, 0.0, ("watch", "poll", "cpost"),
       "watch: aggregation interval; poll: seconds between polls", lo=0),
    _o("force_polling", ("fp",), BOOL, False, ("watch",), "stat polling instead of inotify"),
    _o("snapshot_interval", (), DURATION, 0.0, ("watch",),
       "post a file still being written every this many seconds (all its blocks); 0 = never",
       lo=0),
    _o("ignore_written", (), BOOL, False, ("watch",),
       "skip files written by an sr_subscribe/sr_sarra on the same tree (user.sr_origin mark)"),
    _o("follow_symlinks", ("fs",), BOOL, False, ("watch", "post"), "post link targets too"),
    _o("realpath_post", ("realpath", "real"), BOOL, False, ("watch", "post"),
       "canonicalise paths before posting"),
    _o("realpath_filter", ("fr",), BOOL, False, ("watch", "post"),
       "canonicalise paths before filtering"),
    _o("to", (), STR, None, _P + ("sender", "readers"),
       "to_clusters header (default: post_broker host)"),
    _o("cluster", ("cl", "from_cluster", "fc"), STR, None, _P + _S + ("shovel", "winnow"),
       "from_cluster value; with cluster_routing: the cluster the output lands on"),
    _o("cluster_aliases", ("ca",), LIST, [], _ROUTERS, "other names of cluster in to_clusters"),
    _o("gateway_for", ("gf",), LIST, [], _ROUTERS,
       "clusters this pump forwards to (accepted in to_clusters)"),
    _o("cluster_routing", (), BOOL, False, _ROUTERS,
       "keep only posts whose to_clusters names cluster, an alias or gateway_for; "
       "never pass on a message twice through one cluster (cluster_path header)"),
    _o("source", (), STR, None, _P + _S + ("readers",), "default source header"),
    _o("source_from_exchange", ("sfe",), BOOL, False, ("sarra",),
       "derive source from the xs_<user> exchange"),
    _o("fetch_schemes", (), LIST, ["http", "https", "sftp", "ftp", "ftps"], ("sarra",),
       "with source_from_exchange: URL schemes a source may make the pump fetch from "
       "(add file for file: URLs, then only below base_dir)"),
    _o("fetch_hosts", (), LIST, [], ("sarra",),
       "with source_from_exchange: hosts a source may make the pump fetch from "
       "(host, host:port, *.domain; empty: any)"),
    _o("quota", (), LIST, [], ("sarra",),
       "what each source may keep in the tree: source=size[/files],... (* for the "
       "others; source=off: none); a post over it is refused (403); empty: no quota"),
    _o("quota_check", (), DURATION, 600.0, ("sarra",),
       "with quota: seconds between two checks of the sources' files on disk (drift)",
       lo=10),
    _o("metrics_dir", (), STR, None, _C + ("watch", "poll"),
       "directory of node_exporter's textfile collector: each instance writes its "
       "Prometheus metrics there (sarra_<component>_<config>_<NN>.prom); default off"),
    _o("downstream_accounts", (), LIST, [], ("sarra",),
       "accounts of the downstream pumps here: they get the readers declarations and "
       "every restricted post, on xp_<account>"),
    _o("htaccess", (), BOOL, False, ("sarra",),
       "write .htaccess (Require user ...) where restricted data is written"),
    _o("web_root", (), STR, None, ("audit",),
       "sr_police web: the pump's tree the web server serves (default post_base_dir)"),
    _o("web_dir", (), STR, None, ("audit",),
       "sr_police web: where htpasswd and sarra-site.conf go (default ~/.config/sarra/web)"),
    _o("web_listen", (), STR, "*:443", ("audit",),
       "sr_police web: the address:port of the HTTPS site"),
    _o("web_cert", (), STR, "/etc/ssl/certs/ssl-cert-snakeoil.pem", ("audit",),
       "sr_police web: the site's certificate (PEM)"),
    _o("web_key", (), STR, "/etc/ssl/private/ssl-cert-snakeoil.key", ("audit",),
       "sr_police web: the site's private key (PEM)"),
    # --- transfer ---
    _o("inplace", ("in", "assemble"), BOOL, {"*": True, "sarra": False}, _S,
       "write blocks into the target file"),
    _o("inflight", ("lock",), INFLIGHT,
       {"*": None, "subscribe": ".tmp", "sender": ".tmp"}, _S + _P,
       "temp name while writing (.tmp, ., tmp/, NONE); posters: min age in seconds"),
    _o("overwrite", ("o",), BOOL, False, _S, "always download even if the local file matches"),
    _o("discard", ("d", "download-and-discard"), BOOL, False, ("subscribe",),
       "delete after download (tests)"),
    _o("notify_only", ("n", "no_download"), BOOL,
       {"*": False, "shovel": True, "winnow": True, "report": True}, _C, "do not download"),
    _o("outlet", (), CHOICE, "post", _C,
       "without a post_broker: post (nothing), json (a JSON line per message on stdout) "
       "or url (its URL)", choices=("post", "json", "url")),
    _o("delete", (), BOOL, False, _S,
       "delete the source once the whole file is downloaded and verified (sftp, ftp, "
       "file; not http); sr_sender: the local file once sent and its post confirmed "
       "(needs base_dir; never a file sent in blocks or changed since)"),
    _o("attempts", ("at",), INT, 3, _S, "tries before the retry queue (0 = 1)", lo=0),
    _o("retry", ("retry_mode",), BOOL, True, _C, "keep failed messages in a retry queue"),
    _o("retry_ttl", (), DURATION, None, _C, "retry queue expiry (default: expire)", lo=0),
    _o("timeout", (), DURATION, 300.0, _S + _P,
       "transfer inactivity timeout (0, as v2 documents it, = the default 5m)", lo=0),
    _o("transfer_min_rate", (), SIZE, 4 * _K, ("subscribe", "sarra"),
       "bytes/s a download must average after transfer_grace (deadline: grace + size/rate; "
       "0 = no time bound)", lo=0),
    _o("transfer_grace", (), DURATION, 30.0, ("subscribe", "sarra"),
       "seconds a download may take before transfer_min_rate applies; after it, a slow "
       "download holds one of instances-1 slots of its source (pump) or server", lo=0),
    _o("transfer_penalty", (), DURATION, 300.0, ("subscribe", "sarra"),
       "after a download missed its deadline, defer its source's (server's) others this long",
       lo=0),
    _o("kbytes_ps", (), INT, 0, _S,
       "bandwidth limit of each instance in KiB/s, downloads and sends (0 = none)", lo=0),
    _o("kbytes_ps_shared", (), INT, 0, _S,
       "bandwidth limit of the whole flow in KiB/s: all its instances, on every node "
       "sharing the broker; a meter releases the messages at that rate (0 = none)", lo=0),
    _o("message_rate_max", ("messageRateMax",), INT, 0, _C,
       "most messages each instance takes per second (sr3's messageRateMax; 0 = no limit)",
       lo=0),
    _o("batch", (), INT, 0, ("sender",),
       "files per connection: after that many the session is closed and the next file opens "
       "a new one; 0 = keep it open (reconnected when dropped; v2's default was 100)", lo=0),
    _o("chmod", ("default_mode", "dm"), OCTAL, {"*": 0, "poll": 0o400}, _S + ("poll",),
       "mode of written files (poll: required-permission mask)"),
    _o("chmod_dir", ("default_dir_mode", "ddm"), OCTAL, 0o775, _S, "mode of created dirs"),
    _o("chmod_log", ("default_log_mode", "dlm"), OCTAL, 0o600, ALL,
       "mode of the log files (0 = the default 0600)"),
    _o("preserve_mode", ("pm",), BOOL, True, _S + _P,
       "carry/apply the mode header (never setuid/setgid; sr_sarra: never world-writable)"),
    _o("unchecked_sums", (), BOOL, False, ("sarra",),
       "accept posts whose sum checks no data (0, n, a, p, z,n); off: refused with 403"),
    _o("preserve_time", ("pt",), BOOL, True, _S + _P, "carry/apply mtime/atime"),
    _o("bufsize", (), SIZE, _K * _K, _S + _P, "I/O buffer size", lo=1),
    _o("xattr_disable", ("xd",), BOOL, False, _S + _P, "no extended attributes for sums"),
    # --- duplicates ---
    _o("suppress_duplicates", ("caching", "cache", "no_duplicates", "nd", "sd"), CACHE,
       {"*": 0.0, "winnow": 1200.0, "poll": 1200.0}, _C + _P,
       "duplicate cache lifetime (on = 300 s, off = 0)", lo=0),
    _o("suppress_duplicates_basis", ("sdb", "cache_basis", "cb"), CHOICE, "path", _C + _P,
       "data | name | path", choices=("data", "name", "path")),
    _o("cache_stat", (), BOOL, True, ("winnow",), "log cache statistics"),
    _o("winnow_link", (), BOOL, False, ("winnow",),
       "post a known checksum under a new path as an L link to the first copy"),
    # --- reports ---
    _o("report_back", ("reportback", "rb", "log_back"), BOOL,
       {"*": True, "sarra": False, "report": False}, _C, "publish reports"),
    _o("report_exchange", ("lx", "le", "log_exchange"), STR, None, _C,
       "report destination (default xs_<user>, xreport for feeder/admin)"),
    _o("summary_window", (), DURATION, 3600.0, ("report",),
       "summary: a consumer that reported on a file of the source at most this long "
       "before a file was posted is expected to report on it too", lo=0),
    _o("summary_expect", (), LIST, [], ("report",),
       "summary: the consumers (user or user@host) expected to report on every file, "
       "in place of those summary_window infers"),
    # --- sender / poll ---
    _o("destination", (), URL, None, ("sender", "poll"), "remote URL"),
    _o("file_time_limit", (), DURATION, 60 * 86400.0, ("poll",),
       "ignore remote files older than this", lo=1),
    _o("destination_timezone", (), STR, "UTC", ("poll",),
       "time zone of the dates listings show (ls lines, index pages; MLSD and SFTP give "
       "true times)"),
    # --- processes and logs ---
    _o("instances", ("i", "instance"), INT, 1, _C + ("poll",), "worker processes", lo=1),
    _o("heartbeat", (), DURATION, 300.0, ALL, "housekeeping interval (0 = the default 5m)",
       lo=0),
    _o("sanity_log_dead", ("sld",), DURATION, None, ALL,
       "restart an instance whose log is older (default 1.5 x heartbeat; 0 = never)", lo=0),
    _o("loglevel", ("ll",), CHOICE, "info", ALL, "debug|info|warning|error|critical|none",
       choices=("debug", "info", "warning", "error", "critical", "none")),
    _o("debug", (), BOOL, False, ALL, "same as loglevel debug"),
    _o("logdays", ("ld", "logrotate", "lr"), INT, 5, ALL, "rotated logs kept (0 = all)",
       lo=0),
    _o("logrotate_interval", ("lri",), DURATION, 86400.0, ALL,
       "log rotation interval: whole days rotate at midnight, else every that many hours, "
       "minutes or seconds", lo=1),
    _o("vip", (), LIST, [], _C + ("poll",),
       "work only while one of these IP addresses is on a local interface (active/passive); "
       "else stand by, checking every 5 s"),
    _o("poll_without_vip", ("pwv",), BOOL, True, ("poll",),
       "v2: the standby node keeps listing (without posting) to stay current"),
    _o("interface", (), STR, None, _C + ("poll",), "network interface of the vip (ignored)"),
    _o("save", (), BOOL, False, _C,
       "append each message to the save file (fsynced) and acknowledge it, unprocessed"),
    _o("restore", (), BOOL, False, _C,
       "at start, publish the save file back into the queue, in order, then work as usual"),
    _o("save_file", ("sf",), STR, None, _C,
       "save file: <save_file>_NN.save (NN: the instance) instead of the state directory's"),
    _o("restore_to_queue", ("rq", "post_queue"), STR, None, _C,
       "at start, publish the save file into this queue (it must exist), then stop"),
    _o("tls_rigour", ("tlsr", "tls_rigor"), CHOICE, "medium", ALL,
       "TLS checks: medium and strict both verify certificates and host names, TLS 1.2 at "
       "least (v2 strict); lax (v2: no checks) is refused", choices=("lax", "medium", "strict")),
    _o("statehost", (), BOOL, False, ALL,
       "insert the host name in state/log dirs (~/.cache/sarra/<host>/: home directories "
       "shared by several nodes); put it in default.conf, where sr and its supervisor read it"),
    _o("hostform", (), CHOICE, "fqdn", ALL, "short | fqdn host name for statehost",
       choices=("short", "fqdn")),
    # --- v03 ---
    _o("inline", (), BOOL, False, PUBLISHERS, "v03: embed small files"),
    _o("inline_max", (), INT, 1024, PUBLISHERS, "v03: largest inlined file", lo=0),
    _o("inline_encoding", (), STR, "guess", PUBLISHERS, "v03: text | binary | guess"),
    # --- pump administration ---
    _o("admin", (), BROKER, None, ALL, "pump administrator broker URL"),
    _o("feeder", ("manager",), BROKER, None, ALL, "pump feeder broker URL"),
    _o("set_passwords", (), BOOL, True, ("audit",), "set passwords from credentials.conf"),
    _o("max_queue_size", (), INT, 25000, ("audit",), "delete unconsumed queues bigger than this",
       lo=0),
    _o("dry_run", (), BOOL, False, ("audit",), "print actions only"),
    _o("report_daemons", (), BOOL, False, ("audit",), "write report routing shovels"),
) + tuple(
    _o(hook, {"on_heartbeat": ("on_hb",), "on_report": ("on_rpt",)}.get(hook, ()), PLUGINS,
       {
           "on_file": {"*": [], "subscribe": ["file_log"], "sarra": ["file_log"],
                       "sender": ["file_log"]},
           "on_post": dict({"*": []}, **{c: ["post_log"] for c in PUBLISHERS}),
           "on_heartbeat": dict({"*": ["hb_log", "hb_memory"]},
                                **{c: ["hb_log", "hb_memory", "hb_retry"] for c in CONSUMERS}),
           "on_line": {"*": [], "poll": ["line_mode", "line_date"]},
           "on_html_page": {"*": [], "poll": ["html_page"]},
           "on_message": {"*": [], "sender": ["msg_2localfile"]},
       }.get(hook, {"*": []}), _HOOK_USERS.get(hook, ALL), _HOOK_HELP)
    for hook in HOOKS
)

# the v2 options accepted but not acted on, and why: ignored.py
from sarra.config.ignored import (NOT_ACTED_ON, NOT_ACTED_TEXT, NOT_YET,  # noqa: F401,E402
                                  acted_on, ignored_part, ignored_text)


_BY_NAME: Dict[str, Option] = {}
for _opt in OPTIONS:
    for _key in (_opt.name,) + _opt.aliases:
        if _key in _BY_NAME:
            raise RuntimeError("option table: %r defined twice" % _key)
        _BY_NAME[_key] = _opt
for _key in NOT_ACTED_ON:
    if _key not in _BY_NAME or _BY_NAME[_key].name != _key:
        raise RuntimeError("option table: NOT_ACTED_ON names %r, not an option" % _key)
for _opt in OPTIONS:
    if _opt.type in NUMERIC_TYPES and _opt.lo is None:
        raise RuntimeError("option table: %r has no minimum (lo)" % _opt.name)


def lookup(name: str) -> Optional[Option]:
    """Option for a canonical name or alias ('pb', 'log_exchange', ...), else None."""
    opt = _BY_NAME.get(name)
    if opt is None and "-" in name:
        opt = _BY_NAME.get(name.replace("-", "_"))
    return opt


def canonical(name: str) -> Optional[str]:
    opt = lookup(name)
    return opt.name if opt else None


def defaults_for(component: str) -> Dict[str, Any]:
    """{option name: default value} for a component (fresh copies, safe to mutate)."""
    from sarra.paths import canonical_component
    component = canonical_component(component)
    return {o.name: o.default_for(component) for o in OPTIONS if o.type not in SPECIAL_TYPES}


# ---------------------------------------------------------------- conversions

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([bkmgt]?)(?:i?b)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": _K, "m": _K ** 2, "g": _K ** 3, "t": _K ** 4}
_DUR_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*$", re.I)
_DUR_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def parse_bool(text: Optional[str]) -> bool:
    if text is None or text.strip() == "":
        return True
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("bad boolean %r (use on/off)" % text)


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError("bad size %r" % text)
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_duration(text: str) -> float:
    m = _DUR_RE.match(text)
    if not m:
        raise ValueError("bad duration %r" % text)
    return float(m.group(1)) * _DUR_UNITS[m.group(2).lower()]


def parse_octal(text: str) -> int:
    t = text.strip().lower()
    if t.startswith("0o"):
        t = t[2:]
    try:
        value = int(t, 8)
    except ValueError:
        raise ValueError("bad octal mode %r" % text) from None
    if value > 0o7777:
        raise ValueError("bad octal mode %r" % text)
    return value


def parse_events(text: str) -> frozenset:
    words = [w for w in re.split(r"[|,\s]+", text.strip()) if w]
    out = set()
    for w in words:
        w = EVENT_ALIASES.get(w.lower(), w.lower())
        if w not in EVENT_WORDS:
            raise ValueError("bad event %r (use %s)" % (w, "|".join(EVENT_WORDS)))
        out.add(w)
    if not out:
        raise ValueError("no events given")
    return frozenset(out)


def url_list(text: str) -> list:
    """The URLs of a comma list (v2 round robin); a comma inside a URL's query string
    (`...?format=waterml,2.0&...`) is part of that URL."""
    out: list = []
    for part in text.split(","):
        if out and "?" in out[-1] and not _URL_RE.match(part.strip()):
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def _strip_trailing_comment(text: str) -> str:
    m = re.search(r"\s#", text)
    return text[:m.start()] if m else text


def convert(opt: Option, text: Optional[str]) -> Any:
    """Convert the value text of a (non special) option; ValueError('bad size ...',
    '-3 is below the minimum 1')."""
    value = _convert(opt, text)
    if opt.lo is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        shown = _strip_trailing_comment(text or "").strip()
        unit = " s" if opt.type in (DURATION, CACHE) else ""
        if value < opt.lo:
            raise ValueError("%s is below the minimum %g%s" % (shown, opt.lo, unit))
        if opt.hi is not None and value > opt.hi:
            raise ValueError("%s is above the maximum %g%s" % (shown, opt.hi, unit))
    return value


def _convert(opt: Option, text: Optional[str]) -> Any:
    t = opt.type
    if t == BOOL:
        return parse_bool(None if text is None else _strip_trailing_comment(text))
    if text is None or text.strip() == "":
        raise ValueError("missing value")
    text = text.strip()
    if t in (STR, PLUGINS):
        return text
    text = _strip_trailing_comment(text).strip()
    if t == INT:
        try:
            return int(text)
        except ValueError:
            raise ValueError("bad integer %r" % text) from None
    if t == SIZE:
        return parse_size(text)
    if t == DURATION:
        return parse_duration(text)
    if t == OCTAL:
        return parse_octal(text)
    if t == LIST:
        words = [w.strip() for w in text.split(",") if w.strip()]
        if opt.name == "quota":
            from sarra.config import quotaspec
            quotaspec.parse(words)          # ValueError: the entry that is wrong
        return words
    if t == BROKER:
        return _broker_url(text)
    if t == URL:
        for part in url_list(text):
            if not _URL_RE.match(part.strip()):
                raise ValueError("bad URL %r" % part.strip())
        return text
    if t == WORDS:
        return parse_events(text)
    if t == CHOICE:
        word = text.lower()
        if word == "warn":
            word = "warning"
        elif word == "normal" and opt.name == "tls_rigour":
            word = "medium"             # v2's own name for its default
        if word not in opt.choices:
            raise ValueError("bad value %r (use %s)" % (text, " | ".join(opt.choices)))
        return word
    if t == CACHE:
        word = text.lower()
        if word in FALSE_WORDS:
            return 0.0
        if word in ("on", "true", "yes"):
            return 300.0
        return parse_duration(text)
    if t == STRIP:
        if re.match(r"^-?\d+$", text):      # a count (a negative one is refused)
            return int(text)
        try:
            re.compile(text)
        except re.error as e:
            raise ValueError("bad regex %r: %s" % (text, e)) from None
        return text
    if t == INFLIGHT:
        if text.lower() == "none":
            return None
        if _DUR_RE.match(text):
            return parse_duration(text)
        return text
    if t == PARTS:
        return parse_parts(text)
    raise ValueError("option cannot be converted (type %s)" % t)


def _broker_url(text: str) -> str:
    """An amqp:// or amqps:// URL checked as the broker code will read it."""
    from sarra.config.brokerurl import parse_url
    if not _URL_RE.match(text) or text.split(":", 1)[0].lower() not in ("amqp", "amqps"):
        from sarra.config.brokerurl import _display
        raise ValueError("bad broker URL %s (need amqp:// or amqps://)" % _display(text))
    parse_url(text)     # ValueError naming the URL without its password
    return text


def parse_parts(text: str) -> int:
    """v2 `parts` (checksums-and-parts.md §3.1) as the blocksize it sets: 0 (automatic),
    1 (never partition) or i,<size>; p,... describes a received part, not a posting."""
    method, sep, size = (w.strip() for w in text.strip().partition(","))
    if not sep and method in ("0", "1"):
        return int(method)
    if method.lower() == "i" and sep and size:
        return parse_size(size)
    if method.lower() == "p":
        raise ValueError("%r: p (partitioned) cannot be posted; use 1, i,<size> or 0" % text)
    raise ValueError("bad parts %r (use 1, i,<size> or 0)" % text)


def format_value(opt: Optional[Option], value: Any) -> str:
    """Text form of a value, as it could be written in a config file."""
    if value is None:
        return "None"
    t = opt.type if opt else None
    if isinstance(value, bool):
        return "on" if value else "off"
    if t == OCTAL:
        return "%04o" % value
    if t == PARTS and value > 1:
        return "i," + format_value(_BY_NAME["blocksize"], value)
    if t == SIZE and value:
        for unit in "TGMK":
            if value % _SIZE_UNITS[unit.lower()] == 0:
                return "%d%s" % (value // _SIZE_UNITS[unit.lower()], unit)
    if t == WORDS:
        return "|".join(sorted(value))
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else "None"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
