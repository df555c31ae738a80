"""Notify: pages leave the daemon here (console, Slack), through the outbox and notification log."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from crisiswatch.domain import Page


class Notifier(Protocol):
    """Delivers a page somewhere people will see it. `name` keys the outbox and the log.

    `send` raises `PermanentError` when retrying this page cannot help, `Unauthorized` when no
    page can go until a person fixes the notifier's credentials; any other exception is retried.
    """

    name: str

    async def send(self, page: Page) -> None: ...


@runtime_checkable
class OpsNotifier(Protocol):
    """A notifier that can also tell ops about crisiswatch itself (a rejected reload, …)."""

    name: str

    async def notice(self, text: str) -> None: ...


class PermanentError(Exception):
    """Sending this page cannot succeed (a channel that is gone, a message Slack rejects)."""


class Unauthorized(Exception):
    """The service refuses the notifier's credentials (a revoked token, a missing scope): no page
    can go until a person fixes them, so pages stay queued and are tried again now and then."""


class RetryLater(Exception):
    """The service asked us to wait before trying again: `retry_after` seconds, None when it
    did not say how long (or said it unreadably)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
