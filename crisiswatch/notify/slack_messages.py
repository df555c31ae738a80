"""Where each incident's Slack message is, and which posts are under way, for `SlackNotifier`.

The state store records both, so later pages edit the message and a retry after a crash looks
for a post that may have reached Slack. When the store cannot take a write (a full disk; its
reads still work), this process remembers it instead and the page still goes: the incident's
later pages edit its message as usual. Only a restart before the store has room again loses
what was remembered here, and then an incident's next page is posted as a new message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

import structlog

from crisiswatch.store import Store, StoreError

log = structlog.get_logger(__name__)
KEPT = 1_000  # records held here at most (incidents' messages, posts under way), oldest go

_Message = tuple[str, str, str]  # (channel, ts, route)
V = TypeVar("V")


class Messages:
    """One notifier's incident messages and posting marks: the store's, with this process's
    memory for what the store could not take."""

    def __init__(self, store: Store, notifier: str) -> None:
        self.store = store
        self.notifier = notifier
        # incident id -> its message, or None once let go, where the store could not record it
        self._unrecorded: dict[str, _Message | None] = {}
        self._marks: dict[str, datetime] = {}  # posting marks the store could not take

    async def message(self, incident_id: str) -> tuple[str, str] | None:
        """(channel, ts) of the incident's message, if one was posted."""
        if incident_id in self._unrecorded:
            held = self._unrecorded[incident_id]
            return None if held is None else (held[0], held[1])
        return await self.store.message(incident_id, self.notifier)

    async def posted_for(self, incident_id: str) -> tuple[str, str | None] | None:
        """(channel, route) of the incident's message, if one was posted (see the store's)."""
        if incident_id in self._unrecorded:
            held = self._unrecorded[incident_id]
            return None if held is None else (held[0], held[2])
        return await self.store.posted_for(incident_id, self.notifier)

    async def save(self, incident_id: str, channel: str, ts: str, route: str) -> None:
        """The incident's message is this one, posted for `route`."""
        try:
            await self.store.save_message(incident_id, self.notifier, channel, ts, route)
        except StoreError as exc:
            log.error(
                "slack.message_unrecorded",
                incident=incident_id,
                error=str(exc),
                effect="its later pages edit it all the same; after a restart before the store "
                "has room, the incident's next page is posted as a new message",
            )
            self._hold(incident_id, (channel, ts, route))
        else:
            self._unrecorded.pop(incident_id, None)

    async def forget(self, incident_id: str) -> None:
        """The incident's message is let go (deleted in Slack, or left for another route)."""
        try:
            await self.store.forget_message(incident_id, self.notifier)
        except StoreError as exc:
            log.error("slack.message_unrecorded", incident=incident_id, error=str(exc),
                      effect="let go all the same")  # fmt: skip
            self._hold(incident_id, None)
        else:
            self._unrecorded.pop(incident_id, None)

    async def mark_posting(self, key: str) -> datetime | None:
        """Note that a post is under way (see the store's `mark_posting`); the time of an
        earlier attempt, if one was noted."""
        try:
            return await self.store.mark_posting(key, self.notifier)
        except StoreError as exc:
            earlier = self._marks.get(key)
            if earlier is None:
                log.warning(
                    "slack.posting_unmarked",
                    key=key,
                    error=str(exc),
                    effect="posted all the same; a crash just after it may post it twice",
                )
                _put(self._marks, key, datetime.now(UTC))
            return earlier

    def _hold(self, incident_id: str, message: _Message | None) -> None:
        self._unrecorded.pop(incident_id, None)  # to the end: the newest is kept longest
        _put(self._unrecorded, incident_id, message)


def _put(held: dict[str, V], key: str, value: V) -> None:
    """Add to a record held here, letting the oldest go past `KEPT`."""
    held[key] = value
    while len(held) > KEPT:
        del held[next(iter(held))]
