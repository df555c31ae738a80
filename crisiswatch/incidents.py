"""Alerts → incidents: grouping, escalation, and resolution once every rule has gone quiet.

Alerts that share a group key (by default the brand) belong to one incident, so one crisis
seen by several rules and topics pages once. An incident opens with its first alert, pages again
when it gets worse (severity or stage up) or spreads (a new source or topic), and resolves when
each of its rules has been quiet for that rule's `keep_firing_for`.

The route paces the pages (Alertmanager's timers, in event time): `group_wait` holds the first
page to gather what else fires (a blip that resolves within it never pages), `group_interval`
spaces updates (an escalation always goes at once, carrying the changes held back), and
`repeat_interval` reminds that an incident is still firing when it has not paged for that long.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from crisiswatch.config import Route
from crisiswatch.domain import (
    ALL_TOPICS,
    Alert,
    Incident,
    IncidentStatus,
    Page,
    PageKind,
    Severity,
    Stage,
    incident_id,
    incident_key,
)

SUSTAINED_BUCKETS = 3  # alerting this many buckets makes a spark a flame
RECENT = 500  # resolved incidents remembered for feedback that comes after the resolution
SOURCE_SHARE = 0.2  # a source carrying this share of an alerting bucket: it spreads there
SEVERITY_ROSE = "severity "  # how a page's change that the severity rose begins


@dataclass(slots=True)
class _Settled:
    """An incident a person resolved, as far as the alerts after it are concerned."""

    severity: Severity
    rules: frozenset[str]
    last_alert: datetime  # the last alert of it, or of its tail
    quiet_after: timedelta  # quiet this long, its rules may open a new incident


@dataclass(slots=True)
class _Pace:
    """How an incident's pages are being paced."""

    due: datetime | None  # when its held first page goes out; None once announced
    last_paged: datetime | None = None
    held: list[str] = field(default_factory=list)  # changes held back by group_interval


class IncidentManager:
    """Keeps the open incidents and turns each bucket's alerts into pages."""

    def __init__(
        self,
        keep_firing_for: Mapping[str, timedelta],
        group_by: Sequence[str] = ("brand",),
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.keep_firing_for = dict(keep_firing_for)
        self.group_by = tuple(group_by)
        self.routes = dict(routes or {})
        self.open: dict[str, Incident] = {}
        self._last_alert: dict[str, dict[str, datetime]] = {}  # incident key -> rule -> time
        self._alerting_buckets: dict[str, int] = {}
        self._paces: dict[str, _Pace] = {}
        self.recent: dict[str, Incident] = {}  # resolved, by id, for late feedback (bounded)
        # resolved by a person: key -> what was resolved; the same alerts going on do not open
        # it again until quiet, only a worse one or another rule's does
        self._settled: dict[str, _Settled] = {}

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore from a checkpoint, including one saved before `_settled` existed."""
        self.__dict__.update(state)
        settled = state.get("_settled")
        kept = settled.items() if isinstance(settled, dict) else ()
        self._settled = {k: v for k, v in kept if isinstance(v, _Settled)}  # drop other shapes

    def key_of(self, alert: Alert) -> str:
        labels = {"brand": alert.signal.series.brand, "topic": alert.signal.series.topic}
        labels["rule"] = alert.rule_id
        return ",".join(f"{name}={labels[name]}" for name in self.group_by)

    def update(self, alerts: Sequence[Alert], now: datetime) -> list[Page]:
        """Apply one bucket's alerts (all series, closing at `now`); return the pages to send."""
        pages: list[Page | None] = []
        grouped: dict[str, list[Alert]] = {}
        for alert in alerts:
            grouped.setdefault(self.key_of(alert), []).append(alert)
        for key, group in grouped.items():
            if not self._still_settled(key, group, now):
                pages.append(self._apply(key, group, now))
        for key in [k for k in self.open if k not in grouped]:
            if self._quiet(key, now):
                pages.append(self._resolve(key, now))
        for key, settled in list(self._settled.items()):
            if key not in grouped and now - settled.last_alert >= settled.quiet_after:
                del self._settled[key]  # quiet at last: the next alert opens a new incident
        return self._pace([page for page in pages if page is not None], now)

    def _timers(self, incident: Incident) -> tuple[timedelta, timedelta, timedelta | None]:
        route = self.routes.get(incident.route)
        if route is None:
            return timedelta(0), timedelta(0), None
        return route.group_wait, route.group_interval, route.repeat_interval

    def _pace(self, pages: list[Page], now: datetime) -> list[Page]:
        """Hold, merge and release pages as the incidents' routes ask."""
        out: list[Page] = []
        for page in pages:
            key = page.incident.key
            group_wait, group_interval, _ = self._timers(page.incident)
            if page.kind is PageKind.OPENED:
                self._paces[key] = _Pace(due=now + group_wait if group_wait else None)
                if group_wait:
                    continue
            pace = self._paces[key]
            if page.kind is PageKind.RESOLVED:
                del self._paces[key]
            if pace.due is not None:
                continue  # not announced yet: the held first page will say it all
            recent = pace.last_paged is not None and now - pace.last_paged < group_interval
            if page.kind is PageKind.UPDATED and recent:
                pace.held.extend(page.changes)
                continue
            out.append(replace(page, changes=(*pace.held, *page.changes)))
            pace.held, pace.last_paged = [], now
        paged = {page.incident.key for page in out}
        for key, pace in self._paces.items():
            incident = self.open.get(key)
            if incident is None or key in paged:
                continue
            _, group_interval, repeat_interval = self._timers(incident)
            if pace.due is not None and now >= pace.due:
                out.append(Page(incident, PageKind.OPENED, now))
                pace.due, pace.last_paged = None, now
            elif pace.held and pace.last_paged and now - pace.last_paged >= group_interval:
                out.append(Page(incident, PageKind.UPDATED, now, tuple(pace.held)))
                pace.held, pace.last_paged = [], now
            elif (
                repeat_interval
                and pace.last_paged
                and now - pace.last_paged >= repeat_interval
                and incident.last_alert_at >= now  # firing now, not waiting out keep_firing_for
            ):
                since = f"still firing since {incident.started_at:%Y-%m-%d %H:%M} UTC"
                out.append(Page(incident, PageKind.REMINDER, now, (since,)))
                pace.last_paged = now
        return out

    def _quiet(self, key: str, now: datetime) -> bool:
        default = timedelta(hours=1)
        return all(
            now - last >= self.keep_firing_for.get(rule, default)
            for rule, last in self._last_alert[key].items()
        )

    def _apply(self, key: str, alerts: list[Alert], now: datetime) -> Page | None:
        worst = max(alerts, key=lambda a: (a.severity, a.stage, a.signal.bucket.count))
        rules = {a.rule_id for a in alerts}
        topics = {a.signal.series.topic for a in alerts} - {ALL_TOPICS}
        brand_wide = any(a.signal.series.topic == ALL_TOPICS for a in alerts)
        sources = {s for a in alerts for s in _main_sources(a)}
        self._last_alert.setdefault(key, {}).update(dict.fromkeys(rules, now))
        self._alerting_buckets[key] = self._alerting_buckets.get(key, 0) + 1
        previous = self.open.get(key)
        if previous is None:
            started_at = min(a.signal.bucket.start for a in alerts)
            incident = Incident(
                id=incident_id(key, started_at),
                key=key,
                brand=worst.signal.series.brand,
                status=IncidentStatus.FIRING,
                severity=worst.severity,
                stage=worst.stage,
                started_at=started_at,
                updated_at=now,
                last_alert_at=now,
                resolved_at=None,
                rules=tuple(sorted(rules)),
                topics=tuple(sorted(topics)),
                sources=tuple(sorted(sources)),
                route=worst.route,
                summary=worst.summary,
                reasons=worst.reasons,
                peak_count=max(a.signal.bucket.count for a in alerts),
                latest=worst.signal,
                brand_wide=brand_wide,
            )
            self.open[key] = incident
            return Page(incident, PageKind.OPENED, now)
        all_sources = tuple(sorted(sources | set(previous.sources)))
        merged = replace(
            previous,
            severity=max(previous.severity, worst.severity),
            stage=self._stage(key, max(previous.stage, worst.stage), len(all_sources)),
            rules=tuple(sorted(rules | set(previous.rules))),
            topics=tuple(sorted(topics | set(previous.topics))),
            brand_wide=previous.brand_wide or brand_wide,
            sources=all_sources,
            # the worse rule's route: its channel, its people
            route=worst.route if worst.severity > previous.severity else previous.route,
            updated_at=now,
            last_alert_at=now,
            peak_count=max(previous.peak_count, *(a.signal.bucket.count for a in alerts)),
            # what is happening now, for whichever page goes next (an update, a reminder, a
            # held page): not the numbers of the bucket that last made it worse
            summary=worst.summary,
            reasons=worst.reasons,
            latest=worst.signal,
        )
        worse = (merged.severity, merged.stage) > (previous.severity, previous.stage)
        self.open[key] = merged
        changes = tuple(_changes(previous, merged))
        if worse:
            return Page(merged, PageKind.ESCALATED, now, changes)
        return Page(merged, PageKind.UPDATED, now, changes) if changes else None

    def _stage(self, key: str, stage: Stage, sources: int) -> Stage:
        """How far an incident on `sources` platforms has spread, at least `stage`."""
        if self._alerting_buckets[key] >= SUSTAINED_BUCKETS:
            stage = max(stage, Stage.FLAME)
            if sources >= 2:
                stage = Stage.FIRE  # sustained and spreading across platforms
        return stage

    def _resolve(self, key: str, now: datetime) -> Page:
        incident = replace(
            self.open.pop(key),
            status=IncidentStatus.RESOLVED,
            resolved_at=now,
            updated_at=now,
        )
        del self._last_alert[key]
        del self._alerting_buckets[key]
        self.recent[incident.id] = incident
        while len(self.recent) > RECENT:
            del self.recent[next(iter(self.recent))]
        quiet = f"quiet since {incident.last_alert_at:%Y-%m-%d %H:%M} UTC"
        return Page(incident, PageKind.RESOLVED, now, (quiet,))

    def resolve_now(self, key: str, now: datetime, why: str) -> list[Page]:
        """A person resolved the incident (Slack's Resolve): close it at once. Its rules'
        alerts going on as before do not open it again (and page everyone anew) until they
        have been quiet for their `keep_firing_for`; a worse one, or another rule's, does."""
        incident = self.open.get(key)
        if incident is None:
            return []
        quiet_after = max(self.keep_firing_for.get(r, timedelta(hours=1)) for r in incident.rules)
        self._settled[key] = _Settled(
            incident.severity, frozenset(incident.rules), incident.last_alert_at, quiet_after
        )
        page = self._resolve(key, now)
        return self._pace([replace(page, changes=(why,))], now)

    def _still_settled(self, key: str, alerts: list[Alert], now: datetime) -> bool:
        """Whether these alerts continue an incident a person resolved (its rules, no worse
        than it was): they are taken as its tail, not a new incident."""
        settled = self._settled.get(key)
        if settled is None:
            return False
        worse = max(a.severity for a in alerts) > settled.severity
        if worse or not {a.rule_id for a in alerts} <= settled.rules:
            del self._settled[key]  # worse, or something else: a new incident pages
            return False
        settled.last_alert = now
        return True

    def find(self, wanted: str) -> Incident | None:
        """An open or recently resolved incident by its id."""
        incident = self.open.get(incident_key(wanted))
        return incident if incident and incident.id == wanted else self.recent.get(wanted)

    def resolve_all(self, now: datetime) -> list[Page]:
        """Nothing more will come (the end of a replay): resolve what has gone quiet by `now`."""
        quiet = [self._resolve(key, now) for key in list(self.open) if self._quiet(key, now)]
        return self._pace(quiet, now)


def _main_sources(alert: Alert) -> list[str]:
    bucket = alert.signal.bucket
    return [name for name, n in bucket.sources if n >= SOURCE_SHARE * bucket.count]


def _changes(before: Incident, after: Incident) -> list[str]:
    changes = []
    if after.severity > before.severity:
        changes.append(f"{SEVERITY_ROSE}{before.severity.label} → {after.severity.label}")
    if after.stage > before.stage:
        changes.append(f"stage {before.stage.label} → {after.stage.label}")
    if after.route != before.route:
        changes.append(f"route {before.route} → {after.route}")
    for source in sorted(set(after.sources) - set(before.sources)):
        changes.append(f"now also on {source}")
    for topic in sorted(set(after.topics) - set(before.topics)):
        changes.append(f"now also about {topic}")
    return changes
