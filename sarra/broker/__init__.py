"""AMQP 0-9-1 broker access (RabbitMQ): client, connection, frames, the management API."""

# sarra.broker was a module until issue 18 moved it to sarra.broker.client:
# its names stay reachable here (`from sarra.broker import X` in plugins written
# before), looked up only when asked.
_SUBMODULES = frozenset((
    'admin', 'client', 'connection', 'frames',))


def __getattr__(name):
    if name.startswith("__") or name in _SUBMODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    try:
        return getattr(import_module("sarra.broker.client"), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
