"""Sources: where mentions come from. Each is an async iterator of `Mention`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from crisiswatch.domain import Mention


class Source(Protocol):
    """A stream of mentions. `finite` sources (a replay) end; live ones run until cancelled."""

    name: str
    finite: bool

    def stream(self) -> AsyncIterator[Mention]: ...
