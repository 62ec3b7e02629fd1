"""What a work step keeps between the messages of one flow, in an object of its own (the
preset makes it, the flow holds it as ``flow.step_state``) rather than in the engine's
attributes."""


class _Unset:
    """post_base not computed yet (None is a computed value: no post_base_url)."""

    def __repr__(self):
        return "UNSET"


UNSET = _Unset()


class _State:
    @classmethod
    def of(cls, flow):
        """flow's state for this step; made here when its preset made none (a preset
        written for a test or by hand with this step in it)."""
        st = getattr(flow, "step_state", None)
        if not isinstance(st, cls):
            st = flow.step_state = cls()
        return st


class DownloadState(_State):
    """download.py and fetch.py, for sr_subscribe and sr_sarra."""

    def __init__(self):
        self.roots = {}                 # directory -> (abspath, realpath)
        self.parts_pruned = False       # old block manifests removed (once per process)
        self.delete_partfile_warned = False
        self.post_base = UNSET          # the public post_base_url (no password), once
        self.slow_slots = None          # transfer_min_rate's bounds.SlowSlots, made once


class SendState(_State):
    """send.py, for sr_sender."""

    def __init__(self):
        self.roots = {}                 # base_dir -> its realpath, with a trailing /
