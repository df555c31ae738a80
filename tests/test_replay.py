"""The replay source: JSON lines (plain or gzipped) in event time, bad lines skipped."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from crisiswatch.domain import Mention
from crisiswatch.sources.replay import ReplaySource

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def lines(minutes: list[int]) -> bytes:
    rows = [
        {"id": f"r:{n}", "created_at": (T0 + timedelta(minutes=m)).isoformat(), "text": "hi"}
        for n, m in enumerate(minutes)
    ]
    return b"\n".join(orjson.dumps(row) for row in rows) + b"\n"


async def collect(source: ReplaySource) -> list[Mention]:
    return [mention async for mention in source.stream()]


class TestReplaySource:
    async def test_plain_and_gzipped_files_give_the_same_mentions(self, tmp_path: Path) -> None:
        """A gzipped copy replays exactly like the plain file; the source name is the default."""
        plain, packed = tmp_path / "m.jsonl", tmp_path / "m.jsonl.gz"
        plain.write_bytes(lines([0, 1, 2]))
        packed.write_bytes(gzip.compress(lines([0, 1, 2])))
        first = await collect(ReplaySource(plain, name="archive"))
        assert first == await collect(ReplaySource(packed, name="archive"))
        assert [m.id for m in first] == ["r:0", "r:1", "r:2"]
        assert {m.source for m in first} == {"archive"}

    async def test_bad_lines_are_counted_and_skipped(self, tmp_path: Path) -> None:
        """Malformed lines do not stop the stream; the source counts them."""
        path = tmp_path / "m.jsonl"
        path.write_bytes(b"not json\n" + lines([0, 1]) + b'{"id": 3}\n\n')
        source = ReplaySource(path)
        assert len(await collect(source)) == 2
        assert source.malformed == 2

    async def test_speed_zero_never_waits(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """As fast as possible: no sleeping at all."""
        path = tmp_path / "m.jsonl"
        path.write_bytes(lines([0, 30, 60]))
        waits: list[float] = []

        async def fake_sleep(delay: float) -> None:
            waits.append(delay)

        monkeypatch.setattr(asyncio, "sleep", fake_sleep)
        await collect(ReplaySource(path, speed=0))
        assert waits == []

    async def test_speed_paces_event_time_against_the_clock(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """At speed 60, a mention an hour of event time later is due a minute later."""
        path = tmp_path / "m.jsonl"
        path.write_bytes(lines([0, 30, 60]))
        clock = [1000.0]
        waits: list[float] = []

        async def fake_sleep(delay: float) -> None:
            waits.append(round(delay, 6))
            clock[0] += delay

        monkeypatch.setattr("crisiswatch.sources.replay.time.monotonic", lambda: clock[0])
        monkeypatch.setattr(asyncio, "sleep", fake_sleep)
        await collect(ReplaySource(path, speed=60))
        assert waits == [30.0, 30.0]
