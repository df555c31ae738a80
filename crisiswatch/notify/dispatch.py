"""The way out: every page passes the notification log, is sent, then is recorded as sent.

The log is written only after a successful send and survives restarts (Alertmanager's rule), so
a crash can repeat a page but never lose one, and a page already sent is not sent again.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from crisiswatch.domain import Page
from crisiswatch.notify import Notifier
from crisiswatch.store import Store, StoreError, page_key

log = structlog.get_logger(__name__)


class Dispatcher:
    def __init__(self, notifiers: Sequence[Notifier], store: Store) -> None:
        self.notifiers = list(notifiers)
        self.store = store
        self.sent = 0
        self.failed = 0

    async def dispatch(self, page: Page) -> None:
        await self._save_incident(page)
        key = page_key(page)
        for notifier in self.notifiers:
            if await self.store.was_sent(key, notifier.name):
                log.info("page.already_sent", page=key, notifier=notifier.name)
                continue
            try:
                await notifier.send(page)
            except Exception:
                self.failed += 1
                log.exception("page.failed", page=key, notifier=notifier.name)
                continue
            self.sent += 1
            log.info("page.sent", page=key, notifier=notifier.name, kind=page.kind.value)
            try:
                await self.store.record_sent(page, notifier.name)
            except StoreError as exc:
                log.error("page.unrecorded", page=key, notifier=notifier.name, error=str(exc))

    async def _save_incident(self, page: Page) -> None:
        try:
            await self.store.save_incident(page.incident)
        except StoreError as exc:
            log.error("incident.unsaved", incident=page.incident.id, error=str(exc))
