"""Where each incident's Slack message is, which posts are under way, and the buttons pressed
on its page, for `SlackNotifier` and the button handlers.

The state store records them, so later pages edit the message, a retry after a crash looks for a
post that may have reached Slack, and an acknowledgement shows and stops escalation. When the
store cannot take a write (a full disk; its reads still work), this process remembers it instead
and the page still goes: the incident's later pages edit its message as usual, and what was
remembered here is written to the store once it takes writes again. Only a restart before then
loses it (an incident's next page is then posted as a new message).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection
from datetime import UTC, datetime
from typing import NamedTuple

import structlog

from crisiswatch.notify.held import Held
from crisiswatch.notify.slack_blocks import ACK
from crisiswatch.store import Store, StoreError

log = structlog.get_logger(__name__)
KEPT = 1_000  # records of each kind held here at most (messages, marks, presses)

_Message = tuple[str, str, str, datetime]  # (channel, ts, route, posted at)


class Press(NamedTuple):
    """A button pressed on an incident's page (or an escalation made), as the store records it."""

    incident_id: str
    action: str
    user: str
    at: datetime
    mention_id: str | None = None


class Messages:
    """One notifier's incident messages, posting marks and button presses: the store's, with
    this process's memory for what the store could not take."""

    def __init__(self, store: Store, notifier: str) -> None:
        self.store = store
        self.notifier = notifier
        # incident id -> its message, or None once let go, where the store could not record it
        self._unrecorded: Held[str, _Message | None] = Held(KEPT)
        self._marks: Held[str, datetime] = Held(KEPT)  # posting marks the store could not take
        self._writing = asyncio.Lock()  # one write at a time, so none overtakes another
        # button presses (and escalations made) the store could not record, by arrival
        self._presses: Held[int, Press] = Held(KEPT)
        self._pressed = itertools.count()

    async def message(self, incident_id: str) -> tuple[str, str] | None:
        """(channel, ts) of the incident's message, if one was posted."""
        if incident_id in self._unrecorded:
            held = self._unrecorded.get(incident_id)
            return None if held is None else (held[0], held[1])
        return await self.store.message(incident_id, self.notifier)

    async def posted_for(self, incident_id: str) -> tuple[str, str | None] | None:
        """(channel, route) of the incident's message, if one was posted (see the store's)."""
        if incident_id in self._unrecorded:
            held = self._unrecorded.get(incident_id)
            return None if held is None else (held[0], held[2])
        return await self.store.posted_for(incident_id, self.notifier)

    async def acknowledged(self, incident_id: str) -> tuple[str, datetime] | None:
        """(user, when) of the incident's first acknowledgement, if any."""
        return await self.store.acknowledged(incident_id) or next(
            (
                (p.user, p.at)
                for p in self._presses.values()
                if p.incident_id == incident_id and p.action == ACK
            ),
            None,
        )

    def pressed_unrecorded(self, press: Press) -> None:
        """A press (or an escalation made) that the store could not record: held here until
        `write_back_presses` can."""
        self._presses.put(next(self._pressed), press)

    def pressed_here(self, incident_id: str, actions: Collection[str]) -> bool:
        """Whether one of `actions` was pressed on the incident and is held here."""
        return any(
            p.incident_id == incident_id and p.action in actions for p in self._presses.values()
        )

    async def write_back_presses(self) -> None:
        """Record the presses held here, oldest first, until the store refuses one."""
        async with self._writing:
            await self._presses.write_back(self._write_press)

    async def _write_press(self, _: int, press: Press) -> None:
        await self.store.record_click(
            press.incident_id, press.action, press.user, press.at, press.mention_id
        )
        log.info("feedback.recorded", action=press.action, incident=press.incident_id)

    async def save(self, incident_id: str, channel: str, ts: str, route: str) -> None:
        """The incident's message is this one, posted for `route` (its posting mark goes, as
        the store's does)."""
        self._marks.discard(incident_id)
        await self._record(incident_id, (channel, ts, route, datetime.now(UTC)))

    async def forget(self, incident_id: str) -> None:
        """The incident's message is let go (deleted in Slack, or left for another route)."""
        await self._record(incident_id, None)

    async def mark_posting(self, key: str) -> datetime | None:
        """Note that a post is under way (see the store's `mark_posting`); the time of an
        earlier attempt, if one was noted (here, or in the store)."""
        if (earlier := self._marks.get(key)) is not None:
            return earlier
        try:
            earlier = await self.store.mark_posting(key, self.notifier)
        except StoreError as exc:
            log.warning(
                "slack.posting_unmarked",
                key=key,
                error=str(exc),
                effect="posted all the same; a crash just after it may post it twice",
            )
            self._marks.put(key, datetime.now(UTC))
            return None
        async with self._writing:
            await self._unrecorded.write_back(self._write_back)
        return earlier

    async def _record(self, incident_id: str, message: _Message | None) -> None:
        """The incident's message is `message` (None: none), in the store or, when it cannot
        take it, here."""
        async with self._writing:
            try:
                await self._write(incident_id, message)
            except StoreError as exc:
                log.error(
                    "slack.message_unrecorded",
                    incident=incident_id,
                    error=str(exc),
                    effect="remembered until the store can take it: the incident's later pages "
                    "edit its message all the same (a restart before then posts a new one)",
                )
                self._unrecorded.put(incident_id, message)
                return
            self._unrecorded.discard(incident_id)
            await self._unrecorded.write_back(self._write_back)

    async def _write_back(self, incident_id: str, message: _Message | None) -> None:
        await self._write(incident_id, message)
        log.info("slack.message_recorded", incident=incident_id)

    async def _write(self, incident_id: str, message: _Message | None) -> None:
        """Write an incident's message (None: none) to the store."""
        if message is None:
            await self.store.forget_message(incident_id, self.notifier)
        else:
            await self.store.save_message(incident_id, self.notifier, *message)
