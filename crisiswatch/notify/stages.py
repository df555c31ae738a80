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
"""

from __future__ import annotations

from collections.abc import Mapping
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
