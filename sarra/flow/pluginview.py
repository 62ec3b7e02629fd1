"""What a plugin sees as ``parent``: a small adapter over the flow engine.

v2 plugins read options as ``parent.<option>`` and use a handful of the component's
attributes (doc/spec/plugins.md "What a plugin sees"). The adapter gives them exactly that:
the names in :data:`FLOW_API` are read from (and written to) the flow, any other name is
read from the configuration, and what a plugin stores on its parent for itself
(``parent.my_count = 0``) stays on the adapter. The engine itself forwards nothing.
"""

#: the flow's attributes and methods a plugin may use (the documented plugin API, what
#: the stock plugins read, and what sarra's own hooks use)
FLOW_API = frozenset({
    # documented: the message, the logger, the options, where state goes, instance number
    "msg", "logger", "log", "cfg", "get_option", "user_cache_dir", "no", "consumer",
    "msg_to_retry",
    # on_report: the report being handled (report.Reporter sets it)
    "report_msg",
    # stock plugins: hb_log, hb_cache, hb_retry, run_command, delay
    "counters", "cache", "retry", "stop_event",
    # the flow's connections and drivers, for do_download/do_send plugins
    "broker", "post_broker", "reporter", "transfer_for", "tick_brokers", "credentials",
    "hooks", "accept",
})


class PluginParent:
    """``parent`` of every hook a flow runs (see the module docstring)."""

    __slots__ = ("_flow", "__dict__")

    def __init__(self, flow):
        object.__setattr__(self, "_flow", flow)

    def __getattr__(self, name):
        # only called for names the adapter itself does not hold
        flow = object.__getattribute__(self, "_flow")
        if name in FLOW_API:
            return getattr(flow, name)
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(flow.cfg, name)      # v2: parent.<option>

    def __setattr__(self, name, value):
        if name in FLOW_API:
            setattr(object.__getattribute__(self, "_flow"), name, value)
        else:
            object.__setattr__(self, name, value)

    def __repr__(self):
        flow = object.__getattribute__(self, "_flow")
        return f"<plugin parent of {flow.cfg.component} {flow.cfg.name}>"
