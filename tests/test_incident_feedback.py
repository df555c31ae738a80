"""Slack's Resolve and False alarm reach the pipeline: the incident closes, the baseline learns."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Recorder

from crisiswatch.config import Settings
from crisiswatch.daemon import Daemon
from crisiswatch.domain import Mention, Page, PageKind
from crisiswatch.notify.feedback import Click, ControlLink, Feedback
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.schema import Rule
from crisiswatch.store import Store

T0 = datetime(2026, 3, 2, tzinfo=UTC)


class Calm:
    def negative_one(self, text: str) -> float:
        return 0.1


def pipeline(keep_firing_for: str = "6h") -> Pipeline:
    settings = Settings.model_validate({"brands": [{"id": "acme", "keywords": ["acme"]}]})
    rule = Rule.model_validate(
        {"id": "spike", "when": {"volume_spike": "high"}, "keep_firing_for": keep_firing_for}
    )
    return Pipeline(settings, [rule], Calm())


def feed(pipe: Pipeline, minutes: range, per_minute: int, tag: str) -> list[Page]:
    pages = []
    for minute in minutes:
        for n in range(per_minute):
            at = T0 + timedelta(minutes=minute, seconds=n)
            pages += pipe.feed(Mention(f"{tag}{minute}-{n}", "x", at, "acme"))
    return pages


def opened(pages: list[Page]) -> Page:
    return next(p for p in pages if p.kind is PageKind.OPENED)


class TestPipeline:
    def test_resolve_closes_the_incident_with_who_did_it(self) -> None:
        """A resolved incident pages its resolution at once and is no longer open."""
        pipe = pipeline()
        page = opened(feed(pipe, range(300), 2, "calm") + feed(pipe, range(300, 320), 20, "s"))
        (resolved,) = pipe.resolve(page.incident.id, "U1")
        assert resolved.kind is PageKind.RESOLVED and resolved.changes == ("resolved by U1",)
        assert pipe.incidents.open == {}
        assert pipe.resolve(page.incident.id, "U1") == []  # twice is harmless

    def test_false_alarm_raises_the_expected_volume(self) -> None:
        """After a False alarm the series expects more: the same level scores lower."""
        pipe = pipeline()
        page = opened(feed(pipe, range(300), 2, "calm") + feed(pipe, range(300, 320), 20, "s"))
        detector = pipe.detector._series[page.incident.latest.series].volume
        at = T0 + timedelta(minutes=330)
        before = detector.score_one(100, at)
        assert pipe.false_alarm(page.incident.id)
        after = detector.score_one(100, at)
        assert after.expected > before.expected and after.score <= before.score
        assert not pipe.false_alarm("brand=acme@19990101T0000Z")

    def test_a_false_alarm_learns_each_bucket_once_and_a_newer_one_too(self) -> None:
        """Said again about the same latest bucket, a False alarm teaches nothing more (each
        time had counted as more evidence, and twenty made the series blind); said once the
        incident has a newer, bigger bucket, it teaches that one."""
        pipe = pipeline()
        page = opened(feed(pipe, range(300), 2, "calm") + feed(pipe, range(300, 320), 20, "s"))
        detector = pipe.detector._series[page.incident.latest.series].volume
        at = T0 + timedelta(minutes=360)
        assert pipe.false_alarm(page.incident.id)
        once = detector.score_one(300, at).expected
        assert not pipe.false_alarm(page.incident.id)
        assert detector.score_one(300, at).expected == once
        feed(pipe, range(320, 335), 60, "bigger")  # the incident's newer, bigger buckets
        latest = pipe.incidents.find(page.incident.id)
        assert latest is not None and latest.latest.bucket.count > page.incident.latest.bucket.count
        assert pipe.false_alarm(page.incident.id)
        assert detector.score_one(300, at).expected > once

    def test_a_false_alarm_on_an_older_incident_is_learned_after_a_newer_one(self) -> None:
        """A False alarm on a resolved incident's message, pressed after one on a later
        incident of the same series, still teaches that incident's bucket, at its time of day
        (learning buckets once must not mean only ever newer ones)."""
        pipe = pipeline(keep_firing_for="10m")
        first = opened(feed(pipe, range(300), 2, "calm") + feed(pipe, range(300, 315), 20, "a"))
        feed(pipe, range(315, 600), 2, "calm2")
        second = opened(feed(pipe, range(600, 615), 25, "b"))
        assert second.incident.id != first.incident.id
        detector = pipe.detector._series[first.incident.latest.series].volume
        slot = first.incident.latest.bucket.start
        assert pipe.false_alarm(second.incident.id)
        before = detector.score_one(100, slot).expected
        assert pipe.false_alarm(first.incident.id)
        assert detector.score_one(100, slot).expected > before
        assert not pipe.false_alarm(first.incident.id)


class TestClicks:
    async def test_clicks_reach_the_daemon_through_the_link(self, tmp_path: Path) -> None:
        """Resolve clicked in Slack resolves the incident in the running daemon, in order."""
        pipe = pipeline()
        page = opened(feed(pipe, range(300), 2, "calm") + feed(pipe, range(300, 320), 20, "s"))
        store = await Store.open(tmp_path / "s.db")
        recorder = Recorder()
        daemon = Daemon(pipe, [], [recorder], store, queue_size=10)
        link = ControlLink()
        feedback = Feedback(store, None, None)
        feedback.control = link
        await feedback.handle(Click("resolve", page.incident.id, "U1", datetime.now(UTC)))
        link.target = daemon
        run = asyncio.create_task(daemon.run(exit_when_sources_end=False))
        await feedback.handle(Click("resolve", page.incident.id, "U1", datetime.now(UTC)))
        for _ in range(200):
            if recorder.pages:
                break
            await asyncio.sleep(0.01)
        daemon.stopping.set()
        await run
        await store.close()
        (resolved,) = recorder.pages
        assert resolved.kind is PageKind.RESOLVED and "resolved by U1" in resolved.changes
        assert [c[1] for c in await _clicks(tmp_path, page.incident.id)] == ["resolve", "resolve"]


async def _clicks(tmp_path: Path, incident_id: str) -> list[tuple[str, str, str, str | None]]:
    store = await Store.open(tmp_path / "s.db")
    try:
        return await store.clicks(incident_id)
    finally:
        await store.close()
