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

    The window starts full of placeholder keys, so it takes its whole memory at start and every
    mention does the same work (one key in, one out): memory does not step up later, when the
    window first fills.
    """

    def __init__(self, capacity: int, seen: Iterable[str] = ()) -> None:
        self.capacity = capacity
        placeholders = range(_PLACEHOLDER, _PLACEHOLDER + capacity)
        self._ring = array("q", placeholders)  # the held keys, in arrival order
        self._next = 0  # the ring's slot to write next: the oldest key
        self._held: set[int] = set(placeholders)
        for mention_id in seen:
            self.first_time(mention_id)

    def first_time(self, mention_id: str) -> bool:
        """True the first time an id is seen; remembers it."""
        key = hash(mention_id)
        held = self._held
        if key in held:
            return False
        slot = self._next
        held.remove(self._ring[slot])
        held.add(key)
        self._ring[slot] = key
        self._next = slot + 1 if slot + 1 < self.capacity else 0
        return True


_PLACEHOLDER = -(2**62)
"""The first placeholder key: an id hashing into the placeholders' range is as unlikely as two
ids sharing a hash, and would only be taken for a duplicate."""
