"""Sources: where mentions come from. Each is an async iterator of `Mention` (and, for a live
source that fetches, `Progress`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from crisiswatch.domain import Mention


@dataclass(frozen=True, slots=True)
class Progress:
    """A fetching source's word on how complete it is, in its stream after the mentions it
    covers: `behind_since` None means it has fetched up to the present; a time means what was
    posted after that may still be on its way (the source is starting, catching up, or failing).
    """

    source: str
    behind_since: datetime | None


class Source(Protocol):
    """A stream of mentions. `finite` sources (a replay) end; live ones run until cancelled.
    Sources that fetch (Reddit, X) say `reports_progress` and put `Progress` in their stream;
    bucket closes wait for them while they are behind (`crisiswatch/frontiers.py`)."""

    name: str
    finite: bool
    reports_progress: bool

    def stream(self) -> AsyncIterator[Mention | Progress]: ...
