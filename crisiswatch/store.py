"""State in one SQLite file (WAL): seen ids, incidents, the notification log and outbox, the
Slack messages sent per incident, and the feedback people gave.

What nothing needs any more (pages long done with, resolved incidents, learned feedback, ended
silences) is deleted by `prune`, which the daemon runs every few hours, so the file stays flat;
the write-ahead log is cut back to `WAL_KEPT` once checkpointed, whatever one write grew it to.

The interface is narrow and async so that a shared store (PostgreSQL) can replace it later. Each
call runs in a worker thread, one at a time; a write is one transaction, so a crash leaves
either the whole change or none of it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson

from crisiswatch.config import make_state_dir
from crisiswatch.domain import Incident, Page, Silence

SCHEMA_VERSION = 2  # 2: messages know their route (a version 1 store is migrated at open)
CLICK_KEYS_KEPT = timedelta(days=1)  # Slack redelivers and a replay is signed within minutes
SEEN_CHUNK = 50_000  # seen ids read per query when the dedupe window is restored
WAL_KEPT = 64 * 1024 * 1024  # bytes of write-ahead log left on disk (1 M ids' flush: 200 MB)
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, key TEXT NOT NULL, status TEXT NOT NULL, brand TEXT NOT NULL,
    severity TEXT NOT NULL, stage TEXT NOT NULL, started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, resolved_at TEXT, summary TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    page_key TEXT NOT NULL, incident_id TEXT NOT NULL, kind TEXT NOT NULL,
    at TEXT NOT NULL, sent_at TEXT NOT NULL, notifier TEXT NOT NULL,
    PRIMARY KEY (page_key, notifier)
);
CREATE INDEX IF NOT EXISTS notifications_incident ON notifications (incident_id, notifier);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, notifier TEXT NOT NULL, page_key TEXT NOT NULL,
    incident_id TEXT NOT NULL, kind TEXT NOT NULL, page BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
    queued_at TEXT NOT NULL, done_at TEXT, not_before TEXT, UNIQUE (notifier, page_key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (notifier, status, seq);
CREATE INDEX IF NOT EXISTS outbox_incident ON outbox (incident_id);
CREATE TABLE IF NOT EXISTS messages (
    incident_id TEXT NOT NULL, notifier TEXT NOT NULL, channel TEXT NOT NULL, ts TEXT NOT NULL,
    posted_at TEXT NOT NULL, route TEXT, PRIMARY KEY (incident_id, notifier)
);
CREATE TABLE IF NOT EXISTS posting (
    incident_id TEXT NOT NULL, notifier TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (incident_id, notifier)
);
CREATE TABLE IF NOT EXISTS samples (
    incident_id TEXT NOT NULL, mention_id TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (incident_id, mention_id)
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, text TEXT NOT NULL,
    label TEXT NOT NULL, given_by TEXT NOT NULL, applied INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, starts_at TEXT NOT NULL, ends_at TEXT NOT NULL,
    created_by TEXT NOT NULL, comment TEXT NOT NULL,
    brand TEXT, rule TEXT, incident TEXT
);
-- what was done about an incident's page: each button press (its action id) and, by the user
-- 'crisiswatch', each escalation (notify/feedback.py); queries below name actions by value, so an
-- action's name is part of the schema (renaming one needs a migration)
CREATE TABLE IF NOT EXISTS clicks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, incident_id TEXT NOT NULL,
    action TEXT NOT NULL, user TEXT NOT NULL, mention_id TEXT
);
CREATE INDEX IF NOT EXISTS clicks_incident ON clicks (incident_id);
-- the presses recorded lately, by Slack's action, user and action time (see record_click)
CREATE TABLE IF NOT EXISTS click_keys (key TEXT PRIMARY KEY, at TEXT NOT NULL);
-- live sources: where each stream stopped (sources/cursors.py)
CREATE TABLE IF NOT EXISTS cursors (
    source TEXT NOT NULL, stream TEXT NOT NULL, value TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (source, stream)
);
"""


class StoreError(RuntimeError):
    """The state store cannot be opened or written; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A page waiting in the outbox for one notifier."""

    seq: int
    page: bytes  # the page as `notify.codec.dump_page` wrote it
    attempts: int


def page_key(page: Page) -> str:
    """The identity of a page: sending it twice is a duplicate."""
    return f"{page.incident.id}|{page.kind.value}|{page.at.isoformat()}"


class Store:
    """The daemon's state; open with `await Store.open(path)`, close with `await close()`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        return cls(await asyncio.to_thread(_connect, path))

    async def close(self) -> None:
        async with self._lock:
            await to_the_end(self._db.close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            return await to_the_end(partial(_transaction, self._db, work))

    async def mark_seen(self, ids: Sequence[str], at: datetime, *, keep: int | None = None) -> None:
        """Remember ids as seen; with `keep`, forget all but about the newest `keep` (only
        those restore the dedupe window, and a service runs for months)."""
        stamp = at.isoformat()

        def write(db: sqlite3.Connection) -> None:
            rows = ((mention_id, stamp) for mention_id in ids)  # not a million tuples at once
            db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", rows)
            if keep is None:
                return
            # two subqueries: each is one index probe, where MIN and MAX together scan
            low, high = db.execute(
                "SELECT (SELECT MIN(rowid) FROM seen), (SELECT MAX(rowid) FROM seen)"
            ).fetchone()
            if high is not None and high - low >= keep + keep // 10:  # prune in batches
                db.execute("DELETE FROM seen WHERE rowid <= ?", (high - keep,))

        if ids:
            await self._run(write)

    async def recent_seen(self, limit: int) -> list[str]:
        """The most recently seen ids, oldest first (for tools and tests: the daemon restores
        its dedupe window chunk by chunk with `recent_seen_chunks`)."""
        return [
            mention_id async for chunk in self.recent_seen_chunks(limit) for mention_id in chunk
        ]

    async def recent_seen_chunks(
        self, limit: int, size: int = SEEN_CHUNK
    ) -> AsyncIterator[list[str]]:
        """The most recently seen ids (at most `limit`), oldest first, `size` at a time, so that
        a million ids (about 150 MB as Python strings) are never in memory at once."""
        if limit <= 0:
            return
        bounds = (
            "SELECT (SELECT rowid FROM seen ORDER BY rowid DESC LIMIT 1 OFFSET ?),"
            " (SELECT MAX(rowid) FROM seen)"
        )
        first, last = await self._run(lambda db: db.execute(bounds, (limit - 1,)).fetchone())
        if last is None:
            return
        after = first - 1 if first is not None else -1  # fewer than `limit`: all of them
        query = "SELECT rowid, id FROM seen WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
        while rows := await self._run(partial(_fetch, query, (after, last, size))):
            after = rows[-1][0]  # ids marked meanwhile (after `last`) are not read
            yield [row[1] for row in rows]

    async def save_incident(self, incident: Incident) -> None:
        detail = orjson.dumps(
            {
                "rules": incident.rules,
                "topics": incident.topics,
                "sources": incident.sources,
                "reasons": incident.reasons,
                "peak_count": incident.peak_count,
                "route": incident.route,
            }
        ).decode()
        row = (
            incident.id,
            incident.key,
            incident.status.value,
            incident.brand,
            incident.severity.label,
            incident.stage.label,
            incident.started_at.isoformat(),
            incident.updated_at.isoformat(),
            incident.resolved_at.isoformat() if incident.resolved_at else None,
            incident.summary,
            detail,
        )
        sql = "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        await self._run(lambda db: db.execute(sql, row))

    async def incidents(self) -> list[dict[str, str | None]]:
        """Every incident recorded, oldest first, as plain rows (for reports and tests)."""

        def read(db: sqlite3.Connection) -> list[dict[str, str | None]]:
            cursor = db.execute("SELECT * FROM incidents ORDER BY started_at, id")
            return _dict_rows(cursor)

        return await self._run(read)

    async def firing(self) -> list[tuple[str, bytes]]:
        """(id, its newest queued page) of every incident recorded as firing that has a page."""
        sql = """
            SELECT i.id, (SELECT page FROM outbox o WHERE o.incident_id = i.id
                          ORDER BY seq DESC LIMIT 1)
            FROM incidents i WHERE i.status = 'firing' ORDER BY i.started_at, i.id
        """
        rows = await self._run(lambda db: db.execute(sql).fetchall())
        return [(str(row[0]), bytes(row[1])) for row in rows if row[1] is not None]

    async def announced(self, incident_id: str) -> bool:
        """Whether a page of the incident was queued for a notifier (sent, or held by quiet
        hours to go later): its people know of it, or will."""
        sql = "SELECT 1 FROM outbox WHERE incident_id = ? LIMIT 1"
        return await self._run(lambda db: db.execute(sql, (incident_id,)).fetchone() is not None)

    async def enqueue(
        self,
        page: Page,
        payload: bytes,
        notifiers: Sequence[str],
        not_before: Mapping[str, datetime] | None = None,
    ) -> int:
        """Put a page in the outbox of each notifier that has not sent it; return how many.

        `not_before` holds the page back for some notifiers (quiet hours) until that time.
        """
        key = page_key(page)
        now = datetime.now(UTC).isoformat()
        held = {name: moment.isoformat() for name, moment in (not_before or {}).items()}
        insert = (
            "INSERT OR IGNORE INTO outbox"
            " (notifier, page_key, incident_id, kind, page, queued_at, not_before)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )

        def write(db: sqlite3.Connection) -> int:
            added = 0
            for notifier in notifiers:
                if db.execute(_WAS_SENT, (key, notifier)).fetchone() is None:
                    row = (
                        notifier,
                        key,
                        page.incident.id,
                        page.kind.value,
                        payload,
                        now,
                        held.get(notifier),
                    )
                    added += db.execute(insert, row).rowcount
            return added

        return await self._run(write)

    async def next_pending(
        self, notifier: str, now: datetime | None = None, skip: Collection[int] = ()
    ) -> OutboxItem | None:
        """The oldest page due to send for `notifier` (held pages wait for their time), other
        than those numbered in `skip` (delivered, but not yet recorded as sent)."""
        due = (
            "FROM outbox WHERE notifier = ? AND status = 'pending'"
            " AND (not_before IS NULL OR not_before <= ?) ORDER BY seq LIMIT ?"
        )
        moment = (now or datetime.now(UTC)).isoformat()

        def read(db: sqlite3.Connection) -> Any:
            if not skip:
                return db.execute(
                    f"SELECT seq, page, attempts {due}", (notifier, moment, 1)
                ).fetchone()
            numbers = db.execute(f"SELECT seq {due}", (notifier, moment, len(skip) + 1))
            seq = next((n for (n,) in numbers if n not in skip), None)
            if seq is None:
                return None
            sql = "SELECT seq, page, attempts FROM outbox WHERE seq = ?"
            return db.execute(sql, (seq,)).fetchone()

        row = await self._run(read)
        return None if row is None else OutboxItem(row[0], bytes(row[1]), row[2])

    async def next_held(self, notifier: str, now: datetime | None = None) -> datetime | None:
        """When the earliest page held back for `notifier` that is not yet due becomes due
        (one already due is `next_pending`'s, or delivered and only waiting to be recorded)."""
        sql = (
            "SELECT MIN(not_before) FROM outbox WHERE notifier = ? AND status = 'pending'"
            " AND not_before > ?"
        )
        moment = (now or datetime.now(UTC)).isoformat()
        row = await self._run(lambda db: db.execute(sql, (notifier, moment)).fetchone())
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    async def add_feedback(self, items: Sequence[tuple[str, str]], given_by: str) -> int:
        """Queue labelled texts (`crisiswatch feedback`) for the daemon's sentiment model."""
        now = datetime.now(UTC).isoformat()
        rows = [(now, text, label, given_by) for text, label in items]
        sql = "INSERT INTO feedback (at, text, label, given_by) VALUES (?, ?, ?, ?)"
        await self._run(lambda db: db.executemany(sql, rows))
        return len(rows)

    async def pending_feedback(self, limit: int = 1_000) -> list[tuple[int, str, str]]:
        """Labelled texts not yet learned, oldest first: (seq, text, label)."""
        sql = "SELECT seq, text, label FROM feedback WHERE applied = 0 ORDER BY seq LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (limit,)).fetchall())
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def feedback_applied(self, seqs: Sequence[int]) -> None:
        sql = "UPDATE feedback SET applied = 1 WHERE seq = ?"
        await self._run(lambda db: db.executemany(sql, [(seq,) for seq in seqs]))

    async def add_silence(self, silence: Silence) -> None:
        row = (
            silence.id,
            silence.starts_at.isoformat(),
            silence.ends_at.isoformat(),
            silence.created_by,
            silence.comment,
            silence.brand,
            silence.rule,
            silence.incident,
        )
        sql = "INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        await self._run(lambda db: db.execute(sql, row))

    async def silences(self, active_at: datetime | None = None) -> list[Silence]:
        """Every silence, or those in force at `active_at`, oldest first."""
        sql = "SELECT * FROM silences ORDER BY starts_at, id"
        rows = await self._run(lambda db: db.execute(sql).fetchall())
        found = [
            Silence(
                id=row[0],
                starts_at=datetime.fromisoformat(row[1]),
                ends_at=datetime.fromisoformat(row[2]),
                created_by=row[3],
                comment=row[4],
                brand=row[5],
                rule=row[6],
                incident=row[7],
            )
            for row in rows
        ]
        return found if active_at is None else [s for s in found if s.active(active_at)]

    async def expire_silence(self, silence_id: str, at: datetime) -> bool:
        """End a silence now; False when there is no such silence."""
        sql = "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?"
        stamp = at.isoformat()
        return bool(
            await self._run(lambda db: db.execute(sql, (stamp, silence_id, stamp)).rowcount)
        )

    async def pending(self, notifier: str) -> int:
        sql = "SELECT COUNT(*) FROM outbox WHERE notifier = ? AND status = 'pending'"
        return int(await self._run(lambda db: db.execute(sql, (notifier,)).fetchone()[0]))

    async def outbox_sent(self, seq: int, page: Page, notifier: str) -> None:
        """The outbox page was delivered: mark it and log it, in one transaction."""
        now = datetime.now(UTC).isoformat()
        log_row = _sent_row(page, notifier, now)

        def write(db: sqlite3.Connection) -> None:
            db.execute("UPDATE outbox SET status = 'sent', done_at = ? WHERE seq = ?", (now, seq))
            db.execute(_LOG_SENT, log_row)
            db.execute(_UNMARK, (log_row[0], notifier))

        await self._run(write)

    async def outbox_attempt_failed(self, seq: int, error: str, *, final: bool) -> None:
        """Count a failed attempt; `final` gives the page up (recorded as failed)."""
        now = datetime.now(UTC).isoformat() if final else None
        sql = (
            "UPDATE outbox SET attempts = attempts + 1, error = ?, status = ?, done_at = ?"
            " WHERE seq = ?"
        )
        row = (error[:500], "failed" if final else "pending", now, seq)

        def write(db: sqlite3.Connection) -> None:
            db.execute(sql, row)
            if final:  # never tried again: no retry will look for what it may have posted
                found = db.execute("SELECT page_key, notifier FROM outbox WHERE seq = ?", (seq,))
                db.executemany(_UNMARK, found.fetchall())

        await self._run(write)

    async def supersede(
        self, seq: int, page: Page, notifier: str, newest_sent: datetime | None = None
    ) -> bool:
        """When `notifier` already sent a newer page of the same incident (this one was held by
        quiet hours meanwhile), mark this outbox page superseded, done without being sent, and
        say so; else False. `newest_sent` is the time of the incident's newest page sent, as
        the caller knows it (one the store could not record)."""
        sent = "SELECT at FROM notifications WHERE incident_id = ? AND notifier = ?"
        now = datetime.now(UTC).isoformat()

        def write(db: sqlite3.Connection) -> bool:
            times = db.execute(sent, (page.incident.id, notifier)).fetchall()
            sent_at = [datetime.fromisoformat(at) for (at,) in times]
            if newest_sent is not None:
                sent_at.append(newest_sent)
            if not any(at > page.at for at in sent_at):
                return False
            done = "UPDATE outbox SET status = 'superseded', done_at = ? WHERE seq = ?"
            db.execute(done, (now, seq))
            db.execute(_UNMARK, (page_key(page), notifier))
            return True

        return await self._run(write)

    async def outbox(self) -> list[dict[str, str | int | None]]:
        """Every outbox row without its page, oldest first (for reports and tests)."""

        def read(db: sqlite3.Connection) -> list[dict[str, str | int | None]]:
            cursor = db.execute(
                "SELECT seq, notifier, page_key, incident_id, kind, status, attempts, error"
                " FROM outbox ORDER BY seq"
            )
            return _dict_rows(cursor)

        return await self._run(read)

    async def save_message(
        self,
        incident_id: str,
        notifier: str,
        channel: str,
        ts: str,
        route: str,
        posted_at: datetime | None = None,
    ) -> None:
        """Remember the message that stands for an incident, and the route it was posted for,
        so later pages edit it (or, when the incident moved to another route, leave it);
        posted now, unless `posted_at` says when (escalation counts from it)."""
        sql = (
            "INSERT OR REPLACE INTO messages (incident_id, notifier, channel, ts, posted_at, route)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        at = (posted_at or datetime.now(UTC)).isoformat()
        row = (incident_id, notifier, channel, ts, at, route)

        def write(db: sqlite3.Connection) -> None:
            db.execute(sql, row)
            db.execute(_UNMARK, (incident_id, notifier))

        await self._run(write)

    async def forget_message(self, incident_id: str, notifier: str) -> None:
        """The incident's message is gone (deleted in Slack): the next page posts a new one."""
        sql = "DELETE FROM messages WHERE incident_id = ? AND notifier = ?"
        await self._run(lambda db: db.execute(sql, (incident_id, notifier)))

    async def mark_posting(self, key: str, notifier: str) -> datetime | None:
        """Note that a message is about to be posted (an incident's first message, keyed by the
        incident id, or a page's thread reply, by the page key); when an earlier attempt was
        already noted (it may have reached Slack before a crash), the time it was.

        The note goes once the post is recorded (`save_message`, `outbox_sent`) or given up:
        only a post whose outcome is unknown needs it."""
        now = datetime.now(UTC).isoformat()

        def write(db: sqlite3.Connection) -> datetime | None:
            sql = "INSERT OR IGNORE INTO posting VALUES (?, ?, ?)"  # its incident_id is the key
            if db.execute(sql, (key, notifier, now)).rowcount == 1:
                return None
            query = "SELECT at FROM posting WHERE incident_id = ? AND notifier = ?"
            return datetime.fromisoformat(db.execute(query, (key, notifier)).fetchone()[0])

        return await self._run(write)

    async def message(self, incident_id: str, notifier: str) -> tuple[str, str] | None:
        """(channel, ts) of the incident's message, if one was posted."""
        sql = "SELECT channel, ts FROM messages WHERE incident_id = ? AND notifier = ?"
        row = await self._run(lambda db: db.execute(sql, (incident_id, notifier)).fetchone())
        return None if row is None else (row[0], row[1])

    async def posted_for(self, incident_id: str, notifier: str) -> tuple[str, str | None] | None:
        """(channel, route) of the incident's message, if one was posted; the route is None for
        a message posted before the store recorded routes."""
        sql = "SELECT channel, route FROM messages WHERE incident_id = ? AND notifier = ?"
        row = await self._run(lambda db: db.execute(sql, (incident_id, notifier)).fetchone())
        return None if row is None else (row[0], row[1])

    async def save_samples(self, incident_id: str, samples: Iterable[tuple[str, str]]) -> None:
        """Keep the (mention id, text) of posts shown on a page, for feedback on them."""
        rows = [(incident_id, mention_id, text) for mention_id, text in samples]
        sql = "INSERT OR IGNORE INTO samples VALUES (?, ?, ?)"
        if rows:
            await self._run(lambda db: db.executemany(sql, rows))

    async def sample_text(self, incident_id: str, mention_id: str) -> str | None:
        sql = "SELECT text FROM samples WHERE incident_id = ? AND mention_id = ?"
        row = await self._run(lambda db: db.execute(sql, (incident_id, mention_id)).fetchone())
        return None if row is None else str(row[0])

    async def record_click(
        self,
        incident_id: str,
        action: str,
        user: str,
        at: datetime,
        mention_id: str | None,
        key: str | None = None,
    ) -> int | None:
        """Keep who pressed which button about which incident (or post), and when; return how
        many times that button was pressed on it before. `key` names one press: a press already
        recorded in the last `CLICK_KEYS_KEPT` (Slack redelivered it, or a request was replayed)
        is not recorded again, and None is returned."""
        sql = "INSERT INTO clicks (at, incident_id, action, user, mention_id) VALUES (?,?,?,?,?)"
        row = (at.isoformat(), incident_id, action, user, mention_id)
        before = (
            "SELECT COUNT(*) FROM clicks WHERE incident_id = ? AND action = ? AND mention_id IS ?"
        )

        def write(db: sqlite3.Connection) -> int | None:
            if key is not None:
                db.execute(
                    "DELETE FROM click_keys WHERE at < ?", ((at - CLICK_KEYS_KEPT).isoformat(),)
                )
                insert = "INSERT OR IGNORE INTO click_keys VALUES (?, ?)"
                if db.execute(insert, (key, at.isoformat())).rowcount == 0:
                    return None
            earlier = int(db.execute(before, (incident_id, action, mention_id)).fetchone()[0])
            db.execute(sql, row)
            return earlier

        return await self._run(write)

    async def clicks(self, incident_id: str) -> list[tuple[str, str, str, str | None]]:
        """(at, action, user, mention id) of every click on an incident's page, oldest first."""
        sql = "SELECT at, action, user, mention_id FROM clicks WHERE incident_id = ? ORDER BY seq"
        rows = await self._run(lambda db: db.execute(sql, (incident_id,)).fetchall())
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def acknowledged(self, incident_id: str) -> tuple[str, datetime] | None:
        """(user, when) of the first acknowledgement of an incident, if any."""
        sql = (
            "SELECT user, at FROM clicks WHERE incident_id = ? AND action = 'acknowledge'"
            " ORDER BY seq LIMIT 1"
        )
        row = await self._run(lambda db: db.execute(sql, (incident_id,)).fetchone())
        return None if row is None else (str(row[0]), datetime.fromisoformat(row[1]))

    async def last_sent(self, incident_id: str, notifier: str) -> bytes | None:
        """The newest page about an incident that `notifier` delivered, as the outbox keeps it."""
        sql = (
            "SELECT page FROM outbox WHERE incident_id = ? AND notifier = ? AND status = 'sent'"
            " ORDER BY seq DESC LIMIT 1"
        )
        row = await self._run(lambda db: db.execute(sql, (incident_id, notifier)).fetchone())
        return None if row is None else bytes(row[0])

    async def unacknowledged(self, notifier: str) -> list[tuple[str, str, datetime, datetime]]:
        """(incident id, route, posted at, last snoozed at or posted at) of each firing incident
        with a message that nobody acknowledged, closed or escalated yet (nor failed to escalate
        for good), oldest first."""
        sql = """
            SELECT m.incident_id, i.detail, m.posted_at,
                   COALESCE((SELECT MAX(at) FROM clicks c WHERE c.incident_id = m.incident_id
                             AND c.action = 'snooze_1h'), m.posted_at)
            FROM messages m JOIN incidents i ON i.id = m.incident_id
            WHERE m.notifier = ? AND i.status = 'firing' AND NOT EXISTS (
                SELECT 1 FROM clicks c WHERE c.incident_id = m.incident_id
                AND c.action IN ('acknowledge', 'escalated', 'escalation_failed', 'resolve',
                                 'false_alarm'))
            ORDER BY m.posted_at
        """
        rows = await self._run(lambda db: db.execute(sql, (notifier,)).fetchall())
        return [
            (
                row[0],
                str(orjson.loads(row[1])["route"]),
                datetime.fromisoformat(row[2]),
                datetime.fromisoformat(row[3]),
            )
            for row in rows
        ]

    async def rule_feedback(self) -> dict[str, tuple[int, int]]:
        """Per rule: (incidents it took part in, of those marked a false alarm)."""

        def read(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            false = {
                row[0]
                for row in db.execute("SELECT incident_id FROM clicks WHERE action = 'false_alarm'")
            }
            counts: dict[str, list[int]] = {}
            for incident_id, detail in db.execute("SELECT id, detail FROM incidents"):
                for rule in orjson.loads(detail)["rules"]:
                    entry = counts.setdefault(rule, [0, 0])
                    entry[0] += 1
                    entry[1] += incident_id in false
            return {rule: (n, f) for rule, (n, f) in counts.items()}

        return await self._run(read)

    async def prune(self, before: datetime) -> dict[str, int]:
        """Delete what nothing needs any more, done with before `before` (the wall clock's
        times): pages sent or given up and their notification log, except those of an incident
        still firing or with a page still to send; a resolved incident once none of its pages
        is left, with its clicks, sample posts and Slack message; clicks about no recorded
        incident; feedback already learned; and silences that ended (every page reads them
        all). Rows deleted, per table."""
        cutoff = before.isoformat()

        def write(db: sqlite3.Connection) -> dict[str, int]:
            counts = {table: db.execute(sql, (cutoff,)).rowcount for table, sql in _PRUNE.items()}
            gone = [(row[0],) for row in db.execute(_GONE, (cutoff,)).fetchall()]
            for table, sql in _PRUNE_INCIDENT.items():
                counts[table] = counts.get(table, 0) + db.executemany(sql, gone).rowcount
            return counts

        return await self._run(write)

    # --- live sources' cursors (sources/cursors.py) ---

    async def cursors(self, source: str) -> dict[str, str]:
        """Where each stream of a live source stopped (stream → cursor)."""
        sql = "SELECT stream, value FROM cursors WHERE source = ?"
        rows = await self._run(lambda db: db.execute(sql, (source,)).fetchall())
        return {row[0]: row[1] for row in rows}

    async def save_cursors(self, source: str, values: Mapping[str, str]) -> None:
        """Move some of a source's cursors, in one transaction."""
        now = datetime.now(UTC).isoformat()
        rows = [(source, stream, value, now) for stream, value in values.items()]
        sql = "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?, ?)"
        if rows:
            await self._run(lambda db: db.executemany(sql, rows))

    # --- the daily digest (notify/digest.py) ---

    async def opened_between(
        self, start: datetime, end: datetime
    ) -> list[dict[str, str | int | None]]:
        """Incidents that started in [start, end), oldest first, as plain rows with the time of
        their opening page, their first acknowledgement, their page count and whether someone
        marked them a false alarm."""
        sql = """
            SELECT i.id, i.brand, i.severity, i.stage, i.started_at, i.summary, i.detail,
                (SELECT MIN(n.at) FROM notifications n
                 WHERE n.incident_id = i.id AND n.kind = 'opened') AS opened_at,
                (SELECT MIN(c.at) FROM clicks c
                 WHERE c.incident_id = i.id AND c.action = 'acknowledge') AS acknowledged_at,
                (SELECT COUNT(DISTINCT n.page_key) FROM notifications n
                 WHERE n.incident_id = i.id) AS pages,
                EXISTS (SELECT 1 FROM clicks c
                        WHERE c.incident_id = i.id AND c.action = 'false_alarm') AS false_alarm
            FROM incidents i WHERE i.started_at >= ? AND i.started_at < ?
            ORDER BY i.started_at, i.id
        """
        bounds = (start.isoformat(), end.isoformat())

        def read(db: sqlite3.Connection) -> list[dict[str, str | int | None]]:
            cursor = db.execute(sql, bounds)
            return _dict_rows(cursor)

        return await self._run(read)


STORE_FILE = "crisiswatch.sqlite3"  # the store's file in the state directory


async def with_store(path: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store at `path`, do `work` with it, close it (for one-shot commands)."""
    store = await Store.open(path)
    try:
        return await work(store)
    finally:
        await store.close()


_WAS_SENT = "SELECT 1 FROM notifications WHERE page_key = ? AND notifier = ?"
_UNMARK = "DELETE FROM posting WHERE incident_id = ? AND notifier = ?"  # see mark_posting
_UNMARK_RECORDED = """
    DELETE FROM posting WHERE EXISTS (
        SELECT 1 FROM notifications n
        WHERE n.page_key = posting.incident_id AND n.notifier = posting.notifier
    ) OR EXISTS (
        SELECT 1 FROM messages m
        WHERE m.incident_id = posting.incident_id AND m.notifier = posting.notifier
    )
"""  # marks of posts already recorded, which versions before their pruning kept
_LOG_SENT = "INSERT OR REPLACE INTO notifications VALUES (?, ?, ?, ?, ?, ?)"

_NEEDED = """
    SELECT id FROM incidents WHERE status != 'resolved'
    UNION SELECT incident_id FROM outbox WHERE status = 'pending'
"""  # incidents still firing (escalation, silences, dedupe) or with a page to send


def _done_before(table: str, column: str) -> str:
    """Delete a table's rows done with before the cutoff (a pending page has no `done_at`),
    but none of an incident still needed."""
    return f"DELETE FROM {table} WHERE {column} < ? AND incident_id NOT IN ({_NEEDED})"


_PRUNE = {
    "outbox": _done_before("outbox", "done_at"),
    "notifications": _done_before("notifications", "sent_at"),
    "clicks": _done_before("clicks", "at") + " AND incident_id NOT IN (SELECT id FROM incidents)",
    "feedback": "DELETE FROM feedback WHERE applied = 1 AND at < ?",
    "silences": "DELETE FROM silences WHERE ends_at < ?",
}  # (clicks of a recorded incident go with it, so its precision in the digest stays true)
_GONE = """
    SELECT id FROM incidents i WHERE status = 'resolved' AND resolved_at < ?
    AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.incident_id = i.id)
    AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.incident_id = i.id)
"""  # resolved incidents whose pages were all done with before the cutoff
_PRUNE_INCIDENT = {
    "incidents": "DELETE FROM incidents WHERE id = ?",
    "clicks": "DELETE FROM clicks WHERE incident_id = ?",
    "samples": "DELETE FROM samples WHERE incident_id = ?",
    "messages": "DELETE FROM messages WHERE incident_id = ?",
    "posting": "DELETE FROM posting WHERE incident_id = ?1"
    " OR substr(incident_id, 1, length(?1) + 1) = ?1 || '|'",
}  # what goes with a gone incident (posting marks: by its id, or its pages' keys)


def _sent_row(page: Page, notifier: str, now: str) -> tuple[str, str, str, str, str, str]:
    """A `notifications` row: this page went out through this notifier at `now`."""
    return (page_key(page), page.incident.id, page.kind.value, page.at.isoformat(), now, notifier)


def _fetch(sql: str, parameters: tuple[object, ...], db: sqlite3.Connection) -> list[Any]:
    """Every row a query finds."""
    return db.execute(sql, parameters).fetchall()


def _dict_rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """A query's rows as plain dicts keyed by column name."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _connect(path: Path) -> sqlite3.Connection:
    try:
        make_state_dir(path.parent)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the state store {path}: {exc}") from exc
    try:
        _prepare(db, path)
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.Error | OSError):
            raise StoreError(f"cannot open the state store {path}: {exc}") from exc
        raise
    return db


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA journal_size_limit={WAL_KEPT}")  # else a WAL keeps its largest size
    db.executescript(_SCHEMA)
    found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if found is None:
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif int(found[0]) == 1:  # the previous version's: its messages gain a route (unknown)
        if "route" not in {column[1] for column in db.execute("PRAGMA table_info(messages)")}:
            db.execute("ALTER TABLE messages ADD COLUMN route TEXT")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
    elif int(found[0]) != SCHEMA_VERSION:  # a later version's: refused, never half-read
        raise StoreError(f"{path} has state schema {found[0]}, this version reads {SCHEMA_VERSION}")
    db.execute(_UNMARK_RECORDED)


async def to_the_end(work: Callable[[], T]) -> T:
    """Run `work` in a worker thread. When the caller is cancelled meanwhile (however often),
    the thread is let finish first, then the cancellation goes through: a thread cannot be
    stopped, and what it works on must keep still until it is done (a second thread on the
    store's connection at once is SQLite's "bad parameter or other API misuse"; a checkpoint at
    stop would write the same temporary file)."""
    running = asyncio.ensure_future(asyncio.to_thread(work))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(running)
        except asyncio.CancelledError:
            if running.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


def _transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
            if isinstance(result, sqlite3.Cursor):
                # Closed here, under the store's lock: a cursor handed back open is finalized
                # wherever it is dropped, on the event loop's thread while another thread works
                # the connection, which corrupts sqlite3's statement cache ("bad parameter or
                # other API misuse" now and then; CPython issue 118172).
                result.close()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    except sqlite3.Error as exc:  # a full disk, a locked or corrupt file
        raise StoreError(f"state store write failed: {exc}") from exc
    return result
