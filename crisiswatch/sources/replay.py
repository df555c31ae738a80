"""Replay: mention JSON lines (optionally gzipped) played in event time.

`speed: 0` plays as fast as the pipeline takes them; `speed: 60` plays one minute of event time
per second of wall time. A malformed line is counted, logged with its number, and skipped; a
file that cannot be read to its end (a gzip file cut short) is played up to where it can be, and
says so (`cut_short`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from pathlib import Path

import structlog

from crisiswatch.domain import Mention
from crisiswatch.mentions import BadLine, CutShort, open_with_raw, read_mentions

log = structlog.get_logger(__name__)
BATCH = 2_000  # lines read per trip to the worker thread


class ReplaySource:
    finite = True
    reports_progress = False

    def __init__(self, path: Path, *, speed: float = 0.0, name: str = "replay") -> None:
        self.path = path
        self.speed = speed
        self.name = name
        self.malformed = 0
        self.fraction_read = 0.0  # of the file's bytes, for progress displays
        self.cut_short: str | None = None  # why the file could not be read to its end

    async def stream(self) -> AsyncIterator[Mention]:
        handle, raw = await asyncio.to_thread(open_with_raw, self.path)
        size = max(os.fstat(raw.fileno()).st_size, 1)
        try:
            lines = read_mentions(handle, default_source=self.name)
            first_event: float | None = None
            started = time.monotonic()
            while batch := await asyncio.to_thread(_take, lines, BATCH):
                self.fraction_read = raw.tell() / size
                for item in batch:
                    if isinstance(item, CutShort):
                        self.cut_short = f"{self.path} line {item.line_number}: {item.reason}"
                        log.error("replay.cut_short", source=self.name, problem=self.cut_short)
                        continue
                    if isinstance(item, BadLine):
                        self.malformed += 1
                        log.warning(
                            "mention.malformed",
                            source=self.name,
                            line=item.line_number,
                            reason=item.reason,
                        )
                        continue
                    if self.speed > 0:
                        event = item.created_at.timestamp()
                        first_event = event if first_event is None else first_event
                        due = started + (event - first_event) / self.speed
                        delay = due - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    yield item
        finally:
            self.fraction_read = 1.0
            await asyncio.to_thread(handle.close)
            await asyncio.to_thread(raw.close)


def _take(lines: Iterator[Mention | BadLine], count: int) -> list[Mention | BadLine]:
    return list(islice(lines, count))
