"""Configuration parser (config.md §1-§3) producing a `Config`.

Read order: default.conf, admin.conf, <component>.conf, the configuration file, then
command-line options; later wins. Every value remembers where it came from
(`origin()`, `show()`). `directory`/`mirror`/`strip`/`flatten`/`filename` apply to the
accept/reject lines that follow them and `exchange`/`topic_prefix` to the subtopic lines
that follow them; every other option is global (last value wins) and defaults that
depend on other options are derived once everything is read.  ${...} variables are
expanded by sarra.config.variables (its public names are re-exported here).
"""

import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Pattern, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit

from sarra.config import options as O
from sarra import paths
from sarra.config import hints as optionhints
from sarra.config import v2refuse
from sarra.config.variables import (PER_MESSAGE_VARS, RANDID, LoadVars,  # noqa: F401 (API)
                                    expand_broker_user, expand_message_vars, is_per_message_var,
                                    random_queue_suffix, sundew_vars)
from sarra.config.credentials import redact
from sarra.config.cli import parse_cli  # noqa: F401  (part of this module's API)
from sarra.config.includes import include_paths
from sarra.config.words import option_line
from sarra.config.names import ConfigError, config_name, resolve_config  # noqa: F401 (API)

logger = logging.getLogger("sarra.config")

#: the origin named for options given on the command line
CLI_ORIGIN = "command line"

MAX_INCLUDE_DEPTH = 32

ORDER_MASK = ("directory", "mirror", "strip", "flatten", "filename")
ORDER_BINDING = ("exchange", "topic_prefix")
#: appended by Config.show() to the options this component accepts but does not act on
NOT_ACTED_MARK = "  [v2 compatibility: not acted on, ignored]"


@dataclass
class Mask:
    pattern: str
    regex: Pattern
    accept: bool
    directory: Optional[str]
    mirror: bool
    strip: Union[int, str]
    flatten: str
    filename: Optional[str]
    origin: str

    def match(self, url: str) -> bool:
        return self.regex.match(url) is not None


@dataclass
class Binding:
    exchange: str
    topic_prefix: str
    subtopic: str
    origin: str

    @property
    def key(self) -> str:
        return self.topic_prefix + "." + self.subtopic


def _url_user(url: Optional[str]) -> str:
    if not url:
        return "anonymous"
    try:
        user = urlsplit(url).username
    except ValueError:
        return "anonymous"
    return unquote(user) if user else "anonymous"


def _url_host(url: Optional[str]) -> Optional[str]:
    try:
        return urlsplit(url).hostname if url else None
    except ValueError:
        return None


class Config:
    """Effective configuration of one component/configuration.

    Options are attributes by canonical name (cfg.broker, cfg.blocksize); unknown
    options (plugin settings) are attributes holding a list of strings.
    """

    def __init__(self, component: str, name: Optional[str] = None,
                 config_path: Optional[str] = None):
        component = paths.canonical_component(component)
        values = O.defaults_for(component)
        self.__dict__.update(
            component=component, program=paths.program_name(component), name=name,
            config_path=config_path, _values=values, _origins={}, _explicit=set(),
            masks=[], bindings=[], paths=[], headers={}, cleared_hooks=set(), unknown={},
            _unknown_origins={}, files=[], plugins={h: values[h] for h in O.HOOKS},
            declared={"env": {}, "source": [], "subscriber": [], "exchange": []})
        self._values["subtopic"] = None
        self._values["path"] = self.paths
        self._values["header"] = self.headers

    # -- attribute access ------------------------------------------------
    def __getattr__(self, attr: str) -> Any:
        d = self.__dict__
        values = d.get("_values")
        if values is None:
            raise AttributeError(attr)
        if attr in values:
            return values[attr]
        name = O.canonical(attr)
        if name in values:
            return values[name]
        if attr in d.get("unknown", {}):
            return d["unknown"][attr]
        raise AttributeError("%s has no option %r" % (self.program, attr))

    def __setattr__(self, attr: str, value: Any) -> None:
        if attr in self._values or O.canonical(attr) in self._values:
            self.set(attr, value)
        else:
            self.__dict__[attr] = value

    def __repr__(self) -> str:
        return "Config(%s, %s)" % (self.component, self.name)

    def set(self, name: str, value: Any, origin: str = "program") -> None:
        """Set an option value directly (already converted)."""
        canon = O.canonical(name) or name
        self._values[canon] = value
        if canon in self.plugins:
            self.plugins[canon] = value
        self._origins[canon] = origin
        self._explicit.add(canon)

    def origin(self, name: str) -> str:
        """'default', 'file:line', 'command line' (or 'program' when set by code)."""
        canon = O.canonical(name) or name
        if canon in self._unknown_origins:
            return self._unknown_origins[canon]
        return self._origins.get(canon, "default")

    def is_set(self, name: str) -> bool:
        """True if the option was given explicitly (file, command line, program)."""
        return (O.canonical(name) or name) in self._explicit

    def values(self) -> Dict[str, Any]:
        return dict(self._values)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            return default

    def bindings_subtopic(self) -> Optional[str]:
        """Posters: the last `subtopic` given (overrides the computed topic), else None."""
        return self._values.get("subtopic")

    # -- derived helpers --------------------------------------------------
    def broker_user(self) -> str:
        return _url_user(self._values.get("broker"))

    def post_broker_user(self) -> str:
        return _url_user(self._values.get("post_broker"))

    def broker_netloc(self) -> Optional[str]:
        """Host of `broker` plus ':port' if the URL names one (default from_cluster)."""
        url = self._values.get("broker")
        return urlsplit(url).netloc.rpartition("@")[2] if url else None

    def queue_name_default(self, random_suffix: Optional[str] = None,
                           instance: Optional[int] = None) -> str:
        """q_<brokeruser>.sr_<component>[NN].<config>[.<queue_suffix>].<r1>.<r2>."""
        prog = self.program
        if instance and self._values.get("exchange_split"):
            prog += "%02d" % (instance - 1)
        parts = ["q_" + self.broker_user(), prog, self.name or "default"]
        if self._values.get("queue_suffix"):
            parts.append(self._values["queue_suffix"])
        parts.append(random_suffix or random_queue_suffix())
        return ".".join(parts)

    def instance_bindings(self, instance: int) -> List[Binding]:
        """Bindings of instance N: with exchange_split each binds <exchange>%02d(N-1)."""
        if not self._values.get("exchange_split"):
            return list(self.bindings)
        return [Binding("%s%02d" % (b.exchange, instance - 1), b.topic_prefix, b.subtopic,
                        b.origin) for b in self.bindings]

    def state_host(self) -> Optional[str]:
        if not self._values.get("statehost"):
            return None
        host = socket.getfqdn()
        return host.split(".")[0] if self._values.get("hostform") == "short" else host

    def state_dir(self, create: bool = True) -> str:
        return paths.state_dir(self.component, self.name, self.state_host(), create)

    def log_dir(self, create: bool = True) -> str:
        return paths.log_dir(self.state_host(), create)

    def queue_name_file(self) -> str:
        """State file holding the generated queue name."""
        return os.path.join(self.state_dir(), "%s.%s.%s.qname" % (
            self.program, self.name or "default", self.broker_user()))

    def filter(self, url: str) -> Tuple[bool, Optional[Mask]]:
        """(accepted, mask): first matching accept/reject wins, else accept_unmatch."""
        for m in self.masks:
            if m.match(url):
                return m.accept, m
        return bool(self._values.get("accept_unmatch")), None

    def message_vars(self) -> Dict[str, str]:
        v = self._values
        out = {"BD": v.get("base_dir"), "PBD": v.get("post_base_dir"),
               "PDR": v.get("post_base_dir"), "DR": v.get("post_base_dir") or v.get("base_dir")}
        return {k: val for k, val in out.items() if val is not None}

    def expand_message_vars(self, text: str, msg_source: Optional[str] = None, now=None,
                            extra: Optional[Dict[str, Any]] = None) -> str:
        merged = self.message_vars()
        merged.update(extra or {})
        return expand_message_vars(text, msg_source, now, merged)

    def check_unknown(self, declared: Sequence[str] = ()) -> List[str]:
        """Warn about unknown options not declared by plugins, naming the nearest known
        one; returns their names. One that misspells an option of the table (and cannot be
        a plugin's, see sarra.config.hints) is a ConfigError naming file, line and option."""
        declared = set(declared)
        names = [n for n in self.unknown if n not in declared]
        errors = []
        for n in names:
            origin = self._unknown_origins[n]
            taken = self.unknown[n][-1] if origin == CLI_ORIGIN else ""
            # on the command line it may have eaten a path or an action
            text = "%s: unknown option '%s'%s%s" % (
                origin, n, " (it took '%s' as its value)" % redact(taken) if taken else "",
                optionhints.hint(n, declared))
            if optionhints.misspelled(n, declared):
                errors.append(text)
            else:
                logger.warning("%s", text)
        if errors:
            raise ConfigError("; ".join(errors))
        return names

    def show(self) -> str:
        """Every effective option sorted by name: value and origin (passwords masked);
        options this component accepts but does not act on are marked NOT_ACTED_MARK."""
        lines = []
        for opt in sorted(O.OPTIONS, key=lambda o: o.name):
            if opt.type in O.SPECIAL_TYPES or opt.name in ("help",):
                continue
            value = O.format_value(opt, self._values.get(opt.name))
            mark = "" if O.acted_on(opt.name, self.component) else \
                NOT_ACTED_MARK[:-1] + ": " + O.NOT_ACTED_ON[opt.name][1] + "]"
            lines.append("%-26s %-40s %s%s" % (opt.name, redact(value), self.origin(opt.name),
                                               mark))
        for n in sorted(self.unknown):
            lines.append("%-26s %-40s %s" % (n, redact(" ".join(self.unknown[n])),
                                             self._unknown_origins[n]))
        for m in self.masks:
            lines.append("%-26s %-40s %s" % (
                "accept" if m.accept else "reject", m.pattern,
                "%s (directory=%s mirror=%s strip=%s flatten=%s filename=%s)" % (
                    m.origin, m.directory, O.format_value(None, m.mirror), m.strip,
                    m.flatten, m.filename)))
        for b in self.bindings:
            lines.append("%-26s %-40s %s" % ("binding", "%s %s" % (b.exchange, b.key),
                                             b.origin))
        for k, val in self.headers.items():
            lines.append("%-26s %-40s" % ("header", "%s=%s" % (k, val)))
        for p in self.paths:
            lines.append("%-26s %-40s" % ("path", p))
        for kind in ("source", "subscriber", "exchange"):
            for who in self.declared[kind]:
                lines.append("%-26s %-40s" % ("declare", kind + " " + who))
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ loading

#: read before every component's own files, in this order
SHARED_FILES = ("default.conf", "admin.conf")


def load(component: str, config: Optional[str] = None, cli=None,
         warn_unknown: bool = True, set_state_host: bool = True) -> Config:
    """Read all configuration layers for `component` and return the effective Config.

    cli: list of (key, value-or-None) pairs, or a raw argv list (see parse_cli).
    warn_unknown=False defers unknown-option warnings to Config.check_unknown(); otherwise
    an unknown option is warned about unless a configured plugin reads it.
    set_state_host: make the configuration's `statehost` the one of this process (see
    paths.set_state_host); the umbrella command and the supervisor keep default.conf's.
    """
    component = paths.canonical_component(component)
    name, path = resolve_config(component, config)
    cfg = Config(component, name, path)
    parser = _Parser(cfg, warn_unknown)
    cdir = paths.config_dir()
    for fname in SHARED_FILES + (component + ".conf",):
        parser.read_file(os.path.join(cdir, fname), required=False)
    if path:
        parser.read_file(path, required=True)
    if cli:
        if all(isinstance(a, str) for a in cli):
            pairs, extra = parse_cli(list(cli))
            if extra:
                raise ConfigError("command line: unexpected argument '%s'" % extra[0])
        else:
            pairs = list(cli)
        for key, value in pairs:
            parser.apply(key.lstrip("-"), value, CLI_ORIGIN, None, [])
    parser.finalize()
    if set_state_host:      # pid, log, retry, cache... files follow it
        paths.set_state_host(cfg.state_host())
    if warn_unknown and cfg.unknown:
        from sarra import plugin
        cfg.check_unknown(plugin.declared_options(cfg.plugins))
    return cfg


def use_default_state_host() -> Optional[str]:
    """Set this process's `statehost` from default.conf and admin.conf alone and return it:
    for the umbrella command and the supervisor, which belong to no one configuration."""
    cfg = Config("subscribe", None, None)
    parser = _Parser(cfg, warn_unknown=False)
    cdir = paths.config_dir()
    for fname in SHARED_FILES:
        parser.read_file(os.path.join(cdir, fname), required=False)
    host = cfg.state_host()
    paths.set_state_host(host)
    return host


class _Parser:
    def __init__(self, cfg: Config, warn_unknown: bool):
        self.cfg = cfg
        self.warn_unknown = warn_unknown
        self.vars = LoadVars(cfg)
        v = cfg._values
        # Values in force for the order sensitive options (None = derived default).
        self.cur: Dict[str, Any] = {n: v[n] for n in ORDER_MASK + ORDER_BINDING}
        self.cur["directory"] = None
        self.cur["exchange"] = None
        self.warned = set()     # options already reported as not acted on

    # -- files -----------------------------------------------------------
    def read_file(self, path: str, required: bool, stack: Optional[List[str]] = None,
                  origin: Optional[str] = None) -> None:
        stack = stack or []
        real = os.path.realpath(path)
        if real in stack:
            chain = " -> ".join(stack[stack.index(real):] + [real])
            raise ConfigError("%s: include loop: %s" % (origin or path, chain))
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise ConfigError("%s: includes nested too deeply" % (origin or path))
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            if not required:
                return
            raise ConfigError(self._read_error(path, origin, "No such file or directory"))
        except OSError as e:
            raise ConfigError(self._read_error(path, origin, e.strerror or str(e))) from None
        except UnicodeDecodeError:
            raise ConfigError(self._read_error(path, origin, "not UTF-8 text")) from None
        self.cfg.files.append(path)
        base = os.path.dirname(os.path.abspath(path))
        for lineno, line in enumerate(text.splitlines(), 1):
            found = option_line(line)       # v2 word rules: sarra.config.words
            if found:
                self.apply(found[0], None, "%s:%d" % (path, lineno), base, stack + [real],
                           found[1])

    @staticmethod
    def _read_error(path: str, origin: Optional[str], reason: str) -> str:
        where = "%s: include " % origin if origin else ""
        return "%s%s: cannot read: %s" % (where, path, reason)

    def _include(self, value: str, origin: str, base: Optional[str], stack: List[str]) -> None:
        try:
            found = include_paths(value, origin, base, self.cfg.component)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for path in found:
            self.read_file(path, True, stack, origin)

    # -- one option -------------------------------------------------------
    def apply(self, keyword: str, value: Optional[str], origin: str, base: Optional[str],
              stack: List[str], words: Optional[List[str]] = None) -> None:
        """One option: its value `words` (a file line's, sarra.config.words), else `value`
        as one word (the command line's: the shell did the splitting)."""
        cfg = self.cfg
        opt = O.lookup(keyword)
        if words is None:
            words = [value.strip()] if value is not None and value.strip() else []
        words = [self.vars.expand(w) for w in words]    # per word, as v2: ${X} may hold blanks
        value = " ".join(words) if words else None
        if opt is None:
            cfg.unknown.setdefault(keyword, []).append(value if value is not None else "")
            cfg._unknown_origins[keyword] = origin
            return
        name, t = opt.name, opt.type

        def bad(reason: str) -> ConfigError:
            return ConfigError("%s: option '%s': %s" % (origin, name, reason))

        if t != O.BOOL and not value:
            raise bad("missing value")
        if t == O.INCLUDE:
            self._include(value, origin, base, stack)
        elif t == O.DECLARE:
            self._declare(value, origin, bad)
        elif t == O.HEADER:
            key, sep, hval = value.partition("=")
            if not sep or not key.strip():
                raise bad("expected name=value, got %r" % value)
            problem = v2refuse.header_problem(key.strip())
            if problem:
                raise bad(problem)
            cfg.headers[key.strip()] = None if hval.strip() == "None" else hval.strip()
        elif t == O.MASK:
            try:
                regex = re.compile(words[0])
            except re.error as e:
                raise bad("bad regex %r: %s" % (words[0], e)) from None
            c = self.cur
            cfg.masks.append(Mask(words[0], regex, name == "accept", c["directory"],
                                  c["mirror"], c["strip"], c["flatten"],
                                  words[1] if len(words) > 1 else c["filename"], origin))
            if len(words) > 1:                  # accept <regex> <filename option>
                self._not_acted_on("filename", origin, words[1])
        elif t == O.SUBTOPIC:
            cfg.bindings.append(Binding(self.cur["exchange"], self.cur["topic_prefix"],
                                        value, origin))
            self._store(name, value, origin)
        elif t == O.PATH:       # v2: each word is a path (`path a b`, `path my\ file`)
            cfg.paths.extend(words)
            cfg._origins[name] = origin
        elif t == O.PLUGINS:
            hooks = cfg.plugins[name]
            if value.lower() in ("none", "off"):
                hooks.clear()
                cfg.cleared_hooks.add(name)
            else:
                hooks.append(value)
                self._not_acted_on(name, origin)
            cfg._origins[name] = origin
            cfg._explicit.add(name)
        else:
            try:
                converted = O.convert(opt, value)
            except ValueError as e:
                raise bad(str(e) + optionhints.value_hint(value)) from None
            if converted != opt.default_for(cfg.component):   # the default: nothing to do
                converted = self._not_acted_on(name, origin, converted)
            self._store(name, converted, origin)
            if name == "parts":                 # v2 developer spelling of blocksize
                self._store("blocksize", converted, origin)
            if name in self.cur:
                self.cur[name] = converted

    def _not_acted_on(self, name: str, origin: str, value: Any = None) -> Any:
        """Warn once per option that this component accepts but does not act on (or acts
        on only in part); return the value to keep. One it refuses: a ConfigError."""
        why = v2refuse.refusal(name, self.cfg.component, value)
        if why:
            raise ConfigError("%s: option '%s'%s refused: %s" % (
                origin, name, " %s" % value if isinstance(value, str) else "", why))
        if O.acted_on(name, self.cfg.component):
            part = O.ignored_part(name, value)
            if part is None:
                return value
            what, value = part
            used = "; ignored (using %s)" % redact(str(value))
            text = O.NOT_ACTED_TEXT.rsplit("; ", 1)[0] + used
        else:
            what, text = "", O.ignored_text(name)
        if name not in self.warned:
            self.warned.add(name)
            logger.warning("%s: option '%s'%s: %s", origin, name,
                           " " + what if what else "", text)
        return value

    def _store(self, name: str, value: Any, origin: str) -> None:
        self.cfg._values[name] = value
        self.cfg._origins[name] = origin
        self.cfg._explicit.add(name)

    def _declare(self, value: str, origin: str, bad) -> None:
        words = value.split(None, 1)
        if len(words) < 2:
            raise bad("expected 'declare <kind> <value>', got %r" % value)
        kind, what = words[0].lower(), words[1].strip()
        kind = {"subscribe": "subscriber", "sources": "source"}.get(kind, kind)
        if kind == "env":
            env, sep, val = what.partition("=")
            if not sep or not env.strip():
                raise bad("expected 'declare env NAME=value', got %r" % value)
            os.environ[env.strip()] = val.strip()
            self.cfg.declared["env"][env.strip()] = val.strip()
        elif kind in ("source", "subscriber", "exchange"):
            self.cfg.declared[kind].extend(what.split())
        else:
            logger.warning("%s: unknown declare kind '%s' ignored", origin, kind)

    # -- derived defaults ----------------------------------------------------
    def finalize(self) -> None:
        cfg, v, comp = self.cfg, self.cfg._values, self.cfg.component
        explicit = cfg._explicit
        if v["debug"]:
            v["loglevel"] = "debug"
        if comp == "sarra":
            for refused in ("discard", "save", "restore"):
                if v[refused]:
                    raise ConfigError("%s: option '%s' is not allowed for sr_sarra"
                                      % (cfg.origin(refused), refused))
        if v2refuse.config_problem(cfg):        # options that go together (v2refuse.py)
            raise ConfigError(v2refuse.config_problem(cfg))
        if v["broker"] is None:
            if comp in ("sarra", "sender", "shovel", "winnow") and v["feeder"]:
                v["broker"] = v["feeder"]
            elif comp == "audit" and v["admin"]:
                v["broker"] = v["admin"]
        if v["post_broker"] is None and comp in ("sarra", "shovel", "winnow"):
            v["post_broker"] = v["feeder"] or v["broker"]
        buser, puser = cfg.broker_user(), cfg.post_broker_user()
        expand_broker_user(cfg, buser)
        pump = {_url_user(v[n]) for n in ("feeder", "admin") if v[n]}

        default_exchange = O.lookup("exchange").default_for(comp)
        if v["exchange_suffix"]:
            default_exchange = "xs_%s_%s" % (buser, v["exchange_suffix"])
        elif comp == "report":
            default_exchange = "xreport" if buser in pump else "xr_" + buser
        if "exchange" not in explicit:
            v["exchange"] = default_exchange
        if "post_exchange" not in explicit:
            if v["post_exchange_suffix"]:
                v["post_exchange"] = "xs_%s_%s" % (puser, v["post_exchange_suffix"])
            elif comp in O.POSTERS:
                v["post_exchange"] = "xs_" + puser
            elif comp == "sarra":
                v["post_exchange"] = "xpublic"
            elif comp in ("subscribe", "sender", "shovel", "winnow"):
                v["post_exchange"] = v["exchange"]
        if v["to"] is None and v["post_broker"]:
            v["to"] = _url_host(v["post_broker"])
        if v["report_exchange"] is None and comp in O.CONSUMERS and comp != "report":
            v["report_exchange"] = "xreport" if buser in pump else "xs_" + buser
        if v["retry_ttl"] is None:
            v["retry_ttl"] = v["expire"]
        if v["sanity_log_dead"] is None:
            v["sanity_log_dead"] = 1.5 * v["heartbeat"]
        if comp in ("subscribe", "sender") and "inflight" not in explicit and v["post_broker"]:
            v["inflight"] = None
        if comp == "sender" and v["post_base_url"] is None and v["destination"]:
            v["post_base_url"] = v["destination"]
        default_dir = v["post_base_dir"] if comp == "sarra" and v["post_base_dir"] else "."
        if "directory" not in explicit:
            v["directory"] = default_dir
        for m in cfg.masks:
            if m.directory is None:
                m.directory = default_dir
        for b in cfg.bindings:
            if b.exchange is None:
                b.exchange = default_exchange
        if not cfg.bindings and comp in O.CONSUMERS:
            cfg.bindings.append(Binding(v["exchange"], v["topic_prefix"], "#", "default"))
        hb = cfg.plugins["on_heartbeat"]
        if v["suppress_duplicates"] and "on_heartbeat" not in cfg.cleared_hooks \
                and "hb_cache" not in hb:
            hb.insert(hb.index("hb_memory") + 1 if "hb_memory" in hb else len(hb), "hb_cache")
        qn = v["queue_name"]
        if qn and not qn.startswith("q_" + buser):
            logger.warning("%s: queue_name '%s' does not start with q_%s; the broker may "
                           "refuse it", cfg.origin("queue_name"), qn, buser)
