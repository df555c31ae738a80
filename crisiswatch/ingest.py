"""Ingest: the first stage, where duplicates are dropped before anything is counted twice."""

from __future__ import annotations

from array import array
from collections.abc import Iterable


class Deduper:
    """Remembers the most recent `capacity` mention ids; memory stays flat on an endless stream.

    Sources redeliver (a retweet of a poll window, a restart, a replayed file); an id seen within
    the window is a duplicate. Ids are held as their 64-bit hashes, in a ring (oldest out first)
    and a set: about 90 bytes an id however long it is. Two ids with the same hash would count as
    one; the odds are about `capacity` in 2^64 per mention.
    """

    def __init__(self, capacity: int, seen: Iterable[str] = ()) -> None:
        self.capacity = capacity
        self._ring = array("q", bytes(8 * capacity))  # the held hashes, in arrival order
        self._next = 0  # the ring's slot to write next: the oldest hash once the ring is full
        self._held: set[int] = set()
        for mention_id in seen:
            self.first_time(mention_id)

    def first_time(self, mention_id: str) -> bool:
        """True the first time an id is seen; remembers it."""
        key = hash(mention_id)
        held = self._held
        if key in held:
            return False
        slot = self._next
        if len(held) == self.capacity:
            held.remove(self._ring[slot])
        held.add(key)
        self._ring[slot] = key
        self._next = slot + 1 if slot + 1 < self.capacity else 0
        return True

    def __len__(self) -> int:
        return len(self._held)
