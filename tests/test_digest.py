"""The daily digest: yesterday's numbers per brand, posted by an APScheduler cron job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import mark_sent
from fake_slack import TOKEN, FakeSlack
from local_server import running
from slack_sdk.web.async_client import AsyncWebClient

from crisiswatch.config import Brand, LiveSettings, QuietHours, Route, Settings
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import Bucket, Incident, Page, PageKind, SeriesKey, Signal
from crisiswatch.notify import digest as digests
from crisiswatch.notify.digest import DailyDigest, build
from crisiswatch.store import Store

IncidentFactory = Callable[..., Incident]
BERLIN = ZoneInfo("Europe/Berlin")
DAY = date(2026, 3, 2)  # in Berlin: 2026-03-01 23:00 to 2026-03-02 23:00 UTC


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


fake = running(FakeSlack)


def signal(start: datetime, count: int, negative: int) -> Signal:
    bucket = Bucket(
        SeriesKey("kestrel"), start, start + timedelta(minutes=5), count, count, negative,
        count, 0, (), (), (),
    )  # fmt: skip
    return Signal(bucket, 0.1, float(count), float(count) * 2, 0.1, 0.2, count)


def history() -> SeriesHistory:
    """Kestrel: 10 mentions (2 negative) every 5 min through the day, 1000 the bucket before."""
    kept = SeriesHistory(300)
    kept.record(signal(utc(1, 22, 55), 1000, 1000))
    moment = utc(1, 23)
    while moment < utc(2, 23):
        kept.record(signal(moment, 10, 2))
        moment += timedelta(minutes=5)
    return kept


async def day_of_incidents(store: Store, make_incident: IncidentFactory) -> None:
    """Two incidents opened on DAY (one acknowledged after 7 min, one a false alarm), one the
    day before and one of another brand."""
    first = make_incident(id="kestrel@A", started_at=utc(2, 9), rules=("angry-surge", "turn"))
    second = make_incident(id="kestrel@B", started_at=utc(2, 15), rules=("turn",))
    before = make_incident(id="kestrel@Z", started_at=utc(1, 22, 50), rules=("turn",))
    other = make_incident(id="acme@A", brand="acme", started_at=utc(2, 10), rules=("turn",))
    for incident in (first, second, before, other):
        await store.save_incident(incident)
    await mark_sent(store, Page(first, PageKind.OPENED, utc(2, 9, 10)), "slack")
    await mark_sent(store, Page(first, PageKind.ESCALATED, utc(2, 9, 20)), "slack")
    await mark_sent(store, Page(first, PageKind.ESCALATED, utc(2, 9, 20)), "console")
    await mark_sent(store, Page(second, PageKind.OPENED, utc(2, 15, 5)), "slack")
    await store.record_click("kestrel@A", "acknowledge", "U1", utc(2, 9, 17), None)
    await store.record_click("kestrel@A", "acknowledge", "U2", utc(2, 9, 30), None)
    await store.record_click("kestrel@B", "false_alarm", "U1", utc(2, 15, 20), None)


def settings() -> Settings:
    quiet = QuietHours(start="22:00", end="07:00", timezone="Europe/Berlin")
    return Settings(
        brands=[
            Brand(id="kestrel", name="Kestrel Bank", keywords=["kestrel"]),
            Brand(id="acme", keywords=["acme"]),
        ],
        routes={"default": Route(channel="#comms", quiet_hours=quiet), "ops": Route()},
    )


class TestBuild:
    async def test_a_day_with_two_incidents_and_feedback(
        self, store: Store, make_incident: IncidentFactory
    ) -> None:
        """Volume and negative share of the local day, each incident's response time and
        pages, and each rule's pages that day with its precision so far."""
        await day_of_incidents(store, make_incident)
        [day] = await build(store, history(), {"kestrel": "Kestrel Bank"}, DAY, BERLIN)
        assert (day.volume, day.negative, day.negative_share, day.hours_known) == (
            2880, 576, 0.2, 24
        )  # fmt: skip
        assert [(i.id, i.response, i.pages, i.false_alarm) for i in day.incidents] == [
            ("kestrel@A", timedelta(minutes=7), 2, False),
            ("kestrel@B", None, 1, True),
        ]
        assert [(r.rule, r.pages, r.incidents, r.false_alarms) for r in day.rules] == [
            ("turn", 3, 4, 1),
            ("angry-surge", 2, 1, 0),
        ]
        assert round(day.rules[0].precision, 2) == 0.75

    async def test_the_message_reads_the_numbers(
        self, store: Store, make_incident: IncidentFactory
    ) -> None:
        """The blocks carry the numbers, in the route's time zone; post text is escaped."""
        await day_of_incidents(store, make_incident)
        [day] = await build(store, history(), {"kestrel": "Kestrel Bank"}, DAY, BERLIN)
        body = str(digests.blocks(day))
        for part in (
            "2,880",
            "20% (576 posts)",
            "1 of 2 · median 7 min",
            "opened 10:10 · acknowledged after 7 min · 2 pages",
            "*not acknowledged* · 1 page · marked a false alarm",
            "turn — in incidents of 3 pages · precision 75% (1 false alarm in 4 incidents so far)",
            "Europe/Berlin",
        ):
            assert part in body, part
        assert digests.text(day).startswith("Daily digest for Kestrel Bank, Mon 02 Mar: 2,880")

    async def test_an_empty_day(self, store: Store) -> None:
        """No history and no incident: nothing known, said plainly."""
        [day] = await build(store, SeriesHistory(300), {"kestrel": "Kestrel Bank"}, DAY, BERLIN)
        assert (day.volume, day.negative_share, day.hours_known, day.rules) == (0, None, 0, ())
        assert "No incident opened." in str(digests.blocks(day))

    def test_a_busy_day_lists_whole_incidents_and_says_how_many_more(self) -> None:
        """More incidents than a section holds: whole lines up to the limit, then how many
        were left out, so none goes missing without a word."""
        summary = "kestrel: 120 mentions in 5m (20 expected), 60% negative on cards, app " * 3
        incidents = tuple(
            digests.IncidentDay(
                f"kestrel@{hour}", "warning", "spark", summary, utc(2, hour), None, 3, False, ()
            )
            for hour in range(24)
        )
        day = digests.Digest("kestrel", "Kestrel Bank", DAY, "UTC", (), incidents, ())
        listing = digests.blocks(day)[2]["text"]["text"]
        *lines, more = listing.split("\n")[1:]
        shown = len(lines) // 2  # two lines per incident
        assert len(listing) <= digests.SECTION_CHARS
        assert 0 < shown < 24 and more == f"…and {24 - shown} more"
        assert lines[-1] == f"   {summary.strip()}"  # the last one shown is whole


class TestSeveralBrands:
    async def test_one_read_of_the_store_per_run_each_brand_its_own_day(
        self,
        fake: FakeSlack,
        store: Store,
        make_incident: IncidentFactory,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Three brands: the day's incidents and the rules' record are read once for the run,
        and each brand's message has only its own incidents, with the rules' record shared."""
        await day_of_incidents(store, make_incident)
        reads: list[str] = []
        for name in ("opened_between", "rule_feedback"):
            method = getattr(store, name)

            async def counted(*args: object, _method: Any = method, _name: str = name) -> Any:
                reads.append(_name)
                return await _method(*args)

            monkeypatch.setattr(store, name, counted)
        three = settings().model_copy(
            update={"brands": [*settings().brands, Brand(id="zeta", keywords=["zeta"])]}
        )
        client = AsyncWebClient(token=TOKEN, base_url=fake.base_url)
        digest = DailyDigest(LiveSettings(three), store, history(), client)
        assert await digest.post(datetime(2026, 3, 3, 8, tzinfo=BERLIN)) == 3
        assert sorted(reads) == ["opened_between", "rule_feedback"]
        texts = [c.args["text"] for c in fake.ok_calls("chat.postMessage")]
        assert texts == [
            "Daily digest for Kestrel Bank, Mon 02 Mar: 2,880 mentions, 20% negative, "
            "2 incidents opened",
            "Daily digest for acme, Mon 02 Mar: 0 mentions, - negative, 1 incident opened",
            "Daily digest for zeta, Mon 02 Mar: 0 mentions, - negative, 0 incidents opened",
        ]
        bodies = [str(c.args["blocks"]) for c in fake.ok_calls("chat.postMessage")]
        assert "turn — in incidents of 0 pages · precision 75%" in bodies[1]
        assert "Rules that paged" not in bodies[2]


class TestDailyDigest:
    async def test_posts_one_message_per_brand_with_a_chart(
        self, fake: FakeSlack, store: Store, make_incident: IncidentFactory
    ) -> None:
        """One message per brand in the default route's channel; a chart in the thread of the
        brand whose day is known."""
        await day_of_incidents(store, make_incident)
        client = AsyncWebClient(token=TOKEN, base_url=fake.base_url)
        digest = DailyDigest(LiveSettings(settings()), store, history(), client)
        assert await digest.post(datetime(2026, 3, 3, 8, tzinfo=BERLIN)) == 2
        posts = fake.ok_calls("chat.postMessage")
        assert [(c.args["channel"], c.args["blocks"][0]["text"]["text"]) for c in posts] == [
            ("#comms", "📊 Daily digest — Kestrel Bank · Mon 02 Mar"),
            ("#comms", "📊 Daily digest — acme · Mon 02 Mar"),
        ]
        [upload] = [c for c in fake.calls if c.method == "upload"]
        assert upload.args["bytes"].startswith(b"\x89PNG")
        [done] = fake.ok_calls("files.completeUploadExternal")
        assert done.args["thread_ts"] == "1700000001.000100"  # the first message's thread

    async def test_a_slack_error_skips_that_brand_only(self, fake: FakeSlack, store: Store) -> None:
        """A failed post is logged; the other brands still get theirs."""
        fake.fail("chat.postMessage", error="channel_not_found")
        client = AsyncWebClient(token=TOKEN, base_url=fake.base_url)
        digest = DailyDigest(LiveSettings(settings()), store, SeriesHistory(300), client)
        assert await digest.post(datetime(2026, 3, 3, 8, tzinfo=BERLIN)) == 1

    async def test_a_passing_failure_is_tried_again_and_the_digest_goes(
        self, fake: FakeSlack, store: Store
    ) -> None:
        """A 500 from Slack is tried again within a minute (back-off with jitter: the digest of
        a day is not lost to one bad answer); an error that needs a person is not tried again."""
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        fake.fail("chat.postMessage", status=500, error="internal_error")
        client = AsyncWebClient(token=TOKEN, base_url=fake.base_url)
        digest = DailyDigest(LiveSettings(settings()), store, SeriesHistory(300), client, sleep)
        assert await digest.post(datetime(2026, 3, 3, 8, tzinfo=BERLIN)) == 2
        assert len(waits) == 1 and 0 < waits[0] <= 60.0
        fake.fail("chat.postMessage", error="channel_not_found")
        assert await digest.post(datetime(2026, 3, 3, 8, tzinfo=BERLIN)) == 1
        assert len(waits) == 1

    async def test_scheduled_at_eight_in_the_route_zone_and_stops_cleanly(
        self, fake: FakeSlack, store: Store
    ) -> None:
        """The cron job is due at the next 08:00 Berlin time; when due it posts; stop shuts the
        scheduler down."""
        client = AsyncWebClient(token=TOKEN, base_url=fake.base_url)
        digest = DailyDigest(LiveSettings(settings()), store, SeriesHistory(300), client)
        digest.start()
        try:
            assert digest.scheduler.running
            due = digest.next_run()
            assert due is not None and due.tzinfo is not None
            now = datetime.now(BERLIN)
            assert (due.astimezone(BERLIN).hour, due.astimezone(BERLIN).minute) == (8, 0)
            assert timedelta(0) < due - now <= timedelta(days=1)
            digest.scheduler.modify_job("daily-digest", next_run_time=now)
            for _ in range(300):
                if len(fake.ok_calls("chat.postMessage")) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(fake.ok_calls("chat.postMessage")) == 2
        finally:
            await digest.stop()
        assert not digest.scheduler.running
