"""The daily digest: yesterday per brand, posted each morning in the default route's channel.

One message per brand: yesterday's mentions and negative share (from the series history, with an
hourly chart in its thread when matplotlib is installed), the incidents opened that day with how
long until someone pressed Acknowledge, and the pages and precision of their rules (the share of
a rule's incidents nobody marked a false alarm, over the incidents the store keeps: a resolved
one goes, with its clicks, once `ops.retention` old). A list longer than a section holds shows
whole lines, then "…and N more". "Yesterday" is the calendar day in the default route's
quiet-hours time zone (UTC without quiet hours); an APScheduler cron job posts it at `digest_at`
(08:00) in that zone. A post Slack fails in passing is tried again twice, within a few minutes;
one whose error needs a person (an unknown channel, a refused token) is not. A timeout after
Slack took the post can then post it twice: a digest twice beats none.
"""

from __future__ import annotations

import asyncio
import io
import math
import statistics
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from crisiswatch.config import LiveSettings, Route, Settings
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import SeriesKey
from crisiswatch.notify.slack import PERMANENT, UNAUTHORIZED, upload_chart
from crisiswatch.notify.slack_blocks import (
    FIELD_CHARS,
    HEADER_CHARS,
    SECTION_CHARS,
    SEVERITY_ICON,
    Block,
    elapsed,
    fit,
    section,
    untrusted,
)
from crisiswatch.retry import Backoff, retry_after
from crisiswatch.store import Store

log = structlog.get_logger(__name__)
JOB = "daily-digest"
DIGEST_TRIES = 3  # posts of one brand's digest before that day's is given up
DIGEST_RETRY_BASE = 60.0  # seconds before the second try at most (with jitter), doubling
NEEDS_A_PERSON = PERMANENT | UNAUTHORIZED  # Slack errors that trying again cannot cure
HOUR = timedelta(hours=1)
_SEVERITY = {severity.label: icon for severity, icon in SEVERITY_ICON.items()}  # as stored


@dataclass(frozen=True, slots=True)
class IncidentDay:
    """An incident opened on the digest's day, and what people did about it."""

    id: str
    severity: str
    stage: str
    summary: str
    opened_at: datetime  # its opening page (the incident's start if it never paged)
    acknowledged_at: datetime | None  # the first Acknowledge click
    pages: int  # every page sent about it so far, by any notifier, that day or since
    false_alarm: bool
    rules: tuple[str, ...]

    @property
    def response(self) -> timedelta | None:
        """First Acknowledge minus the opening; None when nobody acknowledged."""
        if self.acknowledged_at is None:
            return None
        return max(self.acknowledged_at - self.opened_at, timedelta(0))


@dataclass(frozen=True, slots=True)
class RuleDay:
    """A rule of the incidents opened on the digest's day, with its record over the incidents
    the store keeps (resolved ones are deleted once `ops.retention` old)."""

    rule: str
    pages: int  # every page so far (`IncidentDay.pages`) of the day's incidents it took part in
    incidents: int  # every incident it took part in that the store keeps
    false_alarms: int  # … of which someone marked a false alarm

    @property
    def precision(self) -> float:
        return 1 - self.false_alarms / self.incidents if self.incidents else 1.0


@dataclass(frozen=True, slots=True)
class Digest:
    """One brand's day."""

    brand: str
    brand_name: str
    day: date
    zone: str
    hourly: tuple[tuple[float, float], ...]  # (mentions, negative) per hour; NaN: not known
    incidents: tuple[IncidentDay, ...]
    rules: tuple[RuleDay, ...]

    @property
    def hours_known(self) -> int:
        return sum(not math.isnan(count) for count, _ in self.hourly)

    @property
    def volume(self) -> int:
        return round(sum(c for c, _ in self.hourly if not math.isnan(c)))

    @property
    def negative(self) -> int:
        return round(sum(n for c, n in self.hourly if not math.isnan(c)))

    @property
    def negative_share(self) -> float | None:
        return self.negative / self.volume if self.volume else None


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The day's start and end in UTC (23 or 25 hours apart when the clocks change)."""
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def hourly(
    history: SeriesHistory, brand: str, start: datetime, end: datetime
) -> tuple[tuple[float, float], ...]:
    """(mentions, negative) of the brand per hour in [start, end); NaN for an unknown hour."""
    window = history.window(SeriesKey(brand), end, end - start)
    hours = [[math.nan, 0.0] for _ in range(round((end - start) / HOUR))]
    for i, (count, negative) in enumerate(zip(window.count, window.negative, strict=True)):
        slot = int((window.start + window.bucket * i - start) / HOUR)
        if math.isnan(count) or not 0 <= slot < len(hours):
            continue
        known = hours[slot][0]
        hours[slot][0] = count if math.isnan(known) else known + count
        hours[slot][1] += negative
    return tuple((count, negative) for count, negative in hours)


async def build(
    store: Store,
    history: SeriesHistory,
    brands: Mapping[str, str],
    day: date,
    zone: ZoneInfo,
) -> list[Digest]:
    """The day of each brand (id → display name), in order, from the store's incidents, pages
    and clicks: read once for all brands, then grouped."""
    start, end = day_bounds(day, zone)
    incidents: dict[str, list[IncidentDay]] = {brand: [] for brand in brands}
    for row in await store.opened_between(start, end):
        if (found := incidents.get(str(row["brand"]))) is not None:
            found.append(_incident(row))
    feedback = await store.rule_feedback()
    return [
        Digest(
            brand,
            name,
            day,
            zone.key,
            hourly(history, brand, start, end),
            tuple(incidents[brand]),
            _rules(incidents[brand], feedback),
        )
        for brand, name in brands.items()
    ]


def _rules(
    incidents: list[IncidentDay], feedback: Mapping[str, tuple[int, int]]
) -> tuple[RuleDay, ...]:
    """The rules of the day's incidents, most pages first, each with its record over the
    incidents the store keeps."""
    pages: dict[str, int] = {}
    for incident in incidents:
        for rule in incident.rules:
            pages[rule] = pages.get(rule, 0) + incident.pages
    return tuple(
        RuleDay(rule, count, *feedback.get(rule, (0, 0)))
        for rule, count in sorted(pages.items(), key=lambda item: (-item[1], item[0]))
    )


def _incident(row: Mapping[str, str | int | None]) -> IncidentDay:
    opened = row["opened_at"] or row["started_at"]
    acknowledged = row["acknowledged_at"]
    return IncidentDay(
        id=str(row["id"]),
        severity=str(row["severity"]),
        stage=str(row["stage"]),
        summary=str(row["summary"]),
        opened_at=datetime.fromisoformat(str(opened)),
        acknowledged_at=datetime.fromisoformat(str(acknowledged)) if acknowledged else None,
        pages=int(row["pages"] or 0),
        false_alarm=bool(row["false_alarm"]),
        rules=tuple(orjson.loads(str(row["detail"]))["rules"]),
    )


def _incident_line(incident: IncidentDay, zone: ZoneInfo) -> str:
    response = incident.response
    acted = (
        f"acknowledged after {elapsed(response)}" if response is not None else "*not acknowledged*"
    )
    parts = [
        f"{_SEVERITY.get(incident.severity, '')} {incident.severity} · {incident.stage}",
        f"opened {incident.opened_at.astimezone(zone):%H:%M}",
        acted,
        f"{incident.pages} page{'s' * (incident.pages != 1)}",
    ]
    if incident.false_alarm:
        parts.append("marked a false alarm")
    return f"• {' · '.join(parts)}\n   {untrusted(incident.summary, 300)}"


def _rule_line(rule: RuleDay) -> str:
    return (
        f"• {untrusted(rule.rule, 80)} — in incidents of {rule.pages} "
        f"page{'s' * (rule.pages != 1)} · "
        f"precision {rule.precision:.0%} ({rule.false_alarms} false alarm"
        f"{'s' * (rule.false_alarms != 1)} in {rule.incidents} incidents so far)"
    )


def text(digest: Digest) -> str:
    """The notification text: the day in one line."""
    share = digest.negative_share
    return fit(
        f"Daily digest for {untrusted(digest.brand_name, 80)}, {digest.day:%a %d %b}: "
        f"{digest.volume:,} mentions, "
        f"{'-' if share is None else f'{share:.0%}'} negative, "
        f"{len(digest.incidents)} incident{'s' * (len(digest.incidents) != 1)} opened",
        SECTION_CHARS,
    )


def blocks(digest: Digest) -> list[Block]:
    """The digest as Block Kit: the day's numbers, its incidents, its rules."""
    zone = ZoneInfo(digest.zone)
    share = digest.negative_share
    covered = len(digest.hourly)
    volume = f"*Mentions*\n{digest.volume:,}" + (
        f" (data for {digest.hours_known} of {covered} h)" if digest.hours_known < covered else ""
    )
    negative = "*Negative*\n" + (
        "-" if share is None else f"{share:.0%} ({digest.negative:,} posts)"
    )
    responses = [i.response.total_seconds() for i in digest.incidents if i.response is not None]
    acknowledged = f"*Acknowledged*\n{len(responses)} of {len(digest.incidents)}" + (
        f" · median {elapsed(timedelta(seconds=statistics.median(responses)))}" if responses else ""
    )
    opened = f"*Incidents opened*\n{len(digest.incidents)}"
    result: list[Block] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": fit(
                    f"📊 Daily digest — {digest.brand_name} · {digest.day:%a %d %b}",
                    HEADER_CHARS,
                ),
                "emoji": True,
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": fit(f, FIELD_CHARS)}
                for f in (volume, negative, opened, acknowledged)
            ],
        },
    ]
    lines = [_incident_line(i, zone) for i in digest.incidents] or ["No incident opened."]
    result.append(_listing("*Incidents*", lines))
    if digest.rules:
        result.append(_listing("*Rules that alerted*", list(map(_rule_line, digest.rules))))
    result.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"crisiswatch · the day 00:00–24:00 {digest.zone} · precision: "
                    "share of a rule's incidents not marked a false alarm",
                }
            ],
        }
    )
    return result


def _listing(title: str, lines: list[str]) -> Block:
    """A titled list in one section: whole lines while they fit, then how many did not."""
    shown, size = [title], len(title)
    for number, line in enumerate(lines):
        left = len(lines) - number - 1
        room = len(f"\n…and {left} more") if left else 0  # to say what is left out, if need be
        if size + len(f"\n{line}") + room > SECTION_CHARS:
            shown.append(f"…and {left + 1} more")
            break
        shown.append(line)
        size += len(f"\n{line}")
    return section("\n".join(shown))


def render_png(digest: Digest) -> bytes | None:
    """The day's mentions per hour with the negative share, as PNG; None without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    hours = range(len(digest.hourly))
    counts = [0.0 if math.isnan(c) else c for c, _ in digest.hourly]
    shares = [math.nan if math.isnan(c) or not c else 100 * n / c for c, n in digest.hourly]
    figure = Figure(figsize=(6.4, 2.8), dpi=100, layout="constrained")
    volume = figure.subplots()
    volume.bar(hours, counts, width=0.8, color="#9ecae1", label="mentions")
    volume.set_ylabel("mentions per hour")
    volume.set_xlabel(f"hour ({digest.zone})")
    volume.set_xticks(range(0, len(digest.hourly), 3))
    volume.set_xlim(-0.6, len(digest.hourly) - 0.4)
    negative = volume.twinx()
    negative.plot(hours, shares, color="#de2d26", marker=".", linewidth=1.5, label="negative %")
    negative.set_ylim(0, 100)
    negative.set_ylabel("negative %", color="#de2d26")
    volume.set_title(f"{digest.brand_name} — {digest.day:%a %d %b %Y}".replace("$", r"\$"))
    volume.grid(axis="y", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def default_route(routes: Mapping[str, Route]) -> Route | None:
    """The route named `default`, else the first one."""
    return routes.get("default") or next(iter(routes.values()), None)


def schedule(settings: Settings) -> tuple[ZoneInfo, str | None]:
    """The digest's time zone (the default route's quiet hours, else UTC) and time of day."""
    route = default_route(settings.routes)
    quiet = route.quiet_hours if route else None
    return ZoneInfo(quiet.timezone if quiet else "UTC"), settings.notify.slack.digest_at


class DailyDigest:
    """Posts yesterday's digest of every brand each day at `digest_at` (APScheduler, cron).

    Brands, channel, zone and time are the settings in force: a reload that changes the time or
    the default route's zone moves the schedule, and `digest_at: null` stops it."""

    def __init__(
        self,
        live: LiveSettings,
        store: Store,
        history: SeriesHistory,
        client: AsyncWebClient,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.live = live
        self.store = store
        self.history = history
        self.client = client
        self._sleep = sleep
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduled: tuple[ZoneInfo, str | None] | None = None
        self._posting: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self.scheduler.start()
        self._schedule(self.live.current)
        self.live.on_swap(self._schedule)

    def _schedule(self, settings: Settings) -> None:
        wanted = schedule(settings)
        if wanted == self._scheduled:
            return
        self._scheduled = wanted
        zone, at = wanted
        if self.scheduler.get_job(JOB) is not None:
            self.scheduler.remove_job(JOB)
        if at is None:
            log.info("digest.unscheduled")
            return
        hour, minute = (int(part) for part in at.split(":"))
        self.scheduler.add_job(
            self.post,
            CronTrigger(hour=hour, minute=minute, timezone=zone),
            id=JOB,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        log.info("digest.scheduled", next=str(self.next_run()), zone=zone.key)

    def next_run(self) -> datetime | None:
        job = self.scheduler.get_job(JOB)
        return None if job is None else job.next_run_time

    async def stop(self) -> None:
        """Stop the schedule; a digest being posted is cancelled."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for task in self._posting:
            task.cancel()
        await asyncio.gather(*self._posting, return_exceptions=True)
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the loop's next turn

    async def post(self, now: datetime | None = None) -> int:
        """Post the digest of the day before `now` (in the zone) per brand; how many posted."""
        task = asyncio.current_task()
        if task is not None:
            self._posting.add(task)
        try:
            settings = self.live.current
            route = default_route(settings.routes)
            if route is None:
                return 0
            zone, _ = schedule(settings)
            day = (now or datetime.now(UTC)).astimezone(zone).date() - timedelta(days=1)
            brands = {brand.id: brand.display_name for brand in settings.brands}
            posted = 0
            for digest in await build(self.store, self.history, brands, day, zone):
                posted += await self._send(digest, route.channel)
            return posted
        finally:
            if task is not None:
                self._posting.discard(task)

    async def _send(self, digest: Digest, channel: str) -> int:
        """Post one brand's digest, then its chart in the thread (a chart that fails is logged:
        the digest is out)."""
        response = await self._post(digest, channel)
        if response is None:
            return 0
        log.info("digest.posted", brand=digest.brand, day=str(digest.day))
        png = await asyncio.to_thread(render_png, digest) if digest.hours_known else None
        if png is None:
            return 1
        await upload_chart(
            self.client,
            (str(response["channel"]), str(response["ts"])),
            png,
            filename=f"crisiswatch-digest-{digest.brand}-{digest.day}.png",
            title=f"{digest.brand_name}: mentions per hour, {digest.day:%a %d %b}",
            alt_txt=f"{digest.brand_name} mentions and negative share per hour",
            failed="digest.chart_failed",
            brand=digest.brand,
        )
        return 1

    async def _post(self, digest: Digest, channel: str) -> AsyncSlackResponse | None:
        """The digest's message, tried `DIGEST_TRIES` times over a few minutes when Slack fails
        in passing (a 5xx, a timeout, rate limits), once when the error needs a person."""
        backoff = Backoff(base=DIGEST_RETRY_BASE, cap=DIGEST_RETRY_BASE * 4)
        for attempt in range(1, DIGEST_TRIES + 1):
            try:
                return await self.client.chat_postMessage(
                    channel=channel,
                    text=text(digest),
                    blocks=blocks(digest),
                    unfurl_links=False,
                    unfurl_media=False,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                answer = exc.response if isinstance(exc, SlackApiError) else None
                needs_a_person = answer is not None and answer.get("error") in NEEDS_A_PERSON
                if attempt == DIGEST_TRIES or needs_a_person:
                    log.warning("digest.failed", brand=digest.brand, error=str(exc))
                    return None
                now = datetime.now(UTC).timestamp()
                told = retry_after(answer.headers, now) if answer is not None else None
                log.info("digest.retry", brand=digest.brand, attempt=attempt, error=str(exc))
                await self._sleep(backoff.next(told))
        return None
