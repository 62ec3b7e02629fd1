"""The flow engine every consuming component runs, and its steps."""

# sarra.flow was a module until issue 18 moved it to sarra.flow.engine:
# its names stay reachable here (`from sarra.flow import X` in plugins written
# before), looked up only when asked.
from sarra._oldpaths import forward_names

__getattr__ = forward_names(__name__, "sarra.flow.engine", (
    'assemble', 'cache', 'consumer', 'download', 'engine', 'fetch', 'fetchpolicy',
    'msgbounds', 'placement', 'poster', 'presets', 'report', 'reportguard', 'retry',
    'routing', 'send', 'treeguard', 'winnow', 'work',))
