"""Configuration: the options table, the parser, ${...} variables, credentials, broker
URLs, the command line."""

# sarra.config was a module until issue 18 moved it to sarra.config.parser:
# its names stay reachable here (`from sarra.config import X` in plugins written
# before), looked up only when asked.
from sarra._oldpaths import forward_names

__getattr__ = forward_names(__name__, "sarra.config.parser", (
    'brokerurl', 'cli', 'credentials', 'hints', 'options', 'parser', 'variables',))
