"""The flow engine every consuming component runs, and its steps."""

# sarra.flow was a module until issue 18 moved it to sarra.flow.engine:
# its names stay reachable here (`from sarra.flow import X` in plugins written
# before), looked up only when asked.
_SUBMODULES = frozenset((
    'assemble', 'cache', 'consumer', 'download', 'engine', 'fetch', 'fetchpolicy',
    'msgbounds', 'placement', 'poster', 'presets', 'report', 'reportguard', 'retry',
    'routing', 'send', 'treeguard', 'winnow', 'work',))


def __getattr__(name):
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    try:
        return getattr(import_module("sarra.flow.engine"), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
