"""What Reddit and X share: supervised fetch loops merged into one stream, cursors committed as
the pipeline consumes, a health record, a window of recent ids so that two loops of one source
(a subreddit stream and site-wide search) do not yield the same post twice, and word of how
complete the stream is (`Progress`), so that bucket closes can wait while the source catches up.

A loop yields `Fetched(started)` once it has handed over everything posted before `started`
(when that fetch began): a listing, a poll of every brand, a stream's catch-up. Until each of
its loops has done so since the start, the source is behind from the start; a loop's error makes
it behind since that loop's last complete fetch, until the next."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from datetime import UTC, datetime

from crisiswatch.domain import Mention
from crisiswatch.ingest import Deduper
from crisiswatch.retry import Backoff
from crisiswatch.sources import Progress
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


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetch loop has handed over everything posted before `started` (source clock)."""

    started: float


@dataclass(frozen=True, slots=True)
class Failed:
    """A fetch loop failed (`supervise` says so before its wait): it is behind."""


Step = Found | Fetched | Failed  # what a supervised fetch loop yields
Loop = Callable[[], AsyncIterator[Step]]

RECENT_IDS = 20_000
FAILED: Step = Failed()  # typed as a step, so `supervise` yields steps


class LiveSource:
    """Base of a live source: subclasses give `_client()` and `_loops()`."""

    finite = False
    reports_progress = True

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
        self._fetched: dict[int, float] = {}  # loop → when its last complete fetch began

    def health(self) -> HealthSnapshot:
        return self._health.snapshot()

    async def commit(self, consumed: Sequence[str]) -> None:
        await self.book.commit(consumed)

    def _client(self) -> AbstractAsyncContextManager[object]:
        raise NotImplementedError

    def _loops(self, client: object) -> list[Loop]:
        raise NotImplementedError

    async def stream(self) -> AsyncIterator[Mention | Progress]:
        """The source's mentions, and its `Progress` whenever how far behind it is changes
        (first at the start: behind since each loop's last complete fetch, if any)."""
        self.position = await self.book.load()
        async with self._client() as client:
            loops = self._loops(client)
            behind = {key: self._fetched.get(key, 0.0) for key in range(len(loops))}
            told = self._behind_since(behind)
            yield Progress(self.name, told)
            # the loops end before the client closes, however this generator ends (`async
            # for` would leave them running): one that went on would use the closed client,
            # and asyncprawcore would open it a new session that nobody closes
            merged = merge([self._tagged(k, loop) for k, loop in enumerate(loops)])
            async with aclosing(merged) as steps:
                async for key, step in steps:
                    if isinstance(step, Fetched):
                        self._fetched[key] = step.started
                        behind.pop(key, None)
                    elif isinstance(step, Failed):
                        behind.setdefault(key, self._fetched.get(key, 0.0))
                    else:
                        mention, stream, cursor = step
                        if mention is not None and self._recent.first_time(mention.id):
                            self.book.note(mention.id, stream, cursor)
                            yield mention
                        else:
                            self.book.mark(stream, cursor)
                        continue
                    if (since := self._behind_since(behind)) != told:
                        told = since
                        yield Progress(self.name, since)

    async def _tagged(self, key: int, loop: Loop) -> AsyncIterator[tuple[int, Step]]:
        """One loop, supervised, each step tagged with the loop's key."""
        steps: AsyncIterator[Step] = supervise(
            self.name, loop, self._health, backoff=Backoff(rand=self.rand), sleep=self.sleep,
            failed=FAILED,
        )  # fmt: skip
        async for step in steps:
            yield key, step

    @staticmethod
    def _behind_since(behind: dict[int, float]) -> datetime | None:
        """The earliest time a behind loop may still deliver posts from (None: none behind)."""
        return datetime.fromtimestamp(min(behind.values()), UTC) if behind else None
