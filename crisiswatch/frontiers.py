"""How far buckets may close while a live source is behind.

A bucket closes when the watermark passes its end; a mention that arrives later is late and
lost to its bucket. A fetching source (Reddit, X) that is behind still has posts to deliver from
before now: after a start (everything since its cursors, however long the daemon was down),
while it catches up, and while it fails. Were the buckets closed by the clock and by the other
sources meanwhile, its catch-up would come too late, and the buckets it covers would be judged,
and learned by the detectors, as quiet. So closes wait for it: the watermark is held at the
earliest time a behind source may still deliver from.

Not for ever: a page held back is a page late. A source is waited for at most `wait` from
when it fell behind (`sources.catch_up_wait`); then closes go on without it (its older posts will
be late, as before) until it says it is current again. Sources that are pushed to (HTTP ingest)
or replayed say nothing and are never waited for.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import structlog

from crisiswatch.sources import Progress

log = structlog.get_logger(__name__)

START = datetime.fromtimestamp(0.0, UTC)
"""A source behind since this has said nothing yet: it may deliver anything after its cursors,
so no bucket may close (no mention is dated this early)."""


class Frontiers:
    """The sources bucket closes wait for, told by their `Progress` in stream order."""

    def __init__(self, sources: Iterable[str], *, wait: timedelta, now: datetime) -> None:
        self.wait = wait
        # source → (behind since, when it fell behind): every source is behind at the start
        self._behind: dict[str, tuple[datetime, datetime]] = {
            name: (START, now) for name in sources if wait > timedelta(0)
        }
        self._given_up: set[str] = set()

    def report(self, progress: Progress, now: datetime) -> None:
        """A source's word, taken after the mentions before it in its stream."""
        name = progress.source
        if self.wait <= timedelta(0):
            return  # never waited for: nothing to keep, nothing to log
        if progress.behind_since is None:
            self._behind.pop(name, None)
            if name in self._given_up:
                self._given_up.discard(name)
                log.info("buckets.source_current", source=name)
            return
        fell_behind = self._behind.get(name, (progress.behind_since, now))[1]
        self._behind[name] = (progress.behind_since, fell_behind)

    def ceiling(self, now: datetime) -> datetime | None:
        """How far the watermark may go (None: as far as time goes): the earliest time a
        behind source may still deliver from, among those not waited for too long."""
        limit: datetime | None = None
        for name, (since, fell_behind) in self._behind.items():
            if self._waits(fell_behind, now):
                limit = since if limit is None else min(limit, since)
            elif name not in self._given_up:
                self._given_up.add(name)
                log.warning(
                    "buckets.stopped_waiting",
                    source=name,
                    behind_since=None if since == START else since.isoformat(),
                    waited_seconds=round((now - fell_behind).total_seconds()),
                )
        return limit

    def unwatched(self, now: datetime) -> list[str]:
        """The sources behind and no longer waited for: what closes now misses some of their
        posts, so it is not to be learned as how busy the brands usually are."""
        return self._behind_and(waited_for=False, now=now)

    def waiting_for(self, now: datetime) -> list[str]:
        """The sources bucket closes are waiting for now."""
        return self._behind_and(waited_for=True, now=now)

    def _behind_and(self, *, waited_for: bool, now: datetime) -> list[str]:
        return sorted(
            n for n, (_, fell) in self._behind.items() if self._waits(fell, now) == waited_for
        )

    def _waits(self, fell_behind: datetime, now: datetime) -> bool:
        """Whether a source that fell behind then is still waited for."""
        return now - fell_behind < self.wait
