"""The daemon's lifecycle: sources → queue → pipeline → dispatcher, restarts and signals."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from conftest import PageFactory, capture_all_logs
from daemon_process import reap, start, wait_for
from daemon_stream import ROOT, T0, AngryScorer, Recorder, settings_for, write_stream
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from crisiswatch import checkpoint
from crisiswatch.config import LiveSettings, Route, Settings, load_settings
from crisiswatch.daemon import SEEN_BATCH, Daemon, RunSummary
from crisiswatch.domain import (
    Incident,
    IncidentStatus,
    Mention,
    Page,
    PageKind,
    Severity,
    Silence,
)
from crisiswatch.notify import PermanentError, RetryLater, dispatch
from crisiswatch.notify.codec import dump_page
from crisiswatch.notify.dispatch import BROKEN_TRIES, Dispatcher
from crisiswatch.ops.http import DaemonCollector
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.sources.replay import ReplaySource
from crisiswatch.store import OutboxItem, Store, StoreError, page_key


async def run_once(
    settings: Settings, store_path: Path, notifier: Recorder, *, queue_size: int = 100
) -> RunSummary:
    store = await Store.open(store_path)
    try:
        replay = settings.sources.replay
        assert replay is not None
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), AngryScorer())
        daemon = Daemon(
            pipeline, [ReplaySource(replay.path)], [notifier], store, queue_size=queue_size
        )
        return await daemon.run(exit_when_sources_end=True)
    finally:
        await store.close()


class TestDaemon:
    async def test_surge_pages_and_resolves(self, tmp_path: Path) -> None:
        """A replayed angry surge opens one incident at the surge and resolves it."""
        stream = tmp_path / "m.jsonl"
        write_stream(stream)
        notifier = Recorder()
        summary = await run_once(settings_for(tmp_path, stream), tmp_path / "s.db", notifier)
        kinds = [p.kind for p in notifier.pages]
        assert kinds[0] is PageKind.OPENED and kinds[-1] is PageKind.RESOLVED
        assert kinds.count(PageKind.OPENED) == 1
        opened = notifier.pages[0]
        assert T0 + timedelta(hours=20) <= opened.at <= T0 + timedelta(hours=20, minutes=15)
        assert "angry-surge" in notifier.pages[-1].incident.rules  # from its second bucket
        assert summary.incidents_opened == 1 and summary.pages_sent == len(kinds)

    async def test_malformed_lines_are_counted_logged_and_skipped(self, tmp_path: Path) -> None:
        """Bad lines are logged with their line numbers; the rest of the stream still counts."""
        stream = tmp_path / "m.jsonl"
        total = write_stream(stream, bad_lines=3)
        with capture_logs() as logs:
            summary = await run_once(settings_for(tmp_path, stream), tmp_path / "s.db", Recorder())
        bad = [e for e in logs if e["event"] == "mention.malformed"]
        assert [e["line"] for e in bad] == [11, 61, 111]
        assert all("not valid JSON" in e["reason"] for e in bad)
        assert summary.malformed == 3
        assert summary.stats.mentions == total - 3

    async def test_restart_neither_recounts_nor_repages(self, tmp_path: Path) -> None:
        """Replaying the same stream into the same store counts nothing twice, pages nothing."""
        stream = tmp_path / "m.jsonl"
        total = write_stream(stream)
        settings = settings_for(tmp_path, stream)
        first, second = Recorder(), Recorder()
        await run_once(settings, tmp_path / "s.db", first)
        summary = await run_once(settings, tmp_path / "s.db", second)
        assert first.pages and second.pages == []
        assert summary.stats.duplicates == total and summary.stats.mentions == 0

    async def test_a_tiny_queue_slows_the_source_and_loses_nothing(self, tmp_path: Path) -> None:
        """Backpressure: with room for one mention, every mention still arrives."""
        stream = tmp_path / "m.jsonl"
        total = write_stream(stream, hours=3, surge_at=1)
        summary = await run_once(
            settings_for(tmp_path, stream), tmp_path / "s.db", Recorder(), queue_size=1
        )
        assert summary.stats.mentions == total

    async def test_restored_ids_are_not_kept_in_memory(self, tmp_path: Path) -> None:
        """At start the dedupe window is filled from the store's seen ids, and no list of them
        stays alive for the daemon's whole life (a million ids took ~150 MB)."""
        stream = tmp_path / "m.jsonl"
        write_stream(stream, hours=1)
        settings = settings_for(tmp_path, stream)
        store = await Store.open(tmp_path / "s.db")
        await store.mark_seen([f"seen:{n}" for n in range(30_000)], T0)
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), AngryScorer())
        daemon = Daemon(pipeline, [], [Recorder()], store, queue_size=10)
        with capture_all_logs() as logs:
            run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            await until(lambda: daemon.ready)
        try:
            gc.collect()
            assert not [o for o in gc.get_objects() if type(o) is list and len(o) == 30_000]
            assert not pipeline.deduper.first_time("seen:0")
            assert not pipeline.deduper.first_time("seen:29999")
            (started,) = [e for e in logs if e["event"] == "daemon.started"]
            assert started["restored_ids"] == 30_000
        finally:
            daemon.stopping.set()
            await run
            await store.close()


@pytest.mark.parametrize("failing", ["detector", "rules"])
async def test_each_close_is_timed_for_the_metrics(tmp_path: Path, failing: str) -> None:
    """Every pipeline call that closes a bucket end and makes its pages is timed in its own
    histogram (`crisiswatch_bucket_close_seconds`); mentions that close nothing are not in
    it, nor is a close that raised, whether before or after its buckets were counted as
    judged (every third one raises here, in the detectors or in the rules)."""
    stream = tmp_path / "m.jsonl"
    lines = write_stream(stream, hours=3, surge_at=1)
    settings = settings_for(tmp_path, stream)
    store = await Store.open(tmp_path / "s.db")
    pipeline = Pipeline(settings, load_rules(settings.rules, settings), AngryScorer())
    closing, ends, inside = [0], [0], [False]
    close = pipeline.close_pending
    part, name = (pipeline.detector, "judge") if failing == "detector" else (pipeline, "_out")
    step = getattr(part, name)

    def sometimes(*args: Any, **kwargs: Any) -> Any:
        ends[0] += inside[0]
        if inside[0] and ends[0] % 3 == 0:  # a close's, not the stream's end's
            raise RuntimeError("a bug")
        return step(*args, **kwargs)

    def counted() -> list[Page]:
        judged, inside[0] = pipeline.stats.buckets, True
        try:
            pages = close()  # one that raises goes on to the daemon, which logs it
        finally:
            inside[0] = False
        closing[0] += pipeline.stats.buckets > judged
        return pages

    setattr(part, name, sometimes)
    pipeline.close_pending = counted  # type: ignore[method-assign]
    daemon = Daemon(pipeline, [ReplaySource(stream)], [Recorder()], store, queue_size=10)
    try:
        await daemon.run(exit_when_sources_end=True)
    finally:
        await store.close()
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    metrics = generate_latest(registry).decode()
    assert closing[0] >= 20 and ends[0] >= 30  # bucket ends over three hours, a third failing
    assert f"crisiswatch_bucket_close_seconds_count {closing[0]}.0" in metrics
    assert f"crisiswatch_pipeline_seconds_count {lines}.0" in metrics


class LiveFeed:
    """A live source: `count` mentions, then open and quiet; counts the ids it is told the
    pipeline consumed (when its cursors would be saved)."""

    name = "live"
    finite = False
    reports_progress = False

    def __init__(self, count: int) -> None:
        self.count = count
        self.committed = 0

    async def stream(self) -> AsyncIterator[Mention]:
        for n in range(self.count):
            yield Mention(f"x:{n}", "x", T0 + timedelta(seconds=n), "acme bank is fine " * 20)
        await asyncio.Event().wait()

    async def commit(self, consumed: Sequence[str]) -> None:
        self.committed += len(consumed)


def live_daemon(
    tmp_path: Path,
    store: Store,
    feed: LiveFeed,
    pipeline_clock: Callable[[], datetime] | None = None,
    **options: Any,
) -> Daemon:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"rules: [{ROOT / 'rules'}]\nbrands:\n  - id: acme\n    keywords: [acme bank]\n"
        "pipeline: {dedupe_capacity: 1000}\n"
    )
    settings = load_settings(config)
    rules = load_rules(settings.rules, settings)
    pipeline = Pipeline(settings, rules, AngryScorer(), clock=pipeline_clock)
    return Daemon(pipeline, [feed], [], store, queue_size=100, checkpoint_dir=tmp_path,
                  tick_seconds=0, **options)  # fmt: skip


class AheadFeed(LiveFeed):
    """A post stamped 9 hours ahead (local time sent without its offset), then a real one."""

    async def stream(self) -> AsyncIterator[Mention]:
        yield Mention("x:ahead", "x", T0 + timedelta(hours=9), "acme bank is down")
        yield Mention("x:real", "x", T0, "acme bank is down")
        await asyncio.Event().wait()


class TestAMentionThePipelineFailsOn:
    async def test_is_logged_and_dropped_and_the_daemon_goes_on(
        self, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A mention whose content sets off a bug in the pipeline is logged (its id) and
        dropped; the mentions after it count. Before, the daemon stopped, and systemd's
        restart met the same mention again from its source: it stopped for good."""
        feed = LiveFeed(3)
        daemon = live_daemon(tmp_path, store, feed)
        attribute = daemon.pipeline.attributor.attribute

        def buggy(mention: Mention, tokens: Sequence[str]) -> Any:
            if mention.id == "x:1":
                raise AttributeError("'int' object has no attribute 'lower'")
            return attribute(mention, tokens)

        monkeypatch.setattr(daemon.pipeline.attributor, "attribute", buggy)
        with capture_logs() as logs:
            run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            await until(lambda: daemon.pipeline.stats.mentions == 2)
            daemon.stopping.set()
            summary = await run
        assert daemon.pipeline.stats.failed == 1 and "1 failed in the pipeline" in str(summary)
        failed = [e for e in logs if e["event"] == "pipeline.mention_failed"]
        assert [e["mention"] for e in failed] == ["x:1"]


class TestSeenIdsWithCheckpoints:
    async def test_a_mention_refused_as_dated_ahead_moves_cursors_but_is_not_seen(
        self, tmp_path: Path, store: Store
    ) -> None:
        """Both ids are handed to the source's commit (its cursors move past the refused post:
        holding that id back had stopped them for good), and only the real post's id is
        remembered as seen, so a corrected resend counts after a restart."""
        feed = AheadFeed(0)
        daemon = live_daemon(tmp_path, store, feed, pipeline_clock=lambda: T0)
        run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        await until(lambda: daemon.pipeline.stats.mentions == 1)
        daemon.stopping.set()
        await run
        assert daemon.pipeline.stats.future == 1 and feed.committed == 2
        assert await store.recent_seen(10) == ["x:real"]

    async def test_while_checkpoints_fail_ids_and_cursors_still_reach_the_store(
        self, tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A full state directory fails every checkpoint: the seen ids and cursors still go to
        the store (in batches), only ids are held and not many, each failure is logged once
        (not per mention), and the metrics show the checkpoint's age and the failures."""

        def full(descriptor: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(checkpoint.os, "fsync", full)
        feed = LiveFeed(5_000)
        daemon = live_daemon(tmp_path, store, feed, checkpoint_seconds=0.05)
        with capture_logs() as logs:

            def failures() -> int:
                return sum(e["event"] == "checkpoint.failed" for e in logs)

            run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            await until(lambda: daemon.pipeline.stats.mentions == 5_000)
            failed = failures()
            await until(lambda: failures() > failed)  # one more since the last mention
            held = len(daemon._unsaved.ids)  # ids waiting in memory: at most a batch
            seen = await store.recent_seen(10_000)
            registry = CollectorRegistry()
            registry.register(DaemonCollector(daemon))
            metrics = generate_latest(registry).decode()
            daemon.stopping.set()
            await run
        assert seen and seen[-1] == "x:4999" and len(seen) >= 1_000  # a window, up to now
        assert held <= SEEN_BATCH
        assert feed.committed == 5_000
        assert daemon.checkpoints == 0 and failures() == daemon.checkpoint_failures
        assert not [e for e in logs if e["event"] == "store.seen_unsaved"]
        assert "crisiswatch_checkpoint_age_seconds" in metrics
        assert "crisiswatch_checkpoint_failures_total" in metrics

    async def test_ids_waiting_for_a_checkpoint_are_at_most_a_dedupe_window(
        self, tmp_path: Path, store: Store
    ) -> None:
        """With checkpoints far apart, the ids waiting for one are capped by the dedupe window
        (1,000 here): past it they go to the store on their own."""
        feed = LiveFeed(2_500)
        daemon = live_daemon(tmp_path, store, feed, checkpoint_seconds=300)
        run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        await until(lambda: daemon.pipeline.stats.mentions == 2_500)
        seen = await store.recent_seen(10_000)
        held, committed = list(daemon._unsaved.ids), feed.committed
        daemon.stopping.set()
        await run
        assert seen[-1] == "x:1999" and len(held) == 500 and committed == 2_000


class TestSchedule:
    async def test_a_checkpoint_due_while_the_loop_was_held_up_runs_once_it_is_free(
        self, tmp_path: Path, store: Store
    ) -> None:
        """A checkpoint that falls due while the event loop is held up for over a second (the
        first tick after a long downtime closes its buckets there) runs when the loop is free:
        APScheduler's default grace of a second skipped it until the next one."""
        daemon = live_daemon(tmp_path, store, LiveFeed(0), checkpoint_seconds=2, prune_seconds=0)
        scheduler = daemon._start_schedule()
        events: list[JobExecutionEvent] = []
        scheduler.add_listener(events.append, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)
        try:
            time.sleep(3.3)  # noqa: ASYNC251 -- the point: the checkpoint due at 2 s is 1.3 s late
            await until(lambda: bool(events), seconds=5)
        finally:
            scheduler.shutdown(wait=False)
        assert [event.code for event in events[:1]] == [EVENT_JOB_EXECUTED]
        assert daemon.checkpoints >= 1


class TestPruning:
    async def test_old_state_is_pruned_soon_after_the_start(
        self, tmp_path: Path, store: Store, make_page: PageFactory
    ) -> None:
        """The daemon's schedule prunes what `ops.retention` (30 days) no longer keeps: here a
        resolved incident paged over a month ago by the daemon's clock."""
        page = make_page(status=IncidentStatus.RESOLVED, resolved_at=T0)
        await store.save_incident(page.incident)
        await Dispatcher([Recorder()], store).dispatch(page)
        month_on = datetime.now(UTC) + timedelta(days=31)
        daemon = live_daemon(
            tmp_path, store, LiveFeed(0), prune_seconds=0.05, clock=lambda: month_on
        )
        with capture_all_logs() as logs:
            run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
            await until(lambda: any(e["event"] == "store.pruned" for e in logs))
            daemon.stopping.set()
            await run
        (pruned,) = [e for e in logs if e["event"] == "store.pruned"]
        assert pruned["rows"]["incidents"] == 1 and pruned["rows"]["outbox"] == 1
        assert await store.incidents() == [] and await store.outbox() == []


class TestDispatcher:
    async def test_page_is_sent_once_even_when_dispatched_twice(self, tmp_path: Path) -> None:
        """The notification log stops a second send of the same page, across store reopening."""
        stream = tmp_path / "m.jsonl"
        write_stream(stream)
        first = Recorder()
        await run_once(settings_for(tmp_path, stream), tmp_path / "s.db", first)
        store = await Store.open(tmp_path / "s.db")
        again = Recorder()
        await Dispatcher([again], store).dispatch(first.pages[0])
        await store.close()
        assert again.pages == []

    async def test_failed_send_is_not_recorded_and_is_retried(self, tmp_path: Path) -> None:
        """A page whose send failed is not logged as sent, so the next dispatch sends it."""
        stream = tmp_path / "m.jsonl"
        write_stream(stream)
        first = Recorder()
        await run_once(settings_for(tmp_path, stream), tmp_path / "s.db", first)
        store = await Store.open(tmp_path / "other.db")
        broken, working = Recorder(fail=True), Recorder()
        broken.name = working.name = "chat"
        dispatcher = Dispatcher([broken], store)
        await dispatcher.dispatch(first.pages[0])
        assert dispatcher.failed == 1
        await Dispatcher([working], store).dispatch(first.pages[0])
        await store.close()
        assert working.pages == [first.pages[0]]

    async def test_a_row_that_no_longer_reads_as_a_page_does_not_stop_the_sender(
        self, tmp_path: Path, make_page: PageFactory
    ) -> None:
        """An outbox row that cannot be decoded (a later version's, a damaged file) is given up
        with an error, and the pages after it still go."""
        store = await Store.open(tmp_path / "s.db")
        phone = Recorder()
        broken, fine = make_page(), make_page(id="kestrel@20240301T1300Z")
        await store.enqueue(broken, b'{"incident": "not a page"', ["recorder"])
        dispatcher = Dispatcher([phone], store)
        dispatcher.start()
        await dispatcher.dispatch(fine)
        await dispatcher.close(deadline=5)
        statuses = [(row["page_key"], row["status"]) for row in await store.outbox()]
        await store.close()
        assert phone.pages == [fine] and dispatcher.failed == 1
        assert statuses == [(page_key(broken), "failed"), (page_key(fine), "sent")]


class Waits:
    """The dispatcher's sleep: records each wait and passes at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0.001)


async def until(check: Callable[[], bool], seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)


def count_held_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the sender's reads of when the next held page comes due (one per wake-up)."""
    reads = [0]
    read = store.next_held

    async def counted(notifier: str, now: datetime | None = None) -> datetime | None:
        reads[0] += 1
        return await read(notifier, now)

    monkeypatch.setattr(store, "next_held", counted)
    return reads


class TestDispatcherAgainstAFailingStore:
    async def test_an_unreadable_outbox_is_read_again_after_a_wait(
        self, store: Store, make_page: PageFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One failed read (a locked store) does not leave a queued page waiting for the next
        page: the sender waits a back-off and reads again."""
        read = store.next_pending
        failures = [1]

        async def flaky(
            notifier: str, now: datetime | None = None, skip: Collection[int] = ()
        ) -> OutboxItem | None:
            if failures[0]:
                failures[0] -= 1
                raise StoreError("state store write failed: database is locked")
            return await read(notifier, now, skip)

        recorder, waits = Recorder(), Waits()
        dispatcher = Dispatcher([recorder], store, sleep=waits)
        dispatcher.start()
        await asyncio.sleep(0.01)  # the sender waits for pages
        monkeypatch.setattr(store, "next_pending", flaky)
        with capture_logs() as logs:
            await dispatcher.dispatch(make_page())
            await until(lambda: bool(recorder.pages))
        await dispatcher.close(1)
        assert len(recorder.pages) == 1 and await store.pending(recorder.name) == 0
        assert len(waits.waits) == 1 and waits.waits[0] >= 0.5
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["outbox.unreadable"]

    async def test_a_page_delivered_but_not_recorded_is_not_sent_again(
        self, store: Store, make_page: PageFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A full disk after pages are queued: each page goes once, in order, a page that could
        not be recorded does not hold up the next one (a new incident's first page had waited
        behind it for as long as the disk was full), recording is tried again while the disk
        is full, and both are recorded once it has room again."""
        record = store.outbox_sent
        full, tries = [True], [0]

        async def disk_full(seq: int, page: Page, notifier: str) -> None:
            tries[0] += 1
            if full[0]:
                cause = sqlite3.OperationalError("database or disk is full")
                raise StoreError(f"state store write failed: {cause}") from cause
            await record(seq, page, notifier)

        monkeypatch.setattr(store, "outbox_sent", disk_full)
        recorder, waits = Recorder(), Waits()
        dispatcher = Dispatcher([recorder], store, sleep=waits, rng=lambda: 0.0)
        dispatcher.start()
        with capture_all_logs() as logs:
            await dispatcher.dispatch(make_page(id="first@1"))
            await until(lambda: len(recorder.pages) == 1)
            await dispatcher.dispatch(make_page(id="second@1"))
            await until(lambda: len(recorder.pages) == 2)
            tried = tries[0]
            await until(lambda: tries[0] > tried)  # tried again, in vain, while idle
            full[0] = False
            await until(lambda: not dispatcher._unrecorded[recorder.name])
        await dispatcher.close(1)
        assert [p.incident.id for p in recorder.pages] == ["first@1", "second@1"]
        assert dispatcher.sent == 2 and dispatcher.failed == 0 and waits.waits == []
        assert [row["status"] for row in await store.outbox()] == ["sent", "sent"]
        assert sum(e["event"] == "page.unrecorded" for e in logs) == 2
        assert sum(e["event"] == "page.recorded" for e in logs) == 2

    async def test_a_page_given_up_on_a_full_disk_is_sent_once(
        self, store: Store, make_page: PageFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A page the service refuses for good while the store cannot mark it given up: it had
        stayed pending, so it was taken, sent and given up again at once (hundreds of times a
        second, and `flush` never returned). It is set aside as done with, and marked failed
        once the disk has room."""
        mark = store.outbox_attempt_failed
        full = [True]

        async def disk_full(seq: int, error: str, *, final: bool) -> None:
            if full[0]:
                raise StoreError("state store write failed: database or disk is full")
            await mark(seq, error, final=final)

        class Refusing(Recorder):
            async def send(self, page: Page) -> None:
                await super().send(page)
                raise PermanentError("channel_not_found")

        monkeypatch.setattr(store, "outbox_attempt_failed", disk_full)
        refusing = Refusing()
        dispatcher = Dispatcher([refusing], store, rng=lambda: 0.0)
        await asyncio.wait_for(dispatcher.dispatch(make_page()), 10)  # flush() returns
        assert len(refusing.pages) == 1 and dispatcher.failed == 1
        full[0] = False
        await asyncio.wait_for(dispatcher.flush(), 10)
        assert len(refusing.pages) == 1 and dispatcher.failed == 1
        assert [row["status"] for row in await store.outbox()] == ["failed"]

    async def test_a_page_that_breaks_is_given_up_on_a_full_disk_too(
        self, store: Store, make_page: PageFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A page a bug of ours breaks is given up after BROKEN_TRIES, also while the store
        cannot count its tries (it had been tried for as long as the disk was full, with every
        later page waiting behind it)."""

        async def disk_full(seq: int, error: str, *, final: bool) -> None:
            raise StoreError("state store write failed: database or disk is full")

        class Breaking(Recorder):
            async def send(self, page: Page) -> None:
                if page.incident.id == "bad@1":
                    raise TypeError("a bug of ours")
                await super().send(page)

        monkeypatch.setattr(store, "outbox_attempt_failed", disk_full)
        breaking = Breaking()
        dispatcher = Dispatcher([breaking], store)
        await dispatcher.dispatch(make_page(id="bad@1"))
        await dispatcher.dispatch(make_page(id="good@1"))
        for _ in range(BROKEN_TRIES):
            await dispatcher.flush()
        assert [p.incident.id for p in breaking.pages] == ["good@1"]

    async def test_a_full_disk_neither_spins_nor_resends(
        self, store: Store, make_page: PageFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Pages held by quiet hours come due while the disk is full, more of them than the
        dispatcher keeps as delivered-but-unrecorded: each is sent once (forgetting one had
        sent it again, and the next, for ever), the sender waits rather than spinning on a
        due page it delivered (1,000 reads a second, until its back-off overflowed and the
        sender died in silence), and the rest go once the disk has room."""
        monkeypatch.setattr(dispatch, "UNRECORDED_KEPT", 2)
        record = store.outbox_sent
        full = [True]

        async def disk_full(seq: int, page: Page, notifier: str) -> None:
            if full[0]:
                raise StoreError("state store write failed: database or disk is full")
            await record(seq, page, notifier)

        reads = count_held_reads(store, monkeypatch)
        monkeypatch.setattr(store, "outbox_sent", disk_full)
        recorder = Recorder()
        due = datetime.now(UTC) - timedelta(minutes=1)
        for n in range(3):
            page = make_page(id=f"held{n}@1")
            await store.enqueue(page, dump_page(page), [recorder.name], {recorder.name: due})
        dispatcher = Dispatcher([recorder], store, rng=lambda: 0.0)
        dispatcher.start()
        await until(lambda: len(recorder.pages) == 2)
        await asyncio.sleep(0.3)
        assert [p.incident.id for p in recorder.pages] == ["held0@1", "held1@1"]
        assert reads[0] < 10
        full[0] = False
        await until(lambda: len(recorder.pages) == 3, seconds=5.0)
        await dispatcher.close(5)
        assert [p.incident.id for p in recorder.pages] == ["held0@1", "held1@1", "held2@1"]
        assert [row["status"] for row in await store.outbox()] == ["sent"] * 3


def started(store: Store, *notifiers: Recorder, waits: Waits | None = None) -> Dispatcher:
    """A dispatcher with its senders running, waiting no time between tries (`waits` has the
    waits it was told)."""
    dispatcher = Dispatcher(list(notifiers), store, sleep=waits or Waits(), rng=lambda: 0.0)
    dispatcher.start()
    return dispatcher


async def dispatch_pages(dispatcher: Dispatcher, make_page: PageFactory, count: int) -> None:
    """Dispatch a page of each of the incidents p0@1, p1@1, …"""
    for n in range(count):
        await dispatcher.dispatch(make_page(id=f"p{n}@1"))


async def sent_once_all_are(dispatcher: Dispatcher, notifier: Recorder, count: int) -> list[str]:
    """Once `notifier` has `count` pages, stop the dispatcher; its pages' incidents."""
    await until(lambda: len(notifier.pages) == count)
    await dispatcher.close(1)
    return [p.incident.id for p in notifier.pages]


class TestPagesTheOutboxCannotTake:
    """A full disk when a page is queued: the page waits in memory and goes in order, tried
    again as an outbox page is, without holding up the pipeline (it had been sent at once,
    once: a Slack rate limit lost it, and a crisis's hundred pages held the mentions up for
    as long as Slack took them)."""

    async def test_each_goes_once_in_order_after_a_failed_try(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        class RateLimited(Recorder):
            tries = 0

            async def send(self, page: Page) -> None:
                self.tries += 1
                if self.tries == 1:
                    raise RetryLater("slack rate limit", 1.5)
                await super().send(page)

        limited, waits = RateLimited(), Waits()
        dispatcher = started(store, limited, waits=waits)
        with capture_logs() as logs:
            await dispatch_pages(dispatcher, make_page, 3)
            assert await sent_once_all_are(dispatcher, limited, 3) == ["p0@1", "p1@1", "p2@1"]
        assert dispatcher.sent == 3 and dispatcher.failed == 0
        assert waits.waits == [1.5]  # the wait Slack asked for, as for an outbox page
        # logged once: the later pages were not offered to the outbox, to go after the first
        assert sum(e["event"] == "page.unqueued" for e in logs) == 1

    async def test_queueing_does_not_wait_for_the_send(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        class Slow(Recorder):
            def __init__(self) -> None:
                super().__init__()
                self.go = asyncio.Event()

            async def send(self, page: Page) -> None:
                await self.go.wait()
                await super().send(page)

        slow = Slow()
        dispatcher = started(store, slow)
        async with asyncio.timeout(1):
            await dispatch_pages(dispatcher, make_page, 2)
        assert slow.pages == []
        slow.go.set()
        assert await sent_once_all_are(dispatcher, slow, 2) == ["p0@1", "p1@1"]

    async def test_once_the_disk_has_room_they_go_to_the_outbox_in_order(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """With Slack down too: kept only in memory until then (and, past `SPILLED_KEPT`, lost
        for every notifier, a working one too), they are put in the outbox before the next
        page, and each notifier sends each once, in order."""
        up, down = Recorder(), Recorder(fail=True)
        up.name, down.name = "console", "slack"
        dispatcher = started(store, up, down)
        await dispatcher.dispatch(make_page(id="first@1"))
        full_disk[0] = False
        await dispatcher.dispatch(make_page(id="second@1"))
        assert dispatcher.in_memory == 0
        await until(lambda: len(up.pages) == 2)
        down.fail = False
        await until(lambda: len(down.pages) == 2)
        await dispatcher.close(1)
        for notifier in (up, down):
            assert [p.incident.id for p in notifier.pages] == ["first@1", "second@1"]
        rows = await store.outbox()
        assert [(r["incident_id"], r["status"]) for r in rows if r["notifier"] == "slack"] == [
            ("first@1", "sent"),
            ("second@1", "sent"),
        ]

    async def test_a_held_one_coming_due_is_waited_for_not_spun_on(
        self,
        store: Store,
        make_page: PageFactory,
        full_disk: list[bool],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A page held in memory that has come due while the sender cannot take any (as many
        delivered pages wait to be recorded as it keeps) does not make it spin."""
        monkeypatch.setattr(dispatch, "UNRECORDED_KEPT", 0)
        reads = count_held_reads(store, monkeypatch)

        class Phone(Recorder):
            pages_people = True  # quiet hours hold its pages

        warning = make_page(PageKind.OPENED, severity=Severity.WARNING)
        hours = {"start": "22:00", "end": "07:00", "timezone": "UTC", "min_severity": "critical"}
        routes = {warning.incident.route: Route.model_validate({"quiet_hours": hours})}
        clock = [datetime(2026, 3, 3, 2, 30, tzinfo=UTC)]
        phone = Phone()
        dispatcher = Dispatcher(
            [phone], store, live=LiveSettings(Settings(brands=[], routes=routes)),
            clock=lambda: clock[0],
        )  # fmt: skip
        dispatcher.start()
        await dispatcher.dispatch(warning)
        assert phone.pages == []
        clock[0] = datetime(2026, 3, 3, 7, 1, tzinfo=UTC)  # due
        await asyncio.sleep(0.3)
        await dispatcher.close(0.1)
        assert reads[0] < 10  # a read per wake-up (it had been thousands)

    async def test_a_resolution_goes_through_a_silence_that_their_escalation_pierced(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """The incident was announced from memory, so its people hear it end."""
        worse = make_page(PageKind.ESCALATED)
        full_disk[0] = False
        at = worse.at
        silence = Silence("s-1", at - timedelta(hours=1), at + timedelta(days=1), "me", "why",
                          brand=worse.incident.brand)  # fmt: skip
        await store.add_silence(silence)
        full_disk[0] = True
        phone = Recorder()
        dispatcher = Dispatcher([phone], store, clock=lambda: worse.at)
        await dispatcher.dispatch(worse)
        await dispatcher.dispatch(make_page(PageKind.RESOLVED, worse.at + timedelta(minutes=5)))
        assert [p.kind for p in phone.pages] == [PageKind.ESCALATED, PageKind.RESOLVED]

    async def test_pages_still_in_memory_at_a_stop_are_queued_for_the_next_start(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        dispatcher = started(store, Recorder(fail=True))
        await dispatch_pages(dispatcher, make_page, 2)
        assert dispatcher.in_memory == 2
        full_disk[0] = False
        await dispatcher.close(0.2)
        assert dispatcher.in_memory == 0
        rows = await store.outbox()
        assert [(row["incident_id"], row["status"]) for row in rows] == [
            ("p0@1", "pending"),
            ("p1@1", "pending"),
        ]

    async def test_those_a_stop_cannot_queue_either_are_logged_as_lost(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        dispatcher = started(store, Recorder(fail=True))
        await dispatch_pages(dispatcher, make_page, 2)
        with capture_logs() as logs:
            await dispatcher.close(0.2)
        lost = [e for e in logs if e["event"] == "pages.lost"]
        assert len(lost) == 1 and lost[0]["pages"] == 2 and lost[0]["log_level"] == "error"

    async def test_memory_is_bounded(
        self,
        store: Store,
        make_page: PageFactory,
        full_disk: list[bool],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(dispatch, "SPILLED_KEPT", 2)
        down = Recorder(fail=True)
        dispatcher = started(store, down)
        with capture_logs() as logs:
            await dispatch_pages(dispatcher, make_page, 3)
        assert dispatcher.failed == 1
        assert [e["page"] for e in logs if e["event"] == "page.lost"] == [
            page_key(make_page(id="p2@1"))
        ]
        down.fail = False
        assert await sent_once_all_are(dispatcher, down, 2) == ["p0@1", "p1@1"]

    async def test_one_being_sent_is_not_overtaken_by_the_pages_after_it(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """The disk has room again while a page from memory is being sent, and that send
        fails: the page dispatched meanwhile waits behind it (from the outbox it had gone
        first, and an update sent before its incident's opening made the opening stale)."""

        class FailsOnce(Recorder):
            def __init__(self) -> None:
                super().__init__()
                self.go, self.tries = asyncio.Event(), 0

            async def send(self, page: Page) -> None:
                self.tries += 1
                if self.tries == 1:
                    await self.go.wait()
                    raise ConnectionError("service down")
                await super().send(page)

        flaky = FailsOnce()
        dispatcher = started(store, flaky)
        opened = make_page(PageKind.OPENED)
        await dispatcher.dispatch(opened)
        await until(lambda: flaky.tries == 1)
        full_disk[0] = False
        await dispatcher.dispatch(make_page(PageKind.UPDATED, opened.at + timedelta(minutes=5)))
        flaky.go.set()
        await until(lambda: len(flaky.pages) == 2)
        await dispatcher.close(1)
        assert [p.kind for p in flaky.pages] == [PageKind.OPENED, PageKind.UPDATED]

    async def test_an_incident_the_store_could_not_save_is_saved_once_it_can(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """Resolved while the disk was full, it does not stay firing in the store (to be
        escalated, and taken for forgotten at a restart)."""
        opened = make_page(PageKind.OPENED)
        full_disk[0] = False
        dispatcher = Dispatcher([Recorder()], store)
        await dispatcher.dispatch(opened)
        full_disk[0] = True
        end = opened.at + timedelta(hours=1)
        resolved = make_page(PageKind.RESOLVED, end, status=IncidentStatus.RESOLVED,
                             resolved_at=end)  # fmt: skip
        await dispatcher.dispatch(resolved)
        full_disk[0] = False
        await dispatcher.dispatch(make_page(id="other@1"))
        statuses = {row["id"]: row["status"] for row in await store.incidents()}
        assert statuses[opened.incident.id] == "resolved"

    async def test_without_senders_flush_sends_them(
        self, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """Tools dispatch without senders: a page the outbox cannot take goes at once, and
        one that failed goes at the next dispatch."""
        flaky = Recorder(fail=True)
        dispatcher = Dispatcher([flaky], store)
        await dispatcher.dispatch(make_page(id="first@1"))
        assert flaky.pages == [] and dispatcher.failed == 1
        flaky.fail = False
        await dispatcher.dispatch(make_page(id="second@1"))
        assert [p.incident.id for p in flaky.pages] == ["first@1", "second@1"]


class TestSignals:
    def test_sigterm_stops_a_configured_daemon_cleanly(self, tmp_path: Path) -> None:
        """A daemon that runs until stopped exits 0 on SIGTERM after draining."""
        stream = tmp_path / "m.jsonl"
        write_stream(stream, hours=2)
        settings_for(tmp_path, stream)
        process = start(tmp_path / "config.yaml")
        try:
            wait_for(process, b"source.ended")  # the replay is done; the daemon idles
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
        finally:
            reap(process)
        assert process.returncode == 0, err.decode()
        assert b"stopped:" in out
        assert (tmp_path / "state" / "crisiswatch.sqlite3").exists()


class BrokenScorer:
    def negative_one(self, text: str) -> float:
        raise RuntimeError("model exploded")


class TestPipelineFailure:
    async def test_a_crashing_pipeline_stops_the_daemon_instead_of_hanging(
        self, tmp_path: Path
    ) -> None:
        """A pipeline that fails on every mention (a bug, not one bad mention) ends the run
        with the error (systemd restarts it)."""
        stream = tmp_path / "m.jsonl"
        write_stream(stream, hours=1)
        settings = settings_for(tmp_path, stream)
        store = await Store.open(tmp_path / "s.db")
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), BrokenScorer())
        daemon = Daemon(pipeline, [ReplaySource(stream)], [Recorder()], store, queue_size=10)
        try:
            with pytest.raises(RuntimeError, match="model exploded"):
                await asyncio.wait_for(daemon.run(exit_when_sources_end=True), timeout=20)
        finally:
            await store.close()

    async def test_a_pipeline_stuck_on_one_item_is_not_alive(self, tmp_path: Path) -> None:
        """A pipeline that waits forever (here on a store that never answers) while mentions
        queue up is reported not alive, so /healthz fails and the watchdog stops being fed."""
        stream = tmp_path / "m.jsonl"
        write_stream(stream)

        class HangingStore(Store):
            async def save_incident(self, incident: Incident) -> None:
                await asyncio.Event().wait()

        settings = settings_for(tmp_path, stream)
        store = await HangingStore.open(tmp_path / "s.db")
        pipeline = Pipeline(settings, load_rules(settings.rules, settings), AngryScorer())
        daemon = Daemon(
            pipeline, [ReplaySource(stream)], [Recorder()], store, queue_size=10, wedged_after=0.2
        )
        run = asyncio.create_task(daemon.run(exit_when_sources_end=True))
        try:
            for _ in range(200):
                await asyncio.sleep(0.05)
                if daemon.ready and not daemon.pipeline_alive():
                    break
            assert not daemon.pipeline_alive() and daemon.queue.full()
            assert not daemon._alive()  # the watchdog is not fed
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            await store.close()
