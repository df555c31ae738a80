"""Notify: pages leave the daemon here (console, later Slack), through the notification log."""

from __future__ import annotations

from typing import Protocol

from crisiswatch.domain import Page


class Notifier(Protocol):
    """Delivers a page somewhere people will see it. `name` keys the notification log."""

    name: str

    async def send(self, page: Page) -> None: ...
