"""What Reddit and X share: supervised fetch loops merged into one stream, cursors committed as
the pipeline consumes, a health record, and a window of recent ids so that two loops of one
source (a subreddit stream and site-wide search) do not yield the same post twice."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

from crisiswatch.domain import Mention
from crisiswatch.ingest import Deduper
from crisiswatch.retry import Backoff
from crisiswatch.sources.cursors import CursorBook
from crisiswatch.sources.resilience import (
    Clock,
    Health,
    HealthSnapshot,
    Sleep,
    merge,
    supervise,
)
from crisiswatch.store import Store

Found = tuple[Mention | None, str, str]
"""(mention or None, stream, cursor): a fetch loop's output; None only moves the cursor."""

RECENT_IDS = 20_000


class LiveSource:
    """Base of a live source: subclasses give `_client()` and `_loops()`."""

    finite = False

    def __init__(
        self,
        name: str,
        store: Store | None,
        *,
        stall_after: float,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self.book = CursorBook(store, name)
        self.position: dict[str, str] = {}  # where each loop has fetched up to (not committed)
        self._health = Health(name, stall_after=stall_after, clock=clock)
        self._recent = Deduper(RECENT_IDS)  # two loops of one source may find the same post

    def health(self) -> HealthSnapshot:
        return self._health.snapshot()

    async def commit(self, consumed: Sequence[str]) -> None:
        await self.book.commit(consumed)

    def _client(self) -> AbstractAsyncContextManager[object]:
        raise NotImplementedError

    def _loops(self, client: object) -> list[Callable[[], AsyncIterator[Found]]]:
        raise NotImplementedError

    async def stream(self) -> AsyncIterator[Mention]:
        self.position = await self.book.load()
        async with self._client() as client:
            loops = [
                supervise(
                    self.name, loop, self._health, backoff=Backoff(rand=self.rand), sleep=self.sleep
                )
                for loop in self._loops(client)
            ]
            async for mention, stream, cursor in merge(loops):
                if mention is not None and self._recent.first_time(mention.id):
                    self.book.note(mention.id, stream, cursor)
                    yield mention
                else:
                    self.book.mark(stream, cursor)
