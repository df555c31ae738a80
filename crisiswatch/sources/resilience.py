"""What keeps a live source alive: waits between attempts, and a health record that tells a
stalled or failing source from a quiet one.

`supervise` runs a source's fetch loop (an async generator that may raise) forever: an error is
counted and logged, the loop waits by the rules of `crisiswatch/retry.py` (the API's reset time
for a rate limit, else exponential back-off with full jitter) and starts again from the source's
cursor. Clock, sleep and random are injected, so tests run the waits in no time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, cast

import structlog

from crisiswatch.retry import Backoff

log = structlog.get_logger(__name__)
T = TypeVar("T")
Clock = Callable[[], float]  # seconds since the epoch
Sleep = Callable[[float], Awaitable[None]]


class RateLimited(Exception):
    """The API said to wait; `wait` is how many seconds (None: it did not say)."""

    def __init__(self, message: str, wait: float | None) -> None:
        super().__init__(message)
        self.wait = wait


class SourceSetupError(RuntimeError):
    """A source cannot start until a person fixes something (a missing secret); says what."""


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """How a source is doing: `stalled_for` is seconds since its last success (or its start)."""

    source: str
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    stalled_for: float
    stalled: bool

    def describe(self) -> str:
        state = "stalled" if self.stalled else "failing" if self.consecutive_failures else "ok"
        text = f"{self.source}: {state}, no successful fetch for {self.stalled_for:.0f}s"
        if self.consecutive_failures:
            text += f", {self.consecutive_failures} failures in a row"
        if self.last_error:
            text += f", last error: {self.last_error}"
        return text


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class Health:
    """A source's health record, kept by the source and its supervisor."""

    def __init__(self, source: str, *, stall_after: float, clock: Clock = time.time) -> None:
        self.source = source
        self.stall_after = stall_after
        self.clock = clock
        self.started = clock()
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.consecutive_failures = 0

    def success(self) -> None:
        self.last_success = self.clock()
        self.consecutive_failures = 0

    def failure(self, error: str) -> None:
        self.last_error = error[:300]
        self.last_error_at = self.clock()
        self.consecutive_failures += 1

    def snapshot(self) -> HealthSnapshot:
        since = self.last_success if self.last_success is not None else self.started
        stalled_for = max(0.0, self.clock() - since)
        return HealthSnapshot(
            source=self.source,
            last_success=_at(self.last_success),
            last_error=self.last_error,
            last_error_at=_at(self.last_error_at),
            consecutive_failures=self.consecutive_failures,
            stalled_for=stalled_for,
            stalled=stalled_for >= self.stall_after,
        )


def describe_error(exc: BaseException) -> str:
    """A one-line description of an error, without the request (which may carry secrets)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


async def supervise(
    name: str,
    attempt: Callable[[], AsyncIterator[T]],
    health: Health,
    *,
    backoff: Backoff,
    sleep: Sleep = asyncio.sleep,
    fatal: tuple[type[BaseException], ...] = (SourceSetupError,),
    failed: T | None = None,
) -> AsyncIterator[T]:
    """Run `attempt()` again and again; an error waits (rate limit or back-off), never ends it.

    The back-off starts over once the source reports a success. Only `fatal` errors end it.
    `failed`, when given, is yielded after each error, before the wait: the reader learns, in
    order with what came before, that this stream has fallen behind.
    """
    while True:
        try:
            async for item in attempt():
                yield item
            delay = _next_delay(backoff, health)
            log.info("source.restarting", source=name, reason="the fetch loop ended")
        except fatal:
            raise
        except RateLimited as exc:
            delay = _next_delay(backoff, health, exc.wait)
            health.failure(describe_error(exc))
            log.warning("source.rate_limited", source=name, wait=round(delay, 3))
        except Exception as exc:
            delay = _next_delay(backoff, health)
            health.failure(describe_error(exc))
            log.warning(
                "source.error",
                source=name,
                error=describe_error(exc),
                failures=health.consecutive_failures,
                retry_in=round(delay, 3),
            )
        if failed is not None:
            yield failed
        await sleep(delay)


def _next_delay(backoff: Backoff, health: Health, told: float | None = None) -> float:
    if health.consecutive_failures == 0:  # it worked since the last failure: start over
        backoff.reset()
    return backoff.next(told)


async def merge(streams: list[AsyncIterator[T]]) -> AsyncGenerator[T, None]:
    """The items of several endless streams as they come, one at a time (a slow reader slows
    them all); the first error of any stream ends the merged stream with that error. The
    streams run until the merged stream ends or is closed (`aclose`, which waits for them)."""
    queue: asyncio.Queue[tuple[T | None, BaseException | None]] = asyncio.Queue(maxsize=1)

    async def pump(stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((item, None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await queue.put((None, exc))

    tasks = [asyncio.create_task(pump(stream)) for stream in streams]
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            yield cast(T, item)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
