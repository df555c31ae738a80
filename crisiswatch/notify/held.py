"""Records held in this process's memory, bounded: above all what the state store could not
take (a full disk), until it can."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from crisiswatch.store import StoreError

K = TypeVar("K")
V = TypeVar("V")
_GONE = object()


class Held(Generic[K, V]):
    """The newest record per key, at most `limit` (the least recently put go first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._records: dict[K, V] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: K) -> V | None:
        return self._records.get(key)

    def values(self) -> Iterator[V]:
        return iter(self._records.values())

    def put(self, key: K, value: V) -> None:
        self._records.pop(key, None)  # to the end: the newest is kept longest
        self._records[key] = value
        while len(self._records) > self.limit:
            del self._records[next(iter(self._records))]

    def discard(self, key: K) -> None:
        self._records.pop(key, None)

    async def write_back(self, write: Callable[[K, V], Awaitable[object]]) -> None:
        """Write the records to the store, the oldest first, letting go of each once written,
        until the store refuses one (a record put again meanwhile stays, to be written too)."""
        while self._records:
            key, value = next(iter(self._records.items()))
            try:
                await write(key, value)
            except StoreError:
                return
            if self._records.get(key, _GONE) is value:
                del self._records[key]
