"""The way out: every page is written to the outbox, then each notifier's sender drains it.

A page is stored before any attempt to send it and logged as sent only after the notifier
succeeded (Alertmanager's rule), so a crash can repeat a page but never lose one, and a page
already sent is not sent again. Each notifier has one sender that sends its pages in order; a
failed send is retried by the rules of `crisiswatch/retry.py` (the service's `Retry-After`, else
exponential back-off with jitter) while later pages wait their turn; a permanent error gives
that page up. When the service refuses the notifier's credentials (`Unauthorized`: a revoked
token), every page waits: the first in line is tried again after minutes (at most
`UNAUTHORIZED_CAP`), the problem is logged as an error once, and once the credentials are fixed
(a restart reads new secrets) the queued pages go out in order.

When the store cannot be read (locked, an I/O error), a sender waits with back-off and reads
again. When it cannot record a page the notifier delivered (a full disk), the page is remembered
here as delivered (by its outbox number, at most `UNRECORDED_KEPT` a notifier) and not sent
again, while the pages queued after it go on (until `UNRECORDED_KEPT` wait so: then the rest
wait in the outbox): recording it is tried again before each later page and, when none comes,
with back-off, until the store works again (a restart before then may send it once more). A
page given up that the store cannot mark so is set aside the same way, not taken again.
When the outbox cannot take a page at all, the page waits in memory (at most `SPILLED_KEPT`) and
its senders send it after the outbox's pages, tried again by the same rules; while any waits so,
later pages wait behind it in memory too, so they still go in order. They are put in the outbox,
in order, as soon as the store takes pages again (at the next page, or at a stop).

Before a page is queued it passes the stages of `stages.py`: a silenced page is dropped (and
logged), and a page in its route's quiet hours is held for the notifiers that page people. A
held page that a newer page of its incident overtook (one severe enough to go at once) is not
sent when it comes due: it is marked superseded and logged.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from functools import partial

import structlog

from crisiswatch.config import LiveSettings
from crisiswatch.domain import Incident, Page
from crisiswatch.notify import Notifier, PermanentError, RetryLater, Unauthorized
from crisiswatch.notify.codec import dump_page, load_page
from crisiswatch.notify.held import Held
from crisiswatch.notify.stages import quiet_until, silenced_by
from crisiswatch.retry import Backoff
from crisiswatch.store import OutboxItem, Store, StoreError, page_key

log = structlog.get_logger(__name__)
Sleep = Callable[[float], Awaitable[None]]
UNAUTHORIZED_FIRST = 60.0  # seconds before trying refused credentials again, doubling …
UNAUTHORIZED_CAP = 900.0  # … up to this
UNRECORDED_KEPT = 10_000  # per notifier: pages done with whose outcome the store could not record
BROKEN_TRIES = 3  # a page failing this often with a programming error is given up
SPILLED_KEPT = 5_000  # pages the outbox could not take, waiting in memory to be sent
SENT_KEPT = 10_000  # per notifier: incidents whose newest page sent is remembered here
UNSAVED_KEPT = 10_000  # incidents the store could not save, held until it can


class Dispatcher:
    """Queues pages in the store and sends them; `start()` runs one sender per notifier.

    Without started senders (tools and tests), `dispatch` sends what is queued at once, one
    attempt each, and leaves what failed in the outbox for the next call.
    """

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        store: Store,
        *,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        live: LiveSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.notifiers = list(notifiers)
        self.store = store
        self.live = live  # routes' quiet hours, read per page (a reload swaps them)
        self.silenced = 0
        self._clock = clock
        self.sent = 0
        self.failed = 0
        self._sleep = sleep
        self._rng = rng
        self._wake = {n.name: asyncio.Event() for n in self.notifiers}
        self._refused = {  # per notifier: waits while its credentials are refused
            n.name: Backoff(
                base=UNAUTHORIZED_FIRST, cap=UNAUTHORIZED_CAP, floor=UNAUTHORIZED_FIRST, rand=rng
            )
            for n in self.notifiers
        }
        self._refusal: dict[str, str] = {}  # notifier → the refusal logged, until a page goes
        # per notifier, by outbox number: what the store could not record of the pages it is
        # done with (delivered, or given up), tried again until it can
        self._unrecorded: dict[str, dict[int, _Outcome]] = {n.name: {} for n in self.notifiers}
        self._uncounted: dict[int, int] = {}  # by outbox number: failed tries not recorded
        self._recording = {n.name: Backoff(rand=rng) for n in self.notifiers}  # … tried again
        self._spilled: deque[_Spilled] = deque()  # pages the outbox could not take, in order
        self._unsaved: Held[str, Incident] = Held(UNSAVED_KEPT)  # the store could not save
        # per notifier, incident -> the time of its newest page sent: held pages older than it
        # are not sent (the store knows it too, unless it could not record it)
        self._sent_at: dict[str, Held[str, datetime]] = {
            n.name: Held(SENT_KEPT) for n in self.notifiers
        }
        self._senders: list[asyncio.Task[None]] = []
        self._closing = False

    async def dispatch(self, page: Page) -> None:
        await self._save_incident(page)
        now = self._clock()
        try:
            silences = await self.store.silences(active_at=now)
            announced = bool(silences) and (
                self._announced_here(page.incident.id)
                or await self.store.announced(page.incident.id)
            )
            silence = silenced_by(page, silences, now, announced=announced)
        except StoreError as exc:  # cannot read silences: page rather than stay quiet
            log.error("silences.unreadable", error=str(exc))
            silence = None
        if silence is not None:
            self.silenced += 1
            log.info("page.silenced", page=page_key(page), silence=silence.id)
            return
        names = [n.name for n in self.notifiers]
        route = self.live.current.routes.get(page.incident.route) if self.live else None
        until = quiet_until(page, route, now)
        held = {n.name: until for n in self.notifiers if until and _pages_people(n)}
        if held:
            log.info("page.held_for_quiet_hours", page=page_key(page), until=str(until))
            page = replace(page, held_until=until)  # the page says so when it goes
        try:
            encoded = dump_page(page)
        except (TypeError, ValueError) as exc:  # a bug of ours: lose this page, not the daemon
            self.failed += 1
            log.error("page.unencodable", page=page_key(page), error=repr(exc))
            return
        if self._spilled and not await self._unspill():  # this one goes after those in memory
            self._spill(page, encoded, names, held)
        else:
            try:
                if not await self.store.enqueue(page, encoded, names, held):
                    log.info("page.already_sent", page=page_key(page))
            except StoreError as exc:  # no outbox: keep it here rather than lose it
                log.error(
                    "page.unqueued",
                    page=page_key(page),
                    error=str(exc),
                    effect="kept in memory and sent in order; lost if the daemon stops "
                    "before it goes and the store still cannot take it",
                )
                self._spill(page, encoded, names, held)
        if self._senders:
            for wake in self._wake.values():
                wake.set()
        else:
            await self.flush()

    @property
    def in_memory(self) -> int:
        """Pages waiting in memory because the outbox could not take them."""
        return len(self._spilled)

    async def flush(self) -> None:
        """Send what each notifier has queued, one attempt per page, stopping at a failure."""
        for notifier in self.notifiers:
            await self._record_outcomes(notifier.name)
            while item := await self._next(notifier.name, self._clock()):
                if not (await self._attempt(notifier, item))[0]:
                    self.failed += 1
                    break

    def start(self) -> None:
        """Run one sender per notifier until `close()`."""
        self._closing = False
        self._senders = [
            asyncio.create_task(self._drain(n), name=f"sender:{n.name}") for n in self.notifiers
        ]

    async def close(self, deadline: float) -> None:
        """Let the senders empty their outboxes for up to `deadline` seconds, then stop them."""
        self._closing = True
        for wake in self._wake.values():
            wake.set()
        senders, self._senders = self._senders, []
        try:
            async with asyncio.timeout(deadline):
                await asyncio.gather(*senders)
        except TimeoutError:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
        if self._spilled and not await self._unspill():
            self.failed += len(self._spilled)
            log.error("pages.lost", pages=len(self._spilled),
                      error="the state store still cannot be written",
                      effect="pages the outbox could not take were not sent before the stop, "
                      "and the store still cannot take them")  # fmt: skip
            self._spilled.clear()
        for notifier in self.notifiers:
            try:
                left = await self.store.pending(notifier.name)
            except StoreError as exc:
                log.error("outbox.unreadable", notifier=notifier.name, error=str(exc))
                continue
            left -= len(self._unrecorded[notifier.name])  # delivered, only not recorded
            if left > 0:
                self.failed += left
                log.warning("pages.left_queued", notifier=notifier.name, pages=left)

    async def _drain(self, notifier: Notifier) -> None:
        wake = self._wake[notifier.name]
        backoff = Backoff(rand=self._rng)
        unreadable = Backoff(rand=self._rng)  # while the outbox cannot be read
        unrecorded = self._unrecorded[notifier.name]
        while True:
            wake.clear()
            await self._record_outcomes(notifier.name)
            try:
                now = self._clock()
                held = _earliest(await self.store.next_held(notifier.name, now),
                                 self._spilled_due(notifier.name, now))  # fmt: skip
                # last, so nothing waits between taking a page from memory and sending it
                # (`_unspill` would put it in the outbox meanwhile, to be sent twice)
                item = await self._next(notifier.name, now)
            except StoreError as exc:  # locked, an I/O error: read again after a while
                pause = unreadable.next()
                log.error(
                    "outbox.unreadable",
                    notifier=notifier.name,
                    error=str(exc),
                    retry_in=round(pause, 3),
                )
                await self._sleep(pause)
                continue
            unreadable.reset()
            if item is None:
                if self._closing:
                    return
                waits = [(held - self._clock()).total_seconds()] if held else []
                if unrecorded:
                    waits.append(self._recording[notifier.name].next())
                try:
                    async with asyncio.timeout(max(min(waits), 0.0) if waits else None):
                        await wake.wait()
                except TimeoutError:
                    pass  # a held page has come due, or it is time to try recording again
                continue
            done, told = await self._attempt(notifier, item)
            if done:
                backoff.reset()
                continue
            await self._sleep(backoff.next(told))

    async def _next(self, notifier: str, now: datetime) -> OutboxItem | _Spilled | None:
        """The next page to send: the outbox's, past those done with whose outcome the store has
        not recorded, then those waiting in memory (newer: while any waits there, pages are not
        put in the outbox). None while `UNRECORDED_KEPT` of those wait (a long full disk: the
        pages wait, as forgetting one that was delivered would send it again, and again)."""
        unrecorded = self._unrecorded[notifier]
        if len(unrecorded) >= UNRECORDED_KEPT:
            return None
        item = await self.store.next_pending(notifier, now, unrecorded)
        return item or self._next_spilled(notifier, now)

    async def _attempt(
        self, notifier: Notifier, item: OutboxItem | _Spilled
    ) -> tuple[bool, float | None]:
        """Send one queued page: (True, None) when it is done with (sent and recorded, given up
        or superseded; delivered but not recorded is done with too), else (False, the wait the
        service asked for, if it did, or the long wait while it refuses the notifier's
        credentials). A row that no longer reads as a page (written by a later version, say) is
        given up with an error, not left to stop the sender."""
        if isinstance(item, _Spilled):
            return await self._attempt_spilled(notifier, item)
        try:
            page = load_page(item.page)
        except (ValueError, KeyError, TypeError) as exc:  # orjson's decode error is a ValueError
            self.failed += 1
            log.error("page.undecodable", seq=item.seq, notifier=notifier.name, error=repr(exc))
            await self._record_failure(item, notifier.name, f"undecodable: {exc!r}", final=True)
            return True, None
        if await self._superseded(item, page, notifier.name):
            return True, None
        attempt = item.attempts + self._uncounted.get(item.seq, 0) + 1
        tried, error, told = await self._try(notifier, page, attempt)
        if tried is _Tried.SENT:
            self._uncounted.pop(item.seq, None)
            await self._record_sent(item.seq, page, notifier.name)
            return True, None
        final = tried is _Tried.GIVEN_UP
        await self._record_failure(item, notifier.name, error, final=final)
        return final, told

    async def _attempt_spilled(
        self, notifier: Notifier, item: _Spilled
    ) -> tuple[bool, float | None]:
        """`_attempt` for a page waiting in memory: done with, it leaves memory once every
        notifier is done with it (nothing is recorded: the store could not take it)."""
        name = notifier.name
        newer = self._sent_at[name].get(item.page.incident.id)
        if newer is not None and newer > item.page.at:  # held meanwhile (see `_superseded`)
            _log_superseded(item.page, name)
            tried, told = _Tried.GIVEN_UP, None
        else:
            attempt = item.tries.get(name, 0) + 1
            item.sending.add(name)  # not to be put in the outbox meanwhile (`_unspill`)
            try:
                tried, _, told = await self._try(notifier, item.page, attempt)
            finally:
                item.sending.discard(name)
            if tried is _Tried.AGAIN:
                item.tries[name] = attempt
                return False, told
        item.waiting.discard(name)
        if not item.waiting and item in self._spilled:  # (`_unspill` may have taken it)
            self._spilled.remove(item)
        return True, None

    async def _try(
        self, notifier: Notifier, page: Page, attempt: int
    ) -> tuple[_Tried, str, float | None]:
        """Send a page once (the `attempt`-th time), log and count how it went: whether it was
        sent, given up or is to be tried again, the error, and the wait the service asked for
        (or the long wait while it refuses the notifier's credentials)."""
        key = page_key(page)
        try:
            await notifier.send(page)
        except asyncio.CancelledError:
            raise
        except PermanentError as exc:
            self.failed += 1
            log.error("page.given_up", page=key, notifier=notifier.name, error=str(exc))
            return _Tried.GIVEN_UP, str(exc), None
        except Unauthorized as exc:
            self._refused_now(notifier.name, str(exc))
            return _Tried.AGAIN, str(exc), self._refused[notifier.name].next()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if _ours(exc) and attempt >= BROKEN_TRIES:
                self.failed += 1
                log.error("page.given_up", page=key, notifier=notifier.name, exc_info=True,
                          reason=f"failed {BROKEN_TRIES} times with a programming error (a bug "
                          "of crisiswatch's, not the service's): it would block every later "
                          "page")  # fmt: skip
                return _Tried.GIVEN_UP, error, None
            told = exc.retry_after if isinstance(exc, RetryLater) else None
            log.warning(
                "page.retry",
                page=key,
                notifier=notifier.name,
                attempt=attempt,
                error=error,
            )
            return _Tried.AGAIN, error, told
        self.sent += 1
        log.info("page.sent", page=key, notifier=notifier.name, kind=page.kind.value)
        self._accepted(notifier.name)
        sent_at = self._sent_at[notifier.name]
        sent_at.put(page.incident.id, max(page.at, sent_at.get(page.incident.id) or page.at))
        return _Tried.SENT, "", None

    def _spill(
        self, page: Page, encoded: bytes, notifiers: list[str], held: dict[str, datetime]
    ) -> None:
        """Keep a page the outbox could not take in memory, after those already there (once
        `SPILLED_KEPT` wait, it is lost, with an error: memory stays bounded)."""
        if len(self._spilled) >= SPILLED_KEPT:
            self.failed += 1
            log.error(
                "page.lost",
                page=page_key(page),
                error=f"the outbox cannot take pages and {SPILLED_KEPT} wait in memory",
            )
            return
        self._spilled.append(_Spilled(page, encoded, held, set(notifiers)))

    def _announced_here(self, incident_id: str) -> bool:
        """Whether a page of the incident went from memory or waits there (the store's
        `announced` knows only the outbox's)."""
        return any(incident_id in sent for sent in self._sent_at.values()) or any(
            item.page.incident.id == incident_id for item in self._spilled
        )

    def _next_spilled(self, notifier: str, now: datetime) -> _Spilled | None:
        """The oldest page in memory this notifier is to send now (past those held for it);
        none while one before it is being put in the outbox."""
        for item in self._spilled:
            if item.moving:
                return None
            if notifier in item.waiting and item.held.get(notifier, now) <= now:
                return item
        return None

    def _spilled_due(self, notifier: str, now: datetime) -> datetime | None:
        """When the first page in memory held for this notifier (quiet hours) comes due."""
        return min(
            (item.held[notifier] for item in self._spilled
             if notifier in item.waiting and item.held.get(notifier, now) > now),
            default=None,
        )  # fmt: skip

    async def _unspill(self) -> bool:
        """Put the pages waiting in memory in the outbox, in order; whether all could be. Not
        when the store still cannot take them, nor past one a notifier is sending right now
        (should that send fail, the pages after it in the outbox would overtake it): those
        left stay in memory."""
        moved = 0
        try:
            for item in list(self._spilled):
                if item.sending:
                    return False
                held = {name: due for name, due in item.held.items() if name in item.waiting}
                item.moving = True  # no sender takes it, nor a page after it, meanwhile
                try:
                    await self.store.enqueue(item.page, item.encoded, sorted(item.waiting), held)
                except StoreError:
                    return False
                finally:
                    item.moving = False
                self._spilled.remove(item)
                moved += 1
            return True
        finally:
            if moved:
                log.info("pages.queued_from_memory", pages=moved,
                         effect="the outbox takes them again")  # fmt: skip

    async def _record_sent(self, seq: int, page: Page, notifier: str) -> None:
        """Log a delivered page as sent; when the store cannot (a full disk), remember it as
        delivered, so that it is not sent again and later pages are not held up behind it."""
        try:
            await self.store.outbox_sent(seq, page, notifier)
        except StoreError as exc:
            log.error(
                "page.unrecorded",
                page=page_key(page),
                notifier=notifier,
                error=str(exc),
                effect="not sent again; later pages go on; recording it is tried again",
            )
            record = partial(self.store.outbox_sent, seq, page, notifier)
            self._unrecorded[notifier][seq] = _Outcome(page_key(page), record)

    async def _record_outcomes(self, notifier: str) -> None:
        """Try again to record what the store could not record of the pages done with (sent,
        or given up), oldest first, until one still cannot be."""
        unrecorded = self._unrecorded[notifier]
        while unrecorded:
            seq, outcome = next(iter(unrecorded.items()))
            try:
                await outcome.record()
            except StoreError:
                return
            del unrecorded[seq]
            log.info("page.recorded", page=outcome.page, notifier=notifier)
        self._recording[notifier].reset()

    async def _superseded(self, item: OutboxItem, page: Page, notifier: str) -> bool:
        """Whether the page is older than one the notifier already sent about its incident (it
        was held by quiet hours while newer ones went): then it is not sent, since it would show
        older state over newer (Slack's living message), and is marked done."""
        newest = self._sent_at[notifier].get(page.incident.id)
        mark = partial(self.store.supersede, item.seq, page, notifier, newest)
        try:
            stale = await mark()
        except StoreError as exc:
            if newest is None or newest <= page.at:  # cannot tell: send rather than stay quiet
                log.error("outbox.unreadable", notifier=notifier, error=str(exc))
                return False
            stale = True  # known here: set aside, and marked once the store can take it
            self._unrecorded[notifier][item.seq] = _Outcome(f"outbox #{item.seq}", mark)
        if stale:
            self._uncounted.pop(item.seq, None)  # done with: its tries need counting no more
            _log_superseded(page, notifier)
        return stale

    def _refused_now(self, notifier: str, error: str) -> None:
        """Log once per problem (not at every try) that a notifier's credentials are refused."""
        if self._refusal.get(notifier) != error:
            self._refusal[notifier] = error
            log.error(
                "notifier.unauthorized",
                notifier=notifier,
                error=error,
                effect="pages stay queued and are tried again every few minutes; "
                "fix the credentials and restart",
            )

    def _accepted(self, notifier: str) -> None:
        """A page went: a refusal logged before is over."""
        self._refused[notifier].reset()
        if self._refusal.pop(notifier, None) is not None:
            log.info("notifier.authorized", notifier=notifier, effect="queued pages go out")

    async def _record_failure(
        self, item: OutboxItem, notifier: str, error: str, *, final: bool
    ) -> None:
        """Count a failed attempt; `final` gives the page up. A page given up that the store
        cannot mark so is set aside as done with, like one delivered (left pending, it would
        be taken, sent and given up again at once, for as long as the disk is full)."""
        record = partial(self.store.outbox_attempt_failed, item.seq, error, final=final)
        try:
            await record()
        except StoreError as exc:
            log.error("outbox.unrecorded", seq=item.seq, error=str(exc))
            if final:
                self._unrecorded[notifier][item.seq] = _Outcome(f"outbox #{item.seq}", record)
            else:  # counted here, so a page that keeps failing is still given up in the end
                self._uncounted[item.seq] = self._uncounted.get(item.seq, 0) + 1
        if final:
            self._uncounted.pop(item.seq, None)

    async def _save_incident(self, page: Page) -> None:
        """Save the page's incident; one the store cannot take (a full disk) is kept here, the
        newest of each, and saved at the next save that works (else, resolved meanwhile, it
        would stay firing in the store, and be escalated)."""
        incident = page.incident
        self._unsaved.discard(incident.id)  # this one is newer
        try:
            await self.store.save_incident(incident)
        except StoreError as exc:
            log.error("incident.unsaved", incident=incident.id, error=str(exc))
            self._unsaved.put(incident.id, incident)
            return
        await self._unsaved.write_back(lambda _, held: self.store.save_incident(held))


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the store could not record yet about a page done with: sent, or given up."""

    page: str  # which, for the log
    record: Callable[[], Awaitable[object]]


class _Tried(Enum):
    """How one try to send a page went."""

    SENT = "sent"
    GIVEN_UP = "given up"
    AGAIN = "to be tried again"


@dataclass(eq=False, slots=True)
class _Spilled:
    """A page the outbox could not take (a full disk), waiting in memory to be sent."""

    page: Page
    encoded: bytes  # as the outbox stores it, for the outbox at a stop
    held: dict[str, datetime]  # notifier -> not before (quiet hours)
    waiting: set[str]  # the notifiers still to send it (or give it up)
    tries: dict[str, int] = field(default_factory=dict)  # notifier -> failed tries
    sending: set[str] = field(default_factory=set)  # the notifiers sending it right now
    moving: bool = False  # being put in the outbox


def _log_superseded(page: Page, notifier: str) -> None:
    log.info(
        "page.superseded",
        page=page_key(page),
        notifier=notifier,
        effect="not sent: a newer page of the incident went out while it was held",
    )


def _earliest(*moments: datetime | None) -> datetime | None:
    return min((m for m in moments if m is not None), default=None)


def _ours(exc: Exception) -> bool:
    """Whether an error is a programming error (rendering a page its data breaks), which no
    retry cures, rather than the service's or the network's, which pass."""
    return isinstance(exc, TypeError | AttributeError | LookupError | ArithmeticError)


def _pages_people(notifier: Notifier) -> bool:
    """Quiet hours hold the pages of notifiers that wake people (Slack), not the console."""
    return bool(getattr(notifier, "pages_people", False))
