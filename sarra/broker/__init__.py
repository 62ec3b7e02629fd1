"""AMQP 0-9-1 broker access (RabbitMQ): client, connection, frames, the management API."""

# sarra.broker was a module until issue 18 moved it to sarra.broker.client:
# its names stay reachable here (`from sarra.broker import X` in plugins written
# before), looked up only when asked.
from sarra._oldpaths import forward_names

__getattr__ = forward_names(__name__, "sarra.broker.client", (
    'admin', 'client', 'connection', 'frames',))
