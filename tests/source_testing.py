"""Reading a live source in tests as the daemon does: take mentions, commit each once consumed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from crisiswatch.domain import Mention
from crisiswatch.sources import Progress

NOW = 1_772_000_000.0  # 2026-02-25T06:13:20Z, the fake APIs' present


class Clock:
    """A clock that moves only when the source sleeps; sleeps are recorded, not waited."""

    def __init__(self) -> None:
        self.now = NOW
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0.002)


class Committing(Protocol):
    def stream(self) -> AsyncIterator[Mention]: ...

    async def commit(self, ids: Sequence[str]) -> None: ...


async def take(
    src: Committing, count: int, during: Callable[[], Awaitable[None]] | None = None
) -> list[Mention]:
    """`count` mentions (and any that follow at once), while `during` runs beside."""
    got: list[Mention] = []
    stream = src.stream()
    task = asyncio.create_task(during()) if during else None
    try:
        async with asyncio.timeout(20):  # generous: a loaded CI machine is slow
            async for mention in stream:
                if isinstance(mention, Progress):
                    continue
                got.append(mention)
                await src.commit([mention.id])
                if len(got) == count:
                    break
        try:  # as the daemon does: keep reading, so cursor moves without a mention are noted
            async with asyncio.timeout(0.1):
                while isinstance(item := await anext(stream), Progress):
                    pass
                got.append(item)
        except TimeoutError:
            await src.commit([])
    finally:
        closing = getattr(stream, "aclose", None)  # an async generator: finish it cleanly
        if closing is not None:
            await closing()
        if task:
            await task
    return got


async def until_current(stream: AsyncIterator[Mention | Progress]) -> list[Mention | Progress]:
    """What a live source's stream yields, up to and with its word that it is current."""
    seen: list[Mention | Progress] = []
    async with asyncio.timeout(10):
        async for item in stream:
            seen.append(item)
            if isinstance(item, Progress) and item.behind_since is None:
                break
    return seen
