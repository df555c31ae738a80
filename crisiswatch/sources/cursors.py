"""Cursors: where each stream of a live source stopped, saved only once the pipeline has taken
every mention before them, so a restart (even after a crash) neither skips nor repeats.

A source notes the cursor of each mention it yields (`note`) and moves that carry no mention
(`mark`); the daemon calls `commit` with the ids the pipeline consumed when it saves the seen
ids, and the book saves the cursors those mentions reached.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from crisiswatch.sources.resilience import HealthSnapshot
from crisiswatch.store import Store


@runtime_checkable
class Checkpointed(Protocol):
    """A source whose cursors advance as the pipeline consumes its mentions."""

    name: str

    async def commit(self, consumed: Sequence[str]) -> None: ...


@runtime_checkable
class Monitored(Protocol):
    """A source that reports its health."""

    name: str

    def health(self) -> HealthSnapshot: ...


class CursorBook:
    """The cursors of one source's streams (stream name → opaque text)."""

    def __init__(self, store: Store | None, source: str) -> None:
        self.store = store
        self.source = source
        self.saved: dict[str, str] = {}
        self._pending: deque[tuple[str | None, str, str]] = deque()

    async def load(self) -> dict[str, str]:
        if self.store is not None:
            self.saved = await self.store.cursors(self.source)
        return dict(self.saved)

    def note(self, mention_id: str, stream: str, value: str) -> None:
        """The mention about to be yielded moves `stream` to `value` once it is consumed."""
        self._pending.append((mention_id, stream, value))

    def mark(self, stream: str, value: str) -> None:
        """Move `stream` to `value` once every mention yielded before is consumed."""
        self._pending.append((None, stream, value))

    async def commit(self, consumed: Sequence[str]) -> None:
        left = Counter(consumed)
        reached: dict[str, str] = {}
        while self._pending:
            mention_id, stream, value = self._pending[0]
            if mention_id is not None:
                if not left[mention_id]:
                    break
                left[mention_id] -= 1
            self._pending.popleft()
            reached[stream] = value
        changed = {k: v for k, v in reached.items() if self.saved.get(k) != v}
        if changed and self.store is not None:
            await self.store.save_cursors(self.source, changed)
        self.saved.update(changed)
