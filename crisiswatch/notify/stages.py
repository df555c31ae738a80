"""Decisions a page passes before it is queued: is it silenced, and must it wait for morning?

Both are pure functions of the page, the rules of the day and the time, so the daemon (wall
clock), rule tests and backtests (event time) decide the same way.

- A **silence** (from `crisiswatch silence add` or Slack's Snooze button) mutes matching pages
  while it lasts. It never hides an escalation to critical (a crisis getting worse always
  pages), nor the resolution of an incident whose earlier page went out (its message must not
  be left firing).
- **Quiet hours** on a route hold pages below the route's `min_severity` until the quiet hours
  end; pages at or above it go at once. A held page that a newer page of its incident overtook
  is superseded when it comes due, not sent (it would show older state over newer).

`QuietQueue` plays the quiet hours out in event time for rule tests and backtests, so the two
hold, release and supersede pages alike.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from crisiswatch.config import QuietHours, Route
from crisiswatch.domain import Page, PageKind, Severity, Silence


def silenced_by(
    page: Page, silences: list[Silence], at: datetime, *, announced: bool = False
) -> Silence | None:
    """The silence that mutes this page at `at`, if any; `announced`: an earlier page of the
    incident went out."""
    if page.kind is PageKind.ESCALATED and page.incident.severity is Severity.CRITICAL:
        return None
    if page.kind is PageKind.RESOLVED and announced:
        return None
    return next((s for s in silences if s.active(at) and s.matches(page)), None)


def superseded(page: Page, made_at: datetime, newest_sent: Mapping[str, datetime]) -> bool:
    """Whether a page made at `made_at` (held by quiet hours) was overtaken: a page of its
    incident made later has gone out (`newest_sent`: incident id -> when the newest page sent
    was made)."""
    return newest_sent.get(page.incident.id, made_at) > made_at


class QuietQueue:
    """Pages in event time through their routes' quiet hours, as the daemon's outbox sends them
    (decided by each page's `at`, where the daemon reads the wall clock): a held page waits for
    the hours' end while the pages made meanwhile go out, and is superseded (dropped) when a
    newer page of its incident went out first. Each page out comes as (the page as it goes out,
    when it was made), which differ for a held page."""

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = routes
        self._held: list[tuple[Page, datetime]] = []  # by when they go out, then as they came
        self._newest_sent: dict[str, datetime] = {}  # incident id -> newest page's made_at
        # held pages a newer page of their incident overtook, not sent: (page, when made)
        self.superseded: list[tuple[Page, datetime]] = []

    def offer(self, page: Page) -> list[tuple[Page, datetime]]:
        """Take a page just made (pages come in the order made); the pages that go out by its
        time, in order: the held ones due by then, then this one unless it is held."""
        out = self._release(page.at)
        until = quiet_until(page, self._routes.get(page.incident.route), page.at)
        if until is None:
            out.append(self._sent(page, page.at))
        else:
            held = (replace(page, at=until), page.at)
            bisect.insort_right(self._held, held, key=lambda item: item[0].at)
        return out

    def finish(self) -> list[tuple[Page, datetime]]:
        """No more pages: the held ones go out as their quiet hours end."""
        return self._release(None)

    def _release(self, now: datetime | None) -> list[tuple[Page, datetime]]:
        """The held pages due by `now` (every one with None), less the superseded."""
        out: list[tuple[Page, datetime]] = []
        while self._held and (now is None or self._held[0][0].at <= now):
            page, made_at = self._held.pop(0)
            if superseded(page, made_at, self._newest_sent):
                self.superseded.append((page, made_at))
            else:
                out.append(self._sent(page, made_at))
        return out

    def _sent(self, page: Page, made_at: datetime) -> tuple[Page, datetime]:
        incident = page.incident.id
        self._newest_sent[incident] = max(made_at, self._newest_sent.get(incident, made_at))
        return page, made_at


def quiet_until(page: Page, route: Route | None, at: datetime) -> datetime | None:
    """When a page held by its route's quiet hours may go out; None when it may go now."""
    quiet = route.quiet_hours if route is not None else None
    if quiet is None or page.incident.severity >= Severity[quiet.min_severity.upper()]:
        return None
    return _quiet_end(quiet, at)


def _quiet_end(quiet: QuietHours, at: datetime) -> datetime | None:
    zone = ZoneInfo(quiet.timezone)
    local = at.astimezone(zone)
    start, end = _clock(quiet.start), _clock(quiet.end)
    now = local.time()
    crosses_midnight = end <= start
    inside = (start <= now or now < end) if crosses_midnight else (start <= now < end)
    if not inside:
        return None
    day = local.date() if now < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=zone).astimezone(at.tzinfo)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
