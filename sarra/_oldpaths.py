"""Import paths from before issue 18's regrouping keep working.

Plugins and configurations written for earlier versions import ``sarra.send``,
``sarra.reportguard``, ``sarra.instances`` ... or name ``sarra.routing:func``.  Each old
path is an alias of the module's new home (the same module object, imported only when
asked).  ``sarra.config``, ``sarra.broker`` and ``sarra.flow`` are packages now: their
``__init__`` hands on the old module's names.
"""
import importlib
import sys
from importlib.machinery import ModuleSpec

OLD_PATHS = {
    'sarra.actions': 'sarra.commands.actions',
    'sarra.amqpframes': 'sarra.broker.frames',
    'sarra.assemble': 'sarra.flow.assemble',
    'sarra.audit': 'sarra.ops.audit',
    'sarra.brokerconn': 'sarra.broker.connection',
    'sarra.brokerurl': 'sarra.config.brokerurl',
    'sarra.cache': 'sarra.flow.cache',
    'sarra.components': 'sarra.flow.presets',
    'sarra.configvars': 'sarra.config.variables',
    'sarra.consumer': 'sarra.flow.consumer',
    'sarra.credentials': 'sarra.config.credentials',
    'sarra.download': 'sarra.flow.download',
    'sarra.fetch': 'sarra.flow.fetch',
    'sarra.fetchpolicy': 'sarra.flow.fetchpolicy',
    'sarra.health': 'sarra.ops.health',
    'sarra.instances': 'sarra.ops.instances',
    'sarra.logs': 'sarra.ops.logs',
    'sarra.msgbounds': 'sarra.flow.msgbounds',
    'sarra.optioncli': 'sarra.config.cli',
    'sarra.optionhints': 'sarra.config.hints',
    'sarra.options': 'sarra.config.options',
    'sarra.placement': 'sarra.flow.placement',
    'sarra.poster': 'sarra.flow.poster',
    'sarra.procident': 'sarra.ops.procident',
    'sarra.proctitle': 'sarra.ops.proctitle',
    'sarra.progress': 'sarra.transfer.progress',
    'sarra.rabbitadmin': 'sarra.broker.admin',
    'sarra.report': 'sarra.flow.report',
    'sarra.reportguard': 'sarra.flow.reportguard',
    'sarra.retry': 'sarra.flow.retry',
    'sarra.routing': 'sarra.flow.routing',
    'sarra.secretargs': 'sarra.ops.secretargs',
    'sarra.send': 'sarra.flow.send',
    'sarra.supervisor': 'sarra.ops.supervisor',
    'sarra.treeguard': 'sarra.flow.treeguard',
    'sarra.watchannounce': 'sarra.watch.announce',
    'sarra.watchdaemon': 'sarra.watch.daemon',
    'sarra.watcher': 'sarra.watch.events',
    'sarra.watchready': 'sarra.watch.ready',
    'sarra.watchstate': 'sarra.watch.state',
    'sarra.winnow': 'sarra.flow.winnow',
    'sarra.work': 'sarra.flow.work',
}


class _OldPath:
    """Meta path finder + loader: the old name is bound to the new module itself."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in OLD_PATHS:
            return ModuleSpec(name, _OldPath, origin=OLD_PATHS[name])
        return None

    @staticmethod
    def create_module(spec):
        return importlib.import_module(OLD_PATHS[spec.name])

    @staticmethod
    def exec_module(module):
        pass


def forward_names(package, target, submodules):
    """A module ``__getattr__`` for ``package`` (a module before issue 18, now a package)
    that hands on the names of ``target``, its old content, imported only when asked;
    ``submodules`` (not imported yet) and dunder names are not looked up there."""
    skip = frozenset(submodules)

    def __getattr__(name):
        if name.startswith("__") or name in skip:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            return getattr(importlib.import_module(target), name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
    return __getattr__


def install():
    """First on sys.meta_path: an old name always means the new module, even where a stale
    file of that name is left (an install over an older one)."""
    if not any(f is _OldPath for f in sys.meta_path):
        sys.meta_path.insert(0, _OldPath)
