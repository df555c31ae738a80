"""Ingest: the first stage, where duplicates are dropped before anything is counted twice."""

from __future__ import annotations

from array import array
from collections.abc import Iterable


class Deduper:
    """Remembers the most recent `capacity` mention ids; memory stays flat on an endless stream.

    Sources redeliver (a retweet of a poll window, a restart, a replayed file); an id seen within
    the window is a duplicate. Ids are held as their 64-bit hashes in two flat arrays, both
    allocated whole at start: a ring in arrival order (the oldest goes out first) and an
    open-addressing hash table with linear probing, at most half full, whose deletions shift the
    following entries back rather than leave tombstones. That is 24 bytes an id (about 24 MB for
    a million), where a Python set of hashes took five times as much. Two ids with the same hash
    would count as one; the odds are about `capacity` in 2^64 per mention.
    """

    def __init__(self, capacity: int, seen: Iterable[str] = ()) -> None:
        self.capacity = capacity
        size = 1 << (2 * capacity).bit_length()  # a power of two over twice capacity: never full
        self._mask = size - 1
        self._table = array("q", bytes(8 * size))  # hash keys by slot; 0: empty
        self._ring = array("q", bytes(8 * capacity))  # held keys, oldest at `_next`; 0: none
        self._next = 0
        for mention_id in seen:
            self.first_time(mention_id)

    def first_time(self, mention_id: str) -> bool:
        """True the first time an id is seen; remembers it."""
        key = hash(mention_id) or 1  # 0 marks an empty slot
        table, mask = self._table, self._mask
        slot = key & mask
        while (held := table[slot]) != 0:
            if held == key:
                return False
            slot = (slot + 1) & mask
        table[slot] = key
        ring, oldest = self._ring, self._next
        if ring[oldest]:
            self._forget(ring[oldest])
        ring[oldest] = key
        self._next = oldest + 1 if oldest + 1 < self.capacity else 0
        return True

    def _forget(self, key: int) -> None:
        """Empty the key's slot, then move back any later key of its probe run that would
        otherwise no longer be found from its home slot (no tombstones, so probes stay short)."""
        table, mask = self._table, self._mask
        hole = key & mask
        while table[hole] != key:
            hole = (hole + 1) & mask
        slot = hole
        while True:
            slot = (slot + 1) & mask
            held = table[slot]
            if held == 0:
                break
            home = held & mask
            # The entry stays unless its home lies cyclically outside (hole, slot].
            if (hole < home <= slot) if hole <= slot else (home > hole or home <= slot):
                continue
            table[hole] = held
            hole = slot
        table[hole] = 0
