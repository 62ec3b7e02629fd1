"""The Preset type: what one component does differently over the one flow (the table of
presets is presets.py). Its own module so that a component needs only its own preset's
steps imported (sr_post: postsource.PRESET, without download, send or winnow).
"""

import dataclasses
from typing import Callable, Dict, List, Optional


@dataclasses.dataclass(frozen=True)
class Preset:
    component: str
    place: Optional[Callable] = None         # flow, work -> local destination, before on_message
    work: Optional[Callable] = None          # flow, work -> None (raises Outcome)
    posts: bool = False                      # re-post what was handled (needs post_broker)
    reports: bool = True
    check: Optional[Callable] = None         # flow, work -> None (raises Outcome)
    default_plugins: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    # sr_winnow's hooks (winnow.py): after connect(); in place of the duplicate-cache check
    # (raises Outcome); after settle() of each batch
    connected: Optional[Callable] = None     # flow -> None
    dedupe: Optional[Callable] = None        # flow, work -> None
    settled: Optional[Callable] = None       # flow, batch -> None
    # flow, batch -> None: once the batch's posts are confirmed and its messages acked
    # (not called when the confirms failed): sr_sender's delete (senddone.py)
    confirmed: Optional[Callable] = None
    # flow, work -> True where the duplicate cache is not asked: download.py's block
    # manifest dedupes blocks it assembles, and needs every block of a new version
    uncached: Optional[Callable] = None
    # () -> what the work step keeps between messages (stepstate.py): flow.step_state
    state: Optional[Callable] = None
    # where work comes from (sources.py): flow -> Source, or "package.module:Name" (a source
    # in a higher layer: sarra.watch); None: the queue (and its retry queue)
    source: Optional[object] = None
    # flow, hook, plugin name -> False: a plugin of cfg.plugins that is not loaded
    keep_plugin: Optional[Callable] = None
