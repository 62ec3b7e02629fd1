"""What sr_poll announced, per directory, kept across restarts.

One JSON file per configuration and instance in its state directory: for each polled
directory, each file announced with what said it was that version ([size, mtime,
listing words]). A poll stages the new record of a directory; it is committed (the file
rewritten atomically) only once the broker confirmed every post of the poll, and dropped
otherwise: a crash or a broker failure before the confirms means the files are announced
again at the next poll (nothing missed), never that they are forgotten; a directory whose
listing failed keeps its record unchanged (nothing announced twice when it comes back).
"""

import json
import os
from typing import Dict, List

from sarra import paths

#: a record of one file: [size, mtime, the listing's own words]
Rec = List


class PollState:
    """The announced files of every polled directory, with staged changes."""

    def __init__(self, path: str, log=None):
        self.path, self.log = path, log
        self.dirs: Dict[str, Dict[str, Rec]] = {}
        self.staged: Dict[str, Dict[str, Rec]] = {}
        self.restarted = False
        self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            if self.log is not None:
                self.log.warning("poll state %s unreadable (%s): every file listed is "
                                 "announced again", self.path, e)
            return
        dirs = data.get("dirs") if isinstance(data, dict) else None
        if isinstance(dirs, dict):
            self.dirs = {str(d): {str(n): list(r) for n, r in recs.items()
                                  if isinstance(r, list)}
                         for d, recs in dirs.items() if isinstance(recs, dict)}
            self.restarted = True

    def get(self, directory: str) -> Dict[str, Rec]:
        """The record of a directory: staged in this poll, else committed."""
        if directory in self.staged:
            return self.staged[directory]
        return self.dirs.get(directory, {})

    def stage(self, directory: str, records: Dict[str, Rec]) -> None:
        self.staged[directory] = records

    def commit(self, keep=None) -> None:
        """Make the staged records the announced ones, on disk first (atomic replace).
        ``keep``: the directories still polled (the others are forgotten: a date rolled)."""
        merged = dict(self.dirs)
        merged.update(self.staged)
        if keep is not None:
            merged = {d: r for d, r in merged.items() if d in keep}
        if not self.staged and merged.keys() == self.dirs.keys():
            return
        paths.atomic_write(self.path, json.dumps({"version": 1, "dirs": merged},
                                                 separators=(",", ":")))
        self.dirs, self.staged = merged, {}

    def rollback(self) -> None:
        self.staged = {}

    def remove(self) -> None:
        paths.discard(self.path)
        self.dirs, self.staged = {}, {}

    def __len__(self):
        return sum(len(r) for r in self.dirs.values())


def state_path(cname: str, instance: int = 1) -> str:
    return os.path.join(paths.state_dir("poll", cname), f"sr_poll_{cname}_{instance:02d}.ls")
