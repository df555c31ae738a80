"""A downtime is not a quiet spell: its buckets are unknown, not learned as zero, and a long gap
closes a bucket end at a time while the daemon's other work goes on."""

from __future__ import annotations

import asyncio
import math
import pickle
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import PageFactory, Recorder, judged_signals
from structlog.testing import capture_logs

from crisiswatch.bench.pipeline import generate, settings_for
from crisiswatch.cli import DEMO_CONFIG, DEMO_DIR
from crisiswatch.config import load_settings
from crisiswatch.daemon import FORGOTTEN, Daemon
from crisiswatch.domain import Bucket, Mention, Page, PageKind, SeriesKey
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import open_lines, parse_mention, read_mentions
from crisiswatch.notify.dispatch import Dispatcher
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.store import Store

BRANDS, RATE = 2, 0.4  # mentions a second: about 30 a brand in a five-minute bucket


class Words:
    """A sentiment model that knows two angry words (the generated posts' own)."""

    def negative_one(self, text: str) -> float:
        lowered = text.lower()
        return 0.9 if "furious" in lowered or "worst" in lowered else 0.1


def mentions(hours: float, start: datetime | None = None, seed: int = 7) -> list[Mention]:
    """Steady generated traffic for the two brands, from `start` if given."""
    made = [parse_mention(line) for line in generate(int(hours * 3600 * RATE), BRANDS, RATE, seed)]
    if start is None:
        return made
    first = made[0].created_at
    return [replace(m, id=f"later:{m.id}", created_at=start + (m.created_at - first)) for m in made]


@pytest.fixture(scope="module")
def learned() -> bytes:
    """A pipeline that has watched two days of steady traffic, pickled (as a checkpoint)."""
    settings = settings_for(BRANDS)
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), Words())
    for mention in mentions(48):
        pipeline.feed(mention)
    return pickle.dumps(pipeline)


def after_downtime(learned: bytes, down: timedelta, *, told: bool) -> tuple[Pipeline, list[Page]]:
    """Six hours of the same traffic after the daemon was down for `down`; `told`: the pipeline
    knows that nothing watched the downtime (as the live daemon tells it at its start)."""
    pipeline: Pipeline = pickle.loads(learned)
    watermark = pipeline.aggregator.watermark
    assert watermark is not None
    restart = watermark + timedelta(minutes=2) + down
    if told:
        pipeline.unobserved_until = restart
    pages = [page for m in mentions(6, restart, seed=99) for page in pipeline.feed(m)]
    return pipeline, pages


def opened(pages: list[Page]) -> list[tuple[str, tuple[str, ...]]]:
    return [(p.incident.brand, p.incident.rules) for p in pages if p.kind is PageKind.OPENED]


class TestADowntimeIsNotQuiet:
    def test_after_three_days_down_the_same_traffic_pages_only_as_without_downtime(
        self, learned: bytes
    ) -> None:
        """Learned as three days of zeros, the downtime made the brands' usual traffic a surge
        (every brand paged); known as unwatched, its buckets are not learned, and the same
        traffic pages as it does with no downtime at all."""
        _, steady = after_downtime(learned, timedelta(0), told=True)
        _, as_quiet = after_downtime(learned, timedelta(days=3), told=False)
        pipeline, unwatched = after_downtime(learned, timedelta(days=3), told=True)
        assert {brand for brand, rules in opened(as_quiet) if "angry-surge" in rules} == {
            "brand000",
            "brand001",
        }
        assert opened(unwatched) == opened(steady)
        # the downtime is unknown on the charts (a gap), not zero
        history = pipeline.history
        restart = pipeline.unobserved_until
        assert restart is not None
        window = history.window(SeriesKey("brand000"), restart, timedelta(days=2))
        assert all(math.isnan(count) for count in window.count)

    def test_what_a_source_caught_up_on_in_the_downtime_is_judged_not_learned(
        self, learned: bytes
    ) -> None:
        """A downtime bucket that mentions came into (a source's catch-up) is closed and judged
        (a crisis it shows still pages), but the detectors do not learn it as usual."""
        pipeline: Pipeline = pickle.loads(learned)
        watermark = pipeline.aggregator.watermark
        assert watermark is not None
        restart = watermark + timedelta(days=1)
        pipeline.unobserved_until = restart
        series = pipeline.detector._series[SeriesKey("brand000")]
        learned_before = series.buckets
        caught_up = mentions(0.25, restart - timedelta(hours=12), seed=5)
        for mention in [*caught_up, *mentions(0.5, restart, seed=6)]:
            pipeline.feed(mention)
        window = pipeline.history.window(
            SeriesKey("brand000"), restart - timedelta(hours=11), timedelta(hours=1)
        )
        assert sum(count for count in window.count if not math.isnan(count)) > 0  # judged
        # learned: only the few buckets closed after the restart, none of the downtime's
        assert 0 < series.buckets - learned_before <= 6


class Gap:
    """A live source with a mention, then, once `resume` is set, one three days later."""

    name = "gap"
    finite = False
    reports_progress = False

    def __init__(self, first: Mention, later: Mention) -> None:
        self.first, self.later = first, later
        self.resume = asyncio.Event()

    async def stream(self) -> AsyncIterator[Mention]:
        yield self.first
        await self.resume.wait()
        for n in range(3):  # the later ones wait in the queue while the gap closes
            yield replace(self.later, id=f"{self.later.id}:{n}")
        await asyncio.Event().wait()


class TestALongGapDoesNotStallTheDaemon:
    async def test_the_gap_closes_a_bucket_end_at_a_time_between_other_work(
        self, tmp_path: Path
    ) -> None:
        """Three days of bucket ends (864, each of every series) close over as many turns of
        the event loop, so /healthz, clicks and the watchdog's pings go on meanwhile; they had
        closed in one call (26 s at 200 brands: past systemd's watchdog). Every one closes, and
        the pipeline busy closing is not taken for wedged."""
        settings = settings_for(BRANDS)
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), Words())
        first, later = mentions(0.01)[0], mentions(0.01, seed=3)[0]
        later = replace(later, id="x:later", created_at=first.created_at + timedelta(days=3))
        store = await Store.open(tmp_path / "s.db")
        seen_pending, wedged, now, source = 0, False, [first.created_at], Gap(first, later)
        try:
            daemon = Daemon(
                pipeline, [source], [], store, queue_size=10, tick_seconds=3600,
                clock=lambda: now[0], wedged_after=0.05,
            )  # fmt: skip
            task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            async with asyncio.timeout(20):
                while pipeline.stats.mentions < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                now[0] = later.created_at  # the daemon ran on, and nothing came for three days
                source.resume.set()
                while pipeline.stats.mentions < 4 or pipeline.closes_pending:
                    seen_pending += pipeline.closes_pending
                    wedged = wedged or not daemon.pipeline_alive()  # busy is not wedged
                    await asyncio.sleep(0)
            daemon.stopping.set()
            await task
        finally:
            await store.close()
        assert seen_pending > 100  # other work ran while bucket ends were left to close
        assert not wedged
        aggregator = pipeline.aggregator
        assert aggregator._next_to_close is not None
        ends = aggregator._next_to_close - aggregator.index_of(first.created_at)
        assert ends >= 863 and pipeline.stats.buckets == ends * len(aggregator._series)


class Quiet:
    """A live source with nothing to say (the backlog is already queued)."""

    name = "quiet"
    finite = False
    reports_progress = False

    async def stream(self) -> AsyncIterator[Mention]:
        nothing: list[Mention] = []
        await asyncio.Event().wait()
        for mention in nothing:
            yield mention


class TestABacklogDoesNotStallTheDaemon:
    async def test_other_work_runs_while_a_backlog_is_taken(self, tmp_path: Path) -> None:
        """Queued mentions come without a wait, so the pipeline took a whole backlog in one
        turn of the event loop (stalls of 280-450 ms at 200 brands); it now lets the loop's
        other work in every few hundred."""
        settings = settings_for(BRANDS)
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), Words())
        backlog = mentions(1)[:1_500]
        store = await Store.open(tmp_path / "s.db")
        turns_during = 0
        try:
            daemon = Daemon(
                pipeline, [Quiet()], [], store, queue_size=2_000, tick_seconds=3600,
                clock=lambda: backlog[-1].created_at,
            )  # fmt: skip
            for mention in backlog:
                daemon.queue.put_nowait(mention)
            task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            async with asyncio.timeout(20):
                while pipeline.stats.mentions < len(backlog):
                    turns_during += pipeline.stats.mentions > 0
                    await asyncio.sleep(0)
            daemon.stopping.set()
            await task
        finally:
            await store.close()
        assert turns_during >= 2


class TestAnIncidentTheStateForgot:
    async def test_is_resolved_at_a_live_start_and_no_longer_escalates(
        self, tmp_path: Path, make_page: PageFactory
    ) -> None:
        """The store has an incident firing that the restored state does not know (its
        checkpoint was moved aside, or was older than it): nothing would have resolved it, its
        message said firing for ever and escalation called people about it. Once the clock has
        moved the watermark past its last page, a live daemon resolves it, saying why."""
        store = await Store.open(tmp_path / "s.db")
        forgotten = make_page(id="kestrel@forgotten")
        recorder = Recorder()
        try:
            await Dispatcher([recorder], store).dispatch(forgotten)
            await store.save_message(forgotten.incident.id, "recorder", "C1", "1.1", "default")
            assert [i for i, *_ in await store.unacknowledged("recorder")] == ["kestrel@forgotten"]
            settings = settings_for(BRANDS)
            pipeline = Pipeline(settings, load_rules(settings.rules, settings), Words())
            now = forgotten.at + timedelta(hours=3)
            daemon = Daemon(
                pipeline, [Quiet()], [recorder], store, queue_size=10, tick_seconds=0.01,
                clock=lambda: now,
            )  # fmt: skip
            task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            async with asyncio.timeout(10):
                while len(recorder.pages) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            daemon.stopping.set()
            await task
            resolution = recorder.pages[1]
            assert resolution.kind is PageKind.RESOLVED and resolution.at == now
            assert resolution.incident.id == "kestrel@forgotten"
            assert "saved state did not know it" in resolution.changes[0]
            [row] = await store.incidents()
            assert row["status"] == "resolved"
            assert await store.unacknowledged("recorder") == []
        finally:
            await store.close()


class Replayed:
    """A live source that delivers the demo's mentions (as sources read again from their
    cursors after a crash)."""

    name = "replayed"
    finite = False
    reports_progress = False

    def __init__(self, items: list[Mention]) -> None:
        self.items = items

    async def stream(self) -> AsyncIterator[Mention]:
        for item in self.items:
            yield item
        await asyncio.Event().wait()


async def test_an_incident_the_mentions_read_again_make_again_is_not_resolved(
    tmp_path: Path,
) -> None:
    """A crash after an incident opened, with the checkpoint from before it: the sources read
    the mentions since the checkpoint again, and the pipeline makes the same incident again.
    It is not resolved as forgotten (Slack had said resolved while it fired, and its page made
    again was dropped as already sent)."""
    settings = load_settings(DEMO_CONFIG)
    rules = load_rules(settings.rules, settings)
    with open_lines(DEMO_DIR / "demo_mentions.jsonl.gz") as lines:
        demo = [m for m in read_mentions(lines) if isinstance(m, Mention)][:2_200]
    model = SentimentModel.load_default()
    before_crash = Pipeline(settings, rules, model)
    checkpointed = 1_700  # mentions before the last checkpoint: the incident opens after it
    for mention in demo[:checkpointed]:
        assert not before_crash.feed(mention)
    saved = pickle.dumps(before_crash)
    made = [page for mention in demo[checkpointed:] for page in before_crash.feed(mention)]
    opened = next(page for page in made if page.kind is PageKind.OPENED)
    recorder = Recorder()
    store = await Store.open(tmp_path / "s.db")
    try:
        await Dispatcher([recorder], store).dispatch(opened)  # sent before the crash
        pipeline: Pipeline = pickle.loads(saved)  # restored from the checkpoint before it
        last = demo[-1].created_at
        daemon = Daemon(
            pipeline, [Replayed(demo[checkpointed:])], [recorder], store, queue_size=100,
            tick_seconds=0.01,
            clock=lambda: last,
        )  # fmt: skip
        task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        async with asyncio.timeout(20):
            while pipeline.aggregator.watermark is None or (  # noqa: ASYNC110
                pipeline.aggregator.watermark < last - timedelta(minutes=2)
            ):  # every mention read, then the ticks' turn
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
        daemon.stopping.set()
        await task
        assert pipeline.incidents.find(opened.incident.id) is not None  # made again
        assert not [p for p in recorder.pages if FORGOTTEN in p.changes]
    finally:
        await store.close()


def test_a_surge_in_unwatched_buckets_still_confirms_and_pages(
    learned: bytes, tmp_path: Path
) -> None:
    """While a source is behind (its buckets not learned), a surge still confirms from bucket
    to bucket and pages: only the baselines stop learning, not the recent buckets (scored
    alone, every bucket had been capped as merely elevated, and volume rules never paged)."""
    (tmp_path / "surge.yaml").write_text(
        "rules:\n  - id: surge\n    when: {volume_spike: balanced}\n    severity: critical\n",
        encoding="utf-8",
    )
    pipeline: Pipeline = pickle.loads(learned)
    pipeline.reconfigure(pipeline.settings, load_rules([tmp_path], pipeline.settings))
    watermark = pipeline.aggregator.watermark
    assert watermark is not None
    start = watermark + timedelta(minutes=2)
    pipeline.unobserved_until = start + timedelta(days=1)  # a source behind all along
    usual = mentions(0.5, start, seed=11)
    surge = [  # five times the usual traffic for an hour
        replace(m, id=f"{m.id}:{copy}", author=f"{m.author}:{copy}")
        for m in mentions(1, usual[-1].created_at, seed=12)
        for copy in range(5)
    ]
    pages = [page for m in [*usual, *surge] for page in pipeline.feed(m)]
    assert {brand for brand, rules in opened(pages) if "surge" in rules} == {
        "brand000",
        "brand001",
    }


def test_a_rule_s_for_does_not_span_a_downtime(tmp_path: Path) -> None:
    """A rule that had held ten minutes of its `for: 15m` when the daemon went down has not held
    through the downtime: after it, it alerts only once it has held 15 minutes again (it had
    counted the day down as holding, and alerted on the first bucket after it)."""
    (tmp_path / "held.yaml").write_text(
        "rules:\n  - id: held\n    when: {negative_share: {above: 0.2, min_count: 5}}\n"
        "    for: 15m\n    severity: warning\n",
        encoding="utf-8",
    )
    settings = settings_for(BRANDS)
    pipeline = Pipeline(settings, load_rules([tmp_path], settings), Words())
    before = mentions(0.15)  # 9 minutes: holding for two buckets when the daemon goes down
    assert not [page for m in before for page in pipeline.feed(m)]
    restart = before[-1].created_at + timedelta(days=1)
    pipeline.unobserved_until = restart
    after = mentions(0.3, restart, seed=4)
    pages = [page for m in after for page in pipeline.feed(m)]
    assert all(page.at > restart for page in pages)
    first = min(page.at for page in pages if page.kind is PageKind.OPENED)
    bucket = pipeline.aggregator.start_of(pipeline.aggregator.index_of(restart))
    assert first == bucket + timedelta(minutes=15)  # held from the restart's bucket


async def test_a_bucket_end_that_fails_to_close_is_logged_and_passed(tmp_path: Path) -> None:
    """A bucket end the clock closes that raises (a bug its numbers set off) is logged and
    passed, as a mention the pipeline raises on is, and the next ones close; the daemon goes
    on (it had stopped, and restarted into the same failure)."""
    settings = settings_for(BRANDS)
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), Words())
    decide, calls = pipeline.decide, [0]

    def failing_once(closed: list[Bucket]) -> list[Page]:
        calls[0] += 1
        if calls[0] == 1:
            raise ZeroDivisionError("a bug")
        return decide(closed)

    pipeline.decide = failing_once  # type: ignore[method-assign]
    first = mentions(0.01)[0]
    store = await Store.open(tmp_path / "s.db")
    now = [first.created_at]
    try:
        daemon = Daemon(
            pipeline, [Gap(first, first)], [], store, queue_size=10, tick_seconds=0.01,
            clock=lambda: now[0],
        )  # fmt: skip
        with capture_logs() as logs:
            task = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            async with asyncio.timeout(20):
                while pipeline.stats.mentions < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                now[0] = first.created_at + timedelta(hours=3)  # the clock closes the buckets
                while pipeline.stats.buckets < 30 * len(pipeline.aggregator._series):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert not task.done()
            daemon.stopping.set()
            await task
        assert [e["event"] for e in logs if e["event"] == "pipeline.close_failed"] == [
            "pipeline.close_failed"
        ]
    finally:
        await store.close()


def test_the_first_bucket_after_a_downtime_rises_from_nothing_known(learned: bytes) -> None:
    """Its rise is not measured from the last bucket before the downtime, days earlier (a page
    had said 'Rising 27 → 54 in the last 5m')."""
    pipeline: Pipeline = pickle.loads(learned)
    watermark = pipeline.aggregator.watermark
    assert watermark is not None
    restart = watermark + timedelta(days=3)
    pipeline.unobserved_until = restart
    signals = judged_signals(pipeline.detector)
    for mention in mentions(0.2, restart, seed=8):
        pipeline.feed(mention)
    first = next(s for s in signals if s.series == SeriesKey("brand000") and s.at > restart)
    assert first.previous_count == 0
