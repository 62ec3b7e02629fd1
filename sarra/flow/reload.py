"""Reload: a running flow re-reads its configuration without losing a message.

SIGHUP (or ``sr_<component> reload <config>``, which sends it) only sets
``flow.reload_event``.  The flow acts on it at its safe point, between two batches
(:func:`between_batches`): every message of the last batch is acked, requeued or in the
retry queue, and the posts are confirmed.  Then:

* the configuration is read again (``flow.load_config``, given by the command: the same
  files and command-line options as at start).  A configuration that no longer loads, or
  that the flow would refuse at start (a routing loop...), is logged as one error line
  (the parser's names file:line) and the configuration in force is kept;
* the plugins are loaded again (on_stop of the old ones, on_start of the new ones, as at
  a restart); credentials.conf is read again and the transfer connections closed (they
  reopen on demand);
* connections are redone only when what they depend on changed (broker, queue options,
  reports, post_broker, post_exchange: Flow.connect makes both connections again); a
  change of bindings alone (exchange, topic_prefix, subtopic) binds the new ones and
  unbinds the ones that went, on the open connection.  Closing the consuming connection
  returns the prefetched messages to the queue, unacked: the broker delivers them again;
* everything else (accept/reject, directory, mirror, ...) applies from the next message.

``instances`` is acted on by the ``reload`` action (it starts or stops instances, as v2),
``statehost`` only by a restart (the state files would move under a running instance).
"""

import logging
import os
import time
from typing import Iterable, List, Set, Tuple

from sarra import message
from sarra.broker.client import BrokerStopped
from sarra.config.credentials import Credentials
from sarra.flow import cache as dupcache
from sarra.flow import drivers, routing
from sarra.flow.pluginview import PluginParent
from sarra.ops import logs

#: options whose change closes and reopens the consuming connection (and the reports)
CONSUMING = frozenset({
    "broker", "queue_name", "queue_suffix", "durable", "expire", "message_ttl",
    "prefetch", "declare_queue", "bind_queue", "exchange_split", "report_exchange",
    "report_back", "vip"})
#: options whose change reopens the posting connection (and, as Flow.connect makes both,
#: the consuming one)
POSTING = frozenset({"post_broker", "post_exchange", "declare_exchange",
                     "post_exchange_split", "post_exchange_by_source"})
#: options a reload does not apply (the reason, logged)
NOT_RELOADED = {"statehost": "restart to move the state files"}
#: acted on by the reload action, not inside an instance
BY_THE_ACTION = frozenset({"instances"})


class ReloadRefused(Exception):
    """The configuration read again cannot be used: the one in force is kept."""


def between_batches(flow) -> bool:
    """At the flow's safe point: apply a requested reload (the event is cleared first, so
    a SIGHUP during the reload asks for another one).  True when one was applied."""
    event = getattr(flow, "reload_event", None)
    if event is None or not event.is_set():
        return False
    event.clear()
    return apply(flow)


def apply(flow) -> bool:
    """Re-read and apply the configuration; False (logged) when it is kept as it was."""
    log = flow.log
    loader = getattr(flow, "load_config", None)
    if loader is None:
        log.warning("reload requested: this flow cannot read its configuration again "
                    "(restart it to apply changes)")
        return False
    try:
        new = loader()
        refuse(flow, new)
    except BrokerStopped:
        raise
    except ReloadRefused as e:
        log.error("reload refused, configuration in force kept: %s", e)
        return False
    except Exception as e:          # ConfigError (file:line), CredentialsError, ...
        log.error("reload failed, configuration in force kept: %s", e)
        return False
    old = flow.cfg
    changed = differences(old, new)
    if not changed - BY_THE_ACTION:
        log.info("reload: configuration unchanged%s", " but for option instances (the "
                 "reload action starts or stops instances)" if changed else "")
        return True
    try:
        switch(flow, old, new, changed)
    except BrokerStopped:
        raise
    except Exception as e:      # a plugin that does not load, a broker that refuses...
        log.error("reload failed, configuration in force kept: %s", e)
        return False
    return True


def refuse(flow, new) -> None:
    """Raise ReloadRefused for a configuration this flow would refuse to start with, or
    that only a restart can apply."""
    quiet = logging.getLogger("sarra.reload.check")
    quiet.disabled = True       # refuse_bad_config logs its line; ours says it once
    try:
        routing.refuse_bad_config(new, flow.preset, quiet)
    except routing.ConfigRefused as e:
        raise ReloadRefused(str(e)) from None
    finally:
        quiet.disabled = False
    if _state_host(flow.cfg) != _state_host(new):
        raise ReloadRefused(f"option statehost changed ({new.origin('statehost')}): "
                            f"{NOT_RELOADED['statehost']}")


def _state_host(cfg):
    try:
        return cfg.state_host()
    except Exception:
        return None


def _bindings(cfg) -> List[Tuple[str, str]]:
    return [(b.exchange, message.binding_key(b.topic_prefix, b.subtopic))
            for b in (getattr(cfg, "bindings", None) or [])]


def _masks(cfg):
    return [(m.pattern, m.accept, m.directory, m.mirror, m.strip, m.flatten, m.filename)
            for m in (getattr(cfg, "masks", None) or [])]


def differences(old, new) -> Set[str]:
    """Names of the options whose effective values differ (accept/reject lines count as
    'accept', subtopic lines as 'subtopic', plugin hooks under their hook's name,
    plugin-declared options under their own)."""
    changed = set()
    a, b = old.values(), new.values()
    for name in set(a) | set(b):
        if name in ("path", "header", "subtopic"):
            continue
        try:
            same = a.get(name) == b.get(name)
        except Exception:
            same = False
        if not same:
            changed.add(name)
    if _masks(old) != _masks(new):
        changed.add("accept")
    if _bindings(old) != _bindings(new):
        changed.add("subtopic")
    for attr in ("plugins", "unknown", "headers", "paths"):
        x, y = getattr(old, attr, None), getattr(new, attr, None)
        if x != y:
            if isinstance(x, dict) and isinstance(y, dict):
                changed |= {k for k in set(x) | set(y) if x.get(k) != y.get(k)}
            else:
                changed.add(attr)
    return changed


def switch(flow, old, new, changed: Set[str]) -> None:
    """Put the new configuration in force (see the module docstring).  Raises (with the
    configuration in force back in place) when its plugins do not load or its broker
    refuses it."""
    # the connections are made by Flow.connect only: a posting change redoes both
    reconnect = bool(changed & (CONSUMING | POSTING))
    rebind = bool(changed & {"subtopic", "exchange", "topic_prefix"})
    old_queue = flow.consumer.queue if flow.consumer is not None else None
    # the new plugins first: one that does not load leaves everything as it was
    before = (flow.plugin_parent, flow.hooks, flow.credentials)
    flow.cfg = new
    try:
        parent = PluginParent(flow)
        hooks = flow.make_hooks(parent)     # the engine's rule, as at start
    finally:
        flow.cfg = old
    credentials = Credentials.load()        # one that cannot be read: nothing changed
    flow.hooks.run("on_stop")
    _disconnect(flow, reconnect)
    _install(flow, new, (parent, hooks, credentials), old, changed)
    try:
        done = _connections(flow, old, new, reconnect, rebind, old_queue)
    except BrokerStopped:
        raise
    except Exception as e:
        flow.log.error("reload: %s; going back to the configuration in force", e)
        flow.close()
        _install(flow, old, before, new, changed)
        _connect(flow)
        _renew_source(flow)
        flow.hooks.run("on_start")
        raise ReloadRefused(str(e)) from None
    flow.hooks.run("on_start")
    shown = sorted(changed - BY_THE_ACTION)
    flow.log.info("reload: configuration applied (changed: %s)%s", ", ".join(shown) or "-",
                  f"; {', '.join(done)}" if done else "")
    queue = flow.consumer.queue if flow.consumer is not None else None
    if old_queue and queue and queue != old_queue:
        flow.log.warning("reload: now consuming from queue %s; queue %s and its messages "
                         "are left on the broker", queue, old_queue)
    if changed & BY_THE_ACTION:
        flow.log.info("reload: option instances changed: the reload action starts or stops "
                      "instances, a signal alone does not")


def _disconnect(flow, reconnect: bool) -> None:
    if reconnect:       # prefetched messages go back to the queue, unacked; the last
        flow.close()    # batch's posts are confirmed: nothing pending
    else:
        drivers.close_all(flow)


def _install(flow, cfg, kept, previous, changed: Set[str]) -> None:
    """cfg and its plugins, credentials and option-bound state in force in the flow."""
    flow.cfg = cfg
    flow.plugin_parent, flow.hooks, flow.credentials = kept
    flow._creds.clear()
    if flow.reporter is not None:          # its on_report plugins: the ones in force
        flow.reporter.hooks = flow.hooks
    if flow.consumer is not None:
        flow.consumer.cfg = cfg
    _reset_state(flow, previous, cfg, changed)


def _connections(flow, old, new, reconnect: bool, rebind: bool, old_queue) -> List[str]:
    done = []
    if reconnect:
        _connect(flow)
        _unbind_gone(flow, old, new, old_queue)
        done.append("reconnected")
    elif rebind and flow.consumer is not None:
        rebound(flow, old, new)
        done.append("rebound")
    if _renew_source(flow):
        done.append("source restarted")
    return done


def _renew_source(flow) -> bool:
    """A source that is not the queue (sr_watch's trees) was made from the configuration
    in force: it is closed and made again from the new one (sr_watch: its state file
    says what was announced, so the new scan posts nothing twice and misses nothing)."""
    source = getattr(flow, "source", None)
    if source is None or source.consumes or source.one_shot:
        return False
    from sarra.flow import sources
    try:
        source.close()
    except Exception as e:      # closed already (a reload that failed half-way)
        flow.log.debug("reload: closing the source: %s", e)
    flow.source = sources.make(flow)
    flow.source.start()
    return True


def _reset_state(flow, old, new, changed: Set[str]) -> None:
    """The flow's own state that follows options: duplicate cache, retry lifetime,
    heartbeat, log level."""
    if "suppress_duplicates" in changed:
        if flow.cache is not None:
            flow.cache.flush()
            flow.cache.close()
        flow.cache = None
        if new.suppress_duplicates:
            flow.cache = dupcache.DupCache(
                os.path.join(flow.user_cache_dir, "recent_files_%03d.cache" % flow.no),
                new.suppress_duplicates)
    if changed & {"retry_ttl", "expire"}:
        flow.retry.ttl = float(new.retry_ttl or new.expire or 86400)
    if "heartbeat" in changed:
        flow._next_heartbeat = time.time() + (new.heartbeat or 300)
    if "loglevel" in changed:
        try:
            logging.getLogger(logs.LOGGER_NAME).setLevel(logs.parse_level(new.loglevel))
        except (ValueError, TypeError) as e:
            flow.log.warning("reload: loglevel %r not applied: %s", new.loglevel, e)


def _connect(flow) -> None:
    """The connections again, through the vip gate when the flow has one."""
    try:
        from sarra.flow import standby
    except ImportError:         # pragma: no cover (a flow without vip support)
        flow.connect()
        return
    standby.connect(flow)


def _pairs(consumer) -> List[Tuple[str, str]]:
    return list(consumer.bindings())


def rebound(flow, old, new) -> None:
    """Bind the bindings the new configuration adds, unbind those it dropped, on the open
    connection (the queue and its messages stay)."""
    consumer = flow.consumer
    consumer.cfg = old
    before = _pairs(consumer)
    consumer.cfg = new
    after = _pairs(consumer)
    if new.bind_queue:
        for exchange, key in after:
            if (exchange, key) not in before:
                flow.broker.bind(consumer.queue, exchange, key)
                flow.log.info("bound %s to %s with %s", consumer.queue, exchange, key)
    _unbind(flow, [p for p in before if p not in after])


def _unbind_gone(flow, old, new, old_queue) -> None:
    """After a reconnection to the same queue of the same broker: unbind what the old
    configuration bound and the new one does not."""
    consumer = flow.consumer
    if consumer is None or consumer.queue != old_queue or old.broker != new.broker:
        return
    consumer.cfg = old
    before = _pairs(consumer)
    consumer.cfg = new
    after = _pairs(consumer)
    _unbind(flow, [p for p in before if p not in after])


def _unbind(flow, pairs: Iterable[Tuple[str, str]]) -> None:
    if not flow.cfg.bind_queue:
        return
    queue = flow.consumer.queue
    for exchange, key in pairs:
        try:
            flow.broker.unbind(queue, exchange, key)
            flow.log.info("unbound %s from %s with %s", queue, exchange, key)
        except Exception as e:      # the binding's exchange is gone...: nothing to undo
            flow.log.warning("reload: could not unbind %s from %s with %s: %s",
                             queue, exchange, key, e)


