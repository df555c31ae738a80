"""Bucket closes wait while a live source catches up: X and Reddit say in their streams when they
are behind (starting, catching up, failing) and when current again; the daemon holds the
watermark there for at most `sources.catch_up_wait`, so a restart's catch-up counts in the
buckets of the downtime instead of arriving late."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fake_x import TOKEN, FakeX, iso
from local_server import running
from prometheus_client import CollectorRegistry, generate_latest
from source_testing import NOW, Clock, until_current
from structlog.testing import capture_logs

from crisiswatch.config import Brand, Settings, XSettings, load_settings
from crisiswatch.daemon import Daemon
from crisiswatch.domain import Mention, SeriesKey
from crisiswatch.frontiers import START, Frontiers
from crisiswatch.ops.http import DaemonCollector
from crisiswatch.pipeline import Pipeline
from crisiswatch.sources import Progress
from crisiswatch.sources.x import XSource
from crisiswatch.store import Store

BRAND = Brand(id="acme", keywords=["acme bank"])
PRESENT = datetime.fromtimestamp(NOW, UTC)
WAIT = timedelta(minutes=5)


fake = running(FakeX)


def x_source(fake: FakeX, clock: Clock, **settings: str) -> XSource:
    return XSource(
        XSettings(api_url=fake.url, search_every="30s", **settings), [BRAND], None,
        bearer_token=TOKEN, clock=clock, sleep=clock.sleep, rand=lambda: 0.5,
    )  # fmt: skip


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class TestFrontiers:
    def test_every_source_holds_closes_from_the_start_until_it_is_current(self) -> None:
        frontiers = Frontiers(["reddit", "x"], wait=WAIT, now=PRESENT)
        assert frontiers.ceiling(PRESENT) == START
        frontiers.report(Progress("x", None), PRESENT)
        assert frontiers.ceiling(PRESENT) == START  # reddit has said nothing yet
        frontiers.report(Progress("reddit", None), PRESENT)
        assert frontiers.ceiling(PRESENT) is None and frontiers.waiting_for(PRESENT) == []

    def test_a_failing_source_holds_closes_at_its_last_fetch_for_the_wait_at_most(self) -> None:
        frontiers = Frontiers(["x"], wait=WAIT, now=PRESENT)
        frontiers.report(Progress("x", None), PRESENT)
        last_fetch = PRESENT - timedelta(seconds=40)
        frontiers.report(Progress("x", last_fetch), PRESENT)
        later = PRESENT + WAIT - timedelta(seconds=1)
        frontiers.report(Progress("x", last_fetch + timedelta(seconds=1)), later)  # still behind
        assert frontiers.ceiling(later) == last_fetch + timedelta(seconds=1)
        assert frontiers.waiting_for(later) == ["x"]
        assert frontiers.ceiling(PRESENT + WAIT) is None  # waited since it fell behind: enough
        frontiers.report(Progress("x", None), PRESENT + WAIT)
        frontiers.report(Progress("x", PRESENT + WAIT), PRESENT + WAIT)  # fails again: waits anew
        assert frontiers.ceiling(PRESENT + WAIT) == PRESENT + WAIT

    def test_no_wait_never_holds_nor_logs(self) -> None:
        """`catch_up_wait: 0s` turns waiting off: no hold, and no 'stopped waiting' warning at
        every start and every error."""
        frontiers = Frontiers(["x"], wait=timedelta(0), now=PRESENT)
        with capture_logs() as logs:
            assert frontiers.ceiling(PRESENT) is None
            frontiers.report(Progress("x", PRESENT), PRESENT)
            assert frontiers.ceiling(PRESENT) is None
            frontiers.report(Progress("x", None), PRESENT)
        assert logs == [] and frontiers.waiting_for(PRESENT) == []


async def progress_until(stream: AsyncIterator[Mention | Progress], count: int) -> list[Progress]:
    """The next `count` progress reports of a source's stream (its mentions skipped)."""
    told: list[Progress] = []
    async with asyncio.timeout(10):
        async for item in stream:
            if isinstance(item, Progress):
                told.append(item)
                if len(told) == count:
                    return told
    return told


class TestSourcesSayHowFarBehind:
    async def test_x_is_behind_from_the_start_then_current_then_behind_while_failing(
        self, fake: FakeX
    ) -> None:
        """Behind from the start (it may deliver anything after its cursors) until its first
        poll has handed everything over; a failed poll makes it behind since the last poll that
        worked began; the next poll that works makes it current again."""
        alice = fake.user("alice")
        fake.tweet("acme bank", author=alice, created=iso(NOW - 60))
        clock = Clock()
        stream = x_source(fake, clock).stream()
        try:
            first = await progress_until(stream, 2)
            assert first == [Progress("x", START), Progress("x", None)]
            fake.fail("/2/tweets/search/recent", status=503, times=1)
            assert await progress_until(stream, 2) == [
                Progress("x", at(NOW)),  # when the last poll that worked began
                Progress("x", None),  # the poll after the failed one's back-off
            ]
            assert fake.faults[0].times == 0
        finally:
            await stream.aclose()

    async def test_a_stream_catch_up_is_current_only_after_its_search(self, fake: FakeX) -> None:
        """The filtered stream's catch-up after a connect: behind until the search that fills
        the gap has handed over its tweets, which come before the word that it is current."""
        alice = fake.user("alice")
        missed = fake.tweet("acme bank missed", author=alice, created=iso(NOW - 120))
        clock = Clock()
        stream = x_source(fake, clock, mode="stream").stream()
        try:
            seen = await until_current(stream)
        finally:
            await stream.aclose()
        assert seen[0] == Progress("x", START)
        assert [m.id for m in seen if isinstance(m, Mention)] == [missed]


class CurrentFeed:
    """A pushed source (like HTTP ingest): one mention of the present at once, then quiet."""

    name = "ingest"
    finite = False
    reports_progress = False

    async def stream(self) -> AsyncIterator[Mention]:
        yield Mention(id="ingest:now", source="ingest", created_at=PRESENT, text="acme bank")
        await asyncio.Event().wait()


class Calm:
    def negative_one(self, text: str) -> float:
        return 0.1


def deployment(tmp_path: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"rules: []\nstate_dir: {tmp_path}\nbrands:\n  - id: acme\n    keywords: [acme bank]\n",
        encoding="utf-8",
    )
    return load_settings(config)


async def restart_after_downtime(
    tmp_path: Path, fake: FakeX, catch_up_seconds: float, *, first_start: bool = False
) -> Pipeline:
    """The daemon was down for half an hour: its state saw a mention before, X has a tweet a
    minute since, and a pushed source delivers a mention of the present at once, while the
    clock ticks at the present. (`first_start`: no state, X's backfill fetches the half hour.)"""
    pipeline = Pipeline(deployment(tmp_path), [], Calm())
    if not first_start:
        before = Mention(id="x:before", source="x", created_at=at(NOW - 1800), text="acme bank")
        pipeline.feed(before)  # the state as it was saved before the downtime
    for minute in range(30):  # each by its own author (one author's burst is capped)
        author = fake.user(f"user{minute}")
        fake.tweet(f"acme bank {minute}", author=author, created=iso(NOW - 1790 + 60 * minute))
    clock = Clock()
    store = await Store.open(tmp_path / "s.db")
    try:
        daemon = Daemon(
            pipeline, [x_source(fake, clock, backfill="30m"), CurrentFeed()], [], store,
            queue_size=100, tick_seconds=0.005, clock=lambda: PRESENT,
            catch_up_seconds=catch_up_seconds,
        )  # fmt: skip
        task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        async with asyncio.timeout(10):
            while pipeline.stats.mentions + pipeline.stats.late < 32 - first_start:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # ticks after the catch-up close the downtime's buckets
        daemon.stopping.set()
        await task
    finally:
        await store.close()
    return pipeline


class TestRestartAfterDowntime:
    async def test_the_catch_up_counts_in_the_buckets_of_the_downtime(
        self, tmp_path: Path, fake: FakeX
    ) -> None:
        """Every tweet of the downtime counts, and its buckets close with them, not as quiet."""
        pipeline = await restart_after_downtime(tmp_path, fake, catch_up_seconds=300)
        assert (pipeline.stats.mentions, pipeline.stats.late) == (32, 0)
        # the buckets closed by the present's watermark (2 minutes back), each with its tweets
        closed_to = (NOW - 120) // 300 * 300
        window = pipeline.history.window(SeriesKey("acme"), at(closed_to), timedelta(minutes=35))
        posted = [NOW - 1800] + [NOW - 1790 + 60 * minute for minute in range(30)]
        starts = [window.start.timestamp() + 300 * k for k in range(len(window.count))]
        expected = [sum(s <= t < s + 300 for t in posted) for s in starts]
        assert [int(c) for c in window.count[1:]] == expected[1:] and sum(expected) == 28
        # judged (a crisis in them pages), but not learned: the daemon was down, and its
        # sources' catch-up may be short of what was posted (past `catch_up_wait`, an API's limit)
        assert pipeline.unobserved_until == PRESENT
        assert pipeline.detector._series[SeriesKey("acme")].buckets == 0

    async def test_a_first_start_s_backfill_counts_though_the_present_comes_first(
        self, tmp_path: Path, fake: FakeX
    ) -> None:
        """No state yet: nothing closes (and no watermark is set) until X's backfill is in, so
        the present's mention, first to arrive, does not make the backfill late."""
        pipeline = await restart_after_downtime(tmp_path, fake, 300, first_start=True)
        assert (pipeline.stats.mentions, pipeline.stats.late) == (31, 0)
        assert pipeline.aggregator.watermark == PRESENT - timedelta(minutes=2)

    async def test_without_waiting_the_catch_up_is_late(self, tmp_path: Path, fake: FakeX) -> None:
        """What happened before: the clock and the present's mention closed the downtime's
        buckets as quiet, and X's catch-up came too late for them."""
        pipeline = await restart_after_downtime(tmp_path, fake, catch_up_seconds=0)
        assert pipeline.stats.late >= 25


class TestASourceThatNeverCatchesUp:
    async def test_closes_wait_for_it_then_go_on_without_it(
        self, tmp_path: Path, fake: FakeX
    ) -> None:
        """X failing from the start: closes wait, and `systemctl status` and the metrics say so;
        once `catch_up_wait` has passed since it fell behind, buckets close without it (a page
        held back for good would be worse than its posts arriving late), and the log says so."""
        fake.fail("/2/tweets/search/recent", status=503, times=100_000)
        pipeline = Pipeline(deployment(tmp_path), [], Calm())
        pipeline.feed(
            Mention(id="x:before", source="x", created_at=at(NOW - 1800), text="acme bank")
        )
        now = [PRESENT]
        store = await Store.open(tmp_path / "s.db")
        try:
            daemon = Daemon(
                pipeline, [x_source(fake, Clock()), CurrentFeed()], [], store, queue_size=100,
                tick_seconds=0.005, clock=lambda: now[0], catch_up_seconds=300,
            )  # fmt: skip
            with capture_logs() as logs:
                task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
                async with asyncio.timeout(10):
                    while pipeline.stats.mentions < 2:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)  # ticks at the present: closes wait for X
                held = (pipeline.stats.buckets, daemon.status())
                registry = CollectorRegistry()
                registry.register(DaemonCollector(daemon))
                metrics = generate_latest(registry).decode()
                now[0] = PRESENT + timedelta(minutes=5)
                async with asyncio.timeout(10):
                    while pipeline.stats.buckets == 0:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                given_up = daemon.status()
                daemon.stopping.set()
                await task
        finally:
            await store.close()
        assert held[0] == 0 and "bucket closes wait for x to catch up" in held[1]
        delay = re.search(r"^crisiswatch_watermark_delay_seconds (\S+)$", metrics, re.M)
        assert delay is not None and float(delay.group(1)) == 1800 + 120  # held where it was
        assert pipeline.stats.buckets > 0 and pipeline.stats.late == 0
        assert [e["source"] for e in logs if e["event"] == "buckets.stopped_waiting"] == ["x"]
        # closed without X's posts: not learned as how busy the brand usually is, as status says
        assert pipeline.unobserved_until == now[0]
        assert "baselines not learning while x is behind" in given_up
        assert "not learning" not in held[1]
