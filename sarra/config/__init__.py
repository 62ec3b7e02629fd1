"""Configuration: the options table, the parser, ${...} variables, credentials, broker
URLs, the command line."""

# sarra.config was a module until issue 18 moved it to sarra.config.parser:
# its names stay reachable here (`from sarra.config import X` in plugins written
# before), looked up only when asked.
_SUBMODULES = frozenset((
    'brokerurl', 'cli', 'credentials', 'hints', 'options', 'parser', 'variables',))


def __getattr__(name):
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    try:
        return getattr(import_module("sarra.config.parser"), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
