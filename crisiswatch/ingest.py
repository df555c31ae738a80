"""Ingest: the first stage, where duplicates are dropped before anything is counted twice."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class Deduper:
    """Remembers the most recent `capacity` mention ids; memory stays flat on an endless stream.

    Sources redeliver (a retweet of a poll window, a restart, a replayed file); an id seen within
    the window is a duplicate.
    """

    def __init__(self, capacity: int, seen: Iterable[str] = ()) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        for mention_id in seen:
            self.first_time(mention_id)

    def first_time(self, mention_id: str) -> bool:
        """True the first time an id is seen; remembers it."""
        if mention_id in self._ids:
            return False
        self._ids[mention_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)
